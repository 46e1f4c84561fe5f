"""A small HTTP client for the robustlab API, shared by the CLI commands.

::

    client = RobustlabClient("http://127.0.0.1:8000")
    job = client.submit(spec_dict)
    job = client.wait(job["id"], on_update=print)
    metrics = client.results(job["id"])["metrics"]

Errors are :class:`ApiError` with a readable message (422 validation errors become one line per field).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


class ApiError(Exception):
    """The server answered with an error (``status_code``), or could not be reached (``status_code`` None)."""

    def __init__(self, message: str, status_code: int | None = None, detail: Any = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.detail = detail


def format_location(loc: Iterable[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    out = ""
    for part in parts:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out or "(spec)"


def format_validation_errors(errors: Iterable[Mapping[str, Any]]) -> str:
    """FastAPI / pydantic error dicts → ``"  model.theta: Input should be less than or equal to 1 (got 2)"``."""
    lines = []
    for error in errors:
        where = format_location(error.get("loc", ()))
        message = str(error.get("msg", "invalid"))
        got = error.get("input")
        shown = "" if error.get("type") == "missing" or isinstance(got, (dict, list)) else f" (got {got!r})"
        lines.append(f"  {where}: {message}{shown}")
    return "\n".join(lines)


def _error_from_response(response: httpx.Response) -> ApiError:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = response.text
    if response.status_code == 422 and isinstance(detail, list):
        message = "invalid job spec:\n" + format_validation_errors(detail)
    else:
        message = f"HTTP {response.status_code}: {detail}"
    return ApiError(message, response.status_code, detail)


class RobustlabClient:
    """``api_key``: sent as ``Authorization: Bearer …`` (default: ``ROBUSTLAB_API_KEY``); needed when the server
    runs with ``ROBUSTLAB_AUTH=keys``."""

    def __init__(self, base_url: str, timeout: float = 30.0, api_key: str | None = None) -> None:
        if api_key is None:
            from core.config import get_settings

            api_key = get_settings().api_key
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, headers=headers)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RobustlabClient:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiError(f"cannot reach the robustlab server at {self.base_url}: {exc}") from exc
        if response.status_code >= 400:
            raise _error_from_response(response)
        return response.json()

    # ------------------------------------------------------------------------------------------------ endpoints
    def health(self) -> dict:
        return self._request("GET", "/healthz")

    def submit(self, spec: Mapping[str, Any]) -> dict:
        return self._request("POST", "/api/v1/jobs", json=dict(spec))

    def job(self, job_id: str) -> dict:
        return self._request("GET", f"/api/v1/jobs/{job_id}")

    def jobs(self, status: str | None = None, limit: int = 50, offset: int = 0, **filters: Any) -> dict:
        """A page of jobs; ``filters``: ``dataset``, ``family``, ``stale=True`` (``None`` values are left out)."""
        params = {"limit": limit, "offset": offset} | ({"status": status} if status else {})
        params |= {k: ("true" if v is True else v) for k, v in filters.items() if v is not None}
        return self._request("GET", "/api/v1/jobs", params=params)

    def results(self, job_id: str) -> dict:
        return self._request("GET", f"/api/v1/jobs/{job_id}/results")

    def reevaluate(self, job_id: str, force: bool = False) -> tuple[dict, bool]:
        """Queue a re-evaluation of ``job_id`` (its kept weights, the current evaluation); returns the new job, and
        whether the server answered with an existing one (a re-evaluation under the current protocol)."""
        try:
            response = self._http.post(f"/api/v1/jobs/{job_id}/reevaluate", params={"force": "true"} if force else {})
        except httpx.TransportError as exc:
            raise ApiError(f"cannot reach the robustlab server at {self.base_url}: {exc}") from exc
        if response.status_code >= 400:
            raise _error_from_response(response)
        return response.json(), response.headers.get("X-Robustlab-Reused") is not None

    def upload_checkpoint(self, weights: Path, spec: Mapping[str, Any]) -> dict:
        """``POST /api/v1/artifacts/checkpoints``: a ``.safetensors`` file and the job spec whose model it holds;
        returns the artifact (``{"id", "ref": "artifact:<id>", …}``)."""
        with Path(weights).open("rb") as f:
            return self._request(
                "POST",
                "/api/v1/artifacts/checkpoints",
                files={"file": (Path(weights).name, f, "application/octet-stream")},
                data={"spec": json.dumps(dict(spec))},
            )

    def leaderboard(self, **params: Any) -> dict:
        return self._request("GET", "/api/v1/leaderboard", params={k: v for k, v in params.items() if v is not None})

    def leaderboard_export(self, format: str, **params: Any) -> tuple[str, str | None]:
        """The leaderboard page as ``format=csv`` or ``format=robustbench`` text, and the next page's cursor (the
        ``X-Next-Cursor`` header; ``None`` on the last page)."""
        query = {k: v for k, v in params.items() if v is not None} | {"format": format}
        try:
            response = self._http.get("/api/v1/leaderboard", params=query)
        except httpx.TransportError as exc:
            raise ApiError(f"cannot reach the robustlab server at {self.base_url}: {exc}") from exc
        if response.status_code >= 400:
            raise _error_from_response(response)
        return response.text, response.headers.get("X-Next-Cursor")

    def wait(
        self,
        job_id: str,
        on_update: Callable[[dict], None] | None = None,
        poll_interval: float = 0.5,
        timeout: float | None = None,
    ) -> dict:
        """Poll the job until it is succeeded, failed or cancelled; returns the final job JSON."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if on_update is not None:
                on_update(job)
            if job["status"] in TERMINAL:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout} s")
            time.sleep(poll_interval)
