"""``GET|POST /login``, ``POST /logout``: keep an API key in an HttpOnly cookie (for ``ROBUSTLAB_PUBLIC_READ=false``).

Plain routes, not :class:`~api.routes.web.base.PageRoute`: they render their own answers (the form again, with a
401, for a key that is not valid)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api.deps import SessionDep
from api.routes.web.base import COOKIE, render, safe_next
from api.security import authenticate

COOKIE_MAX_AGE = 30 * 24 * 3600

router = APIRouter()


@router.get("/login", response_class=HTMLResponse, name="web_login")
def login_form(request: Request, next: str = "/") -> Response:
    return render(request, "login.html", {"next": safe_next(next), "message": None})


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request, session: SessionDep, key: Annotated[str, Form()] = "", next: Annotated[str, Form()] = "/"
) -> Response:
    """Check the key and keep it in an HttpOnly cookie, then go back to ``next``."""
    target = safe_next(next)
    key = key.strip()
    if not key or "\x00" in key or authenticate(session, key) is None:
        context = {"next": target, "message": "That key is not valid (or was revoked)."}
        return render(request, "login.html", context, status_code=401)
    response = RedirectResponse(request.scope.get("root_path", "") + target, status_code=303)
    response.set_cookie(
        COOKIE,
        key,
        max_age=COOKIE_MAX_AGE,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    response = RedirectResponse(request.scope.get("root_path", "") + "/", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response
