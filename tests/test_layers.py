"""Imports run one way, lowest layer first (README "Layout"): a test walks every module's imports with ``ast`` —
top-level and function-local alike — and fails on an arrow from a lower package to a higher one."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OURS = {"core", "models", "evaluation", "db", "worker", "api", "cli"}
#: what each package may import of ours (besides itself); cli may import anything
ALLOWED = {
    "core": set(),
    "models": {"core"},
    "evaluation": {"models", "core"},
    "db": {"core"},
    "worker": {"evaluation", "models", "db", "core"},
    "api": {"db", "worker", "core"},
}


def imported_packages(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def upward_imports() -> list[str]:
    bad = []
    for package, allowed in ALLOWED.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            for line, module in imported_packages(path):
                top = module.split(".")[0]
                if top in OURS and top != package and top not in allowed:
                    bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return bad


def test_no_package_imports_a_higher_one() -> None:
    assert upward_imports() == []


def test_the_walk_sees_function_local_imports(tmp_path, monkeypatch) -> None:
    """The check itself can fail: a lazy import inside a function is an arrow too."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.py").write_text("def f():\n    from evaluation.spec import JobSpec\n    return JobSpec\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    assert upward_imports() == ["models/m.py:2 imports evaluation.spec"]
