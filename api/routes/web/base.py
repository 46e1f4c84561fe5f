"""What every web page shares: its route class (blank form fields, HTML errors), the read policy with the key
cookie, and rendering a Jinja2 template.

A page declares its query parameters as any FastAPI route does (``Query(ge=…, le=…)``, ``Literal[…]``, pydantic
validators) and raises FastAPI's own exceptions; :class:`PageRoute` turns them into HTML::

    router = APIRouter(route_class=PageRoute, dependencies=PAGE_DEPENDENCIES)

    @router.get("/things", response_class=HTMLResponse)
    def things(request: Request, _reader: WebReader, limit: int = Query(25, ge=1, le=200)) -> Response:
        ...   # ?limit=0 → a 422 page saying "limit: Input should be greater than or equal to 1"
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException

from api.deps import SettingsDep
from api.errors import reject_unstorable_input
from api.security import Credentials, Principal, require
from core import metrics

API_DIR = Path(__file__).resolve().parents[2]
TEMPLATES = Jinja2Templates(directory=API_DIR / "templates")
STATIC_DIR = API_DIR / "static"
COOKIE = "robustlab_key"
TITLES = {401: "Key needed", 403: "Not allowed", 404: "Not found", 422: "Bad request", 429: "Too many requests"}
#: a NUL character or a lone surrogate in a page's path or query parameters is a 422 (as on the JSON API)
PAGE_DEPENDENCIES = [Depends(reject_unstorable_input)]


# ---------------------------------------------------------------------------------------------------- errors
def validation_message(exc: RequestValidationError) -> str:
    """``"limit: Input should be greater than or equal to 1; order: one of 'asc' or 'desc'"``: each error with the
    parameter it is about; a validator's own message without pydantic's ``Value error,`` prefix."""
    parts = []
    for error in exc.errors():
        context = error.get("ctx") or {}
        if error.get("type") == "literal_error" and "expected" in context:
            message = f"one of {context['expected']}"
        else:
            message = str(context.get("error") or error["msg"])
        parts.append(f"{error['loc'][-1]}: {message}" if error.get("loc") else message)
    return "; ".join(parts)


def error_page(request: Request, status_code: int, message: str, headers: dict[str, str] | None = None) -> Response:
    context = {"status_code": status_code, "title": TITLES.get(status_code, "Error"), "message": message}
    context |= {"next": safe_next(request.url.path + (f"?{request.url.query}" if request.url.query else ""))}
    return render(request, "error.html", context, status_code=status_code, headers=headers)


class PageRoute(APIRoute):
    """The route of a web page: a blank query value counts as absent (a GET form sends ``dataset=`` for "any"),
    and errors are HTML pages, not JSON: a :class:`~fastapi.exceptions.RequestValidationError` (the page's query
    declarations, or a check in its body) is a 422 naming the parameter, an :class:`~fastapi.HTTPException` (e.g.
    the read policy's 401, a 404) a page with its status, message and headers."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def page(request: Request) -> Response:
            given = [(k, v.strip()) for k, v in request.query_params.multi_items() if v.strip()]
            request = Request({**request.scope, "query_string": urlencode(given).encode()}, request.receive)
            try:
                return await handler(request)
            except RequestValidationError as exc:
                return error_page(request, 422, validation_message(exc))
            except HTTPException as exc:
                return error_page(request, exc.status_code, str(exc.detail), dict(exc.headers or {}))

        return page


# ---------------------------------------------------------------------------------------------------- access
_read_access = require("read")


async def web_reader(request: Request, settings: SettingsDep, credentials: Credentials) -> Principal:
    """The JSON API's read policy; the key may also come from the ``robustlab_key`` cookie."""
    if credentials is None and (token := request.cookies.get(COOKIE)):
        credentials = HTTPAuthorizationCredentials(scheme="Bearer", credentials=token)
    return await _read_access(request, settings, credentials)


WebReader = Annotated[Principal, Depends(web_reader)]


def safe_next(target: str | None) -> str:
    """A local path to return to after /login (never another site: no scheme, no ``//host``)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


# ---------------------------------------------------------------------------------------------------- rendering
def render(request: Request, name: str, context: dict[str, Any], status_code: int = 200, headers=None) -> Response:
    settings = request.app.state.settings
    base = {
        "root": request.scope.get("root_path", ""),
        "auth": settings.auth,
        "logged_in": bool(request.cookies.get(COOKIE)),
        "fmt": metrics.format_value,
        "label": metrics.label,
    }
    return TEMPLATES.TemplateResponse(request, name, base | context, status_code=status_code, headers=headers)


def link(request: Request, path: str, **params: Any) -> str:
    """A root-relative link (works behind a proxy that does not forward its host): ``/?metric=…&order=…``."""
    query = urlencode({k: v for k, v in params.items() if v is not None and v != ""})
    return request.scope.get("root_path", "") + path + (f"?{query}" if query else "")


__all__ = ["COOKIE", "PAGE_DEPENDENCIES", "PageRoute", "WebReader", "error_page", "link", "render", "safe_next"]
