"""The evaluation protocol version: which revision of each evaluation produced a job's numbers.

Every evaluation module declares, at its top level, the revision of its protocol::

    PROTOCOL_REVISION = 1   # bump when a change alters this evaluation's numbers on purpose

and :data:`EVALUATIONS` lists the modules. **Adding an evaluation is one line here** (its name and module) plus
that constant in the module; a test fails for a listed module without one. :func:`protocol_version` joins the
revisions, sorted by name, into the string stored with every job (``jobs.protocol_version``)::

    autoattack.3+best_known.1+certified.1+gaussian.2+pgd.2+plug_and_play.1+regression.2+smoothing.1

A job evaluated under another string than :func:`current_protocol`'s is *stale*: the leaderboard marks it, and
``robustlab reevaluate --stale`` runs the current evaluation on its stored weights.

The constants are read from the modules' source (:mod:`ast`), not by importing them: the API, which never imports
torch, needs the current protocol to de-duplicate submissions and to mark stale entries. A test checks the parsed
values against the imported modules.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from collections.abc import Mapping
from pathlib import Path

REVISION_NAME = "PROTOCOL_REVISION"

#: evaluation name → the module that declares its PROTOCOL_REVISION (one line per evaluation)
EVALUATIONS: dict[str, str] = {
    "gaussian": "evaluation.gaussian",
    "pgd": "evaluation.pgd",
    "autoattack": "evaluation.autoattack",
    "best_known": "evaluation.best_known",
    "certified": "evaluation.certified",
    "smoothing": "evaluation.smoothing",
    "regression": "evaluation.regression",
    "plug_and_play": "evaluation.pnp",
}


class ProtocolDeclarationMissing(RuntimeError):
    """A module listed in :data:`EVALUATIONS` has no top-level ``PROTOCOL_REVISION = <int>``."""


def declared_revision(module: str) -> int:
    """The integer ``PROTOCOL_REVISION`` assigned at the top level of ``module``'s source (not imported).

    Raises:
        ProtocolDeclarationMissing: no such module file, or no (integer) declaration in it.
    """
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        raise ProtocolDeclarationMissing(f"evaluation module {module!r} not found (as a .py file)")
    tree = ast.parse(Path(spec.origin).read_text(), filename=spec.origin)
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None
        if isinstance(node, ast.AnnAssign):
            target = node.target
        if isinstance(target, ast.Name) and target.id == REVISION_NAME:
            value = node.value
            if isinstance(value, ast.Constant) and type(value.value) is int and value.value >= 1:
                return value.value
            raise ProtocolDeclarationMissing(f"{module}.{REVISION_NAME} must be a literal integer ≥ 1")
    raise ProtocolDeclarationMissing(f"{module} declares no {REVISION_NAME} (see core/protocol.py)")


def protocol_version(revisions: Mapping[str, int]) -> str:
    """``{"pgd": 2, "gaussian": 1}`` → ``"gaussian.1+pgd.2"`` (sorted by name)."""
    return "+".join(f"{name}.{revisions[name]}" for name in sorted(revisions))


def parse_protocol_version(version: str) -> dict[str, int]:
    """The inverse of :func:`protocol_version` (``{}`` for an empty or malformed string)."""
    revisions: dict[str, int] = {}
    for part in version.split("+") if version else []:
        name, _, number = part.rpartition(".")
        if not name or not number.isdigit():
            return {}
        revisions[name] = int(number)
    return revisions


@functools.cache
def current_revisions() -> dict[str, int]:
    """The declared revision of every evaluation of :data:`EVALUATIONS`, read once per process."""
    return {name: declared_revision(module) for name, module in EVALUATIONS.items()}


def current_protocol() -> str:
    """The protocol version of the code this process runs."""
    return protocol_version(current_revisions())


def changed_evaluations(old: str | None) -> list[str]:
    """The evaluations whose revision differs between ``old`` (a stored protocol version; ``None``: recorded before
    protocol versions existed) and the current protocol."""
    current, before = current_revisions(), parse_protocol_version(old or "")
    return sorted(name for name in current.keys() | before.keys() if current.get(name) != before.get(name))


__all__ = [
    "EVALUATIONS",
    "ProtocolDeclarationMissing",
    "changed_evaluations",
    "current_protocol",
    "current_revisions",
    "declared_revision",
    "parse_protocol_version",
    "protocol_version",
]
