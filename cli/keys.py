"""``robustlab keys …``: API keys for ``ROBUSTLAB_AUTH=keys`` — create (printed once), list, revoke."""

from __future__ import annotations

from typing import Annotated, NoReturn

import typer
from rich.table import Table

from cli.common import console, err_console, fail
from core.config import get_settings

keys_app = typer.Typer(
    help="API keys for ROBUSTLAB_AUTH=keys: create (printed once), list, revoke.", no_args_is_help=True
)


def _keys_session():
    from db.session import session_scope

    return session_scope(get_settings().database_url)


def _keys_error(exc: Exception) -> NoReturn:
    from sqlalchemy.exc import ProgrammingError

    hint = (
        " (run `robustlab db upgrade` first)"
        if isinstance(exc, ProgrammingError) or "no such table" in str(exc)
        else ""
    )
    raise fail(f"{type(exc).__name__}: {exc}{hint}")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="a unique name for the key (who or what uses it)")],
    scope: Annotated[str, typer.Option(help="read | write (submit, cancel, retry, upload) | admin")] = "write",
) -> None:
    """Create an API key and print it (to stdout, alone on its line): it is shown only this once, and only its
    hash is stored."""
    from api.security import create_api_key

    try:
        with _keys_session() as session:
            key, token = create_api_key(session, name, scope)
    except ValueError as exc:
        raise fail(str(exc)) from None
    except Exception as exc:
        _keys_error(exc)
    err_console.print(
        f"created API key {key.name!r} with scope {key.scope!r}. Store it now: it is not shown again. "
        f"Clients send it as 'Authorization: Bearer <key>' (the CLI reads ROBUSTLAB_API_KEY).",
        highlight=False,
    )
    print(token)


def _when(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "-"


@keys_app.command("list")
def keys_list() -> None:
    """List the API keys (names, scopes, dates; never the keys)."""
    from api.security import KEY_PREFIX, list_api_keys

    try:
        with _keys_session() as session:
            keys = list_api_keys(session)
    except Exception as exc:
        _keys_error(exc)
    if not keys:
        console.print("no API keys (create one with `robustlab keys create --name NAME`)")
        return
    table = Table(title="API keys")
    for column in ("name", "scope", "key", "created", "last used", "status"):
        table.add_column(column)
    for key in keys:
        status = f"revoked {_when(key.revoked_at)}" if key.revoked_at else "active"
        prefix = f"{KEY_PREFIX}{key.prefix}_…"
        table.add_row(key.name, key.scope, prefix, _when(key.created_at), _when(key.last_used_at), status)
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(name: Annotated[str, typer.Argument(help="the key's name")]) -> None:
    """Revoke an API key: requests with it are refused (401) from now on."""
    from api.security import revoke_api_key

    try:
        with _keys_session() as session:
            key = revoke_api_key(session, name)
    except Exception as exc:
        _keys_error(exc)
    if key is None:
        raise fail(f"no API key named {name!r}")
    console.print(f"revoked API key {name!r}", highlight=False)
