"""The evaluation protocol version: every evaluation declares its revision, and the registry reads them right."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from core import protocol
from core.protocol import (
    EVALUATIONS,
    ProtocolDeclarationMissing,
    changed_evaluations,
    current_protocol,
    declared_revision,
    parse_protocol_version,
    protocol_version,
)

RUNNER = Path(__file__).resolve().parents[2] / "evaluation" / "runner.py"
#: modules the runner imports that are not evaluations (their changes show in the code identity)
NOT_EVALUATIONS = {"evaluation.datasets", "evaluation.training", "evaluation.plots", "evaluation.outcomes",
                   "evaluation.sweep", "evaluation.registry", "evaluation.checkpoints",
                   "evaluation.device"}  # fmt: skip


@pytest.mark.parametrize("name", sorted(EVALUATIONS))
def test_each_evaluation_declares_its_revision_and_the_registry_reads_it(name: str) -> None:
    module = importlib.import_module(EVALUATIONS[name])
    assert isinstance(module.PROTOCOL_REVISION, int) and module.PROTOCOL_REVISION >= 1
    assert declared_revision(EVALUATIONS[name]) == module.PROTOCOL_REVISION  # read without importing


def test_every_evaluation_module_the_runner_uses_is_registered() -> None:
    """A new evaluation module used by the runner without its line in EVALUATIONS fails here."""
    tree = ast.parse(RUNNER.read_text())
    used = {node.module for node in tree.body if isinstance(node, ast.ImportFrom) and node.module}
    evaluations = {m for m in used if m.startswith("evaluation.")} - NOT_EVALUATIONS
    assert evaluations <= set(EVALUATIONS.values()), evaluations - set(EVALUATIONS.values())


def test_every_module_that_registers_an_evaluation_declares_a_revision() -> None:
    from evaluation.registry import registered

    modules = {e.run.__module__ for task in ("classification", "regression", "denoising") for e in registered(task)}
    assert modules and modules <= set(EVALUATIONS.values()), modules - set(EVALUATIONS.values())


def test_the_version_joins_the_revisions_sorted_by_name() -> None:
    assert protocol_version({"pgd": 2, "gaussian": 1}) == "gaussian.1+pgd.2"
    assert parse_protocol_version("gaussian.1+plug_and_play.3") == {"gaussian": 1, "plug_and_play": 3}
    assert parse_protocol_version("") == {} and parse_protocol_version("nonsense") == {}
    revisions = {name: declared_revision(module) for name, module in EVALUATIONS.items()}
    assert current_protocol() == protocol_version(revisions) and parse_protocol_version(current_protocol()) == revisions


def test_changed_evaluations_names_what_differs() -> None:
    current = parse_protocol_version(current_protocol())
    older = protocol_version({**current, "pgd": current["pgd"] + 1})
    assert changed_evaluations(current_protocol()) == []
    assert changed_evaluations(older) == ["pgd"]
    assert changed_evaluations(None) == sorted(current)  # recorded before protocol versions existed


def test_a_module_without_a_declaration_is_an_error(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "undeclared_eval.py").write_text("REVISION = 1\n")
    (tmp_path / "computed_eval.py").write_text("PROTOCOL_REVISION = 1 + 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ProtocolDeclarationMissing, match="declares no PROTOCOL_REVISION"):
        declared_revision("undeclared_eval")
    with pytest.raises(ProtocolDeclarationMissing, match="literal integer"):
        declared_revision("computed_eval")
    with pytest.raises(ProtocolDeclarationMissing, match="not found"):
        declared_revision("no_such_evaluation_module")


def test_a_bumped_revision_changes_the_current_protocol(bump_revision) -> None:
    before = current_protocol()
    bumped = bump_revision("gaussian")
    assert current_protocol() != before and parse_protocol_version(current_protocol())["gaussian"] == bumped
    assert changed_evaluations(before) == ["gaussian"]
    assert protocol.current_revisions()["pgd"] == parse_protocol_version(before)["pgd"]
