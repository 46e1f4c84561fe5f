"""Request body limits: ``413`` before a large body is read.

An ASGI middleware in front of the app. A request whose ``Content-Length`` is over the limit is answered ``413`` at
once; otherwise the bytes are counted as they arrive (a chunked upload has no ``Content-Length``), and the request
that passes the limit is ``413`` too, having read no more than the limit. The limit is
``settings.max_upload_bytes`` (plus room for the multipart framing and form fields) on the artifact uploads and
``settings.max_spec_bytes`` on every other body (a job spec).
"""

from __future__ import annotations

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.config import Settings

UPLOAD_PATHS = ("/artifacts/checkpoints", "/artifacts/datasets")
MULTIPART_ALLOWANCE = 1024 * 1024  # framing, the model / spec / dataset form fields


def too_large(limit: int) -> HTTPException:
    detail = f"request body over the limit of {limit} bytes"
    return HTTPException(413, detail=detail)


class BodySizeLimit:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app, self.settings = app, settings

    def limit_for(self, path: str) -> int:
        if path.rstrip("/").endswith(UPLOAD_PATHS):
            return self.settings.max_upload_bytes + MULTIPART_ALLOWANCE
        return self.settings.max_spec_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0 or declared > limit:
                    detail = too_large(limit).detail if declared > limit else "invalid Content-Length"
                    code = 413 if declared > limit else 400
                    response = JSONResponse({"detail": detail}, status_code=code, headers={"Connection": "close"})
                    await response(scope, receive, send)
                    return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise too_large(limit)  # FastAPI re-raises HTTPExceptions from body parsing: a 413 response
            return message

        await self.app(scope, counting_receive, send)
