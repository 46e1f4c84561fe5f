"""The ``robustlab`` command as a user runs it (subprocesses): ``run`` in-process, ``submit`` and ``leaderboard``
against the live PostgreSQL + Redis stack, and exit codes 0 / 1 / 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from service_helpers import REPO, Stack, diverging_spec, service_env, tiny_spec


def robustlab(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "cli.main", *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def write(path: Path, spec) -> Path:
    path.write_text(spec if isinstance(spec, str) else json.dumps(spec))
    return path


@pytest.fixture
def local_env(tmp_path: Path) -> dict[str, str]:
    return service_env(f"sqlite:///{tmp_path / 'unused.db'}", "memory://", tmp_path / "artifacts")


# ---------------------------------------------------------------------------------------------------- run
def test_run_writes_result_weights_and_spec(tmp_path: Path, local_env) -> None:
    spec = tiny_spec("cli-run")
    out = tmp_path / "out"
    proc = robustlab("run", str(write(tmp_path / "spec.json", spec)), "--out", str(out), env=local_env)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert {"result.json", "model.safetensors", "spec.json"} <= {p.name for p in out.iterdir()}
    result = json.loads((out / "result.json").read_text())
    assert result["name"] == "cli-run" and 0 <= result["metrics"]["clean_acc"] <= 1
    assert "clean_acc" in proc.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({**tiny_spec(), "bogus": 1}, "bogus: Extra inputs are not permitted"),
        (tiny_spec(model={"family": "implicit", "theta": 1.5}), "model.theta: Input should be less than or equal"),
        (tiny_spec(evaluate={"pgd": {"eps": [-0.1]}}), "evaluate.pgd.eps[0]: Input should be greater than 0"),
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "must hold a JSON object"),
    ],
    ids=["unknown-field", "theta", "negative-eps", "not-json", "not-an-object"],
)
def test_run_rejects_a_bad_spec_with_exit_2(tmp_path: Path, local_env, content, message: str) -> None:
    proc = robustlab("run", str(write(tmp_path / "bad.json", content)), "--out", str(tmp_path / "o"), env=local_env)
    assert proc.returncode == 2, proc.stderr + proc.stdout
    assert message in " ".join(proc.stderr.split()), proc.stderr
    assert not (tmp_path / "o").exists()


def test_missing_spec_file_is_exit_2(tmp_path: Path, local_env) -> None:
    for command in ("run", "submit"):
        proc = robustlab(command, str(tmp_path / "nope.json"), env=local_env)
        assert proc.returncode == 2 and "spec file not found" in proc.stderr


def test_unreachable_server_is_exit_2(tmp_path: Path, local_env) -> None:
    from service_helpers import free_port

    spec = write(tmp_path / "spec.json", tiny_spec())
    proc = robustlab("submit", str(spec), "--server", f"http://127.0.0.1:{free_port()}", env=local_env)
    assert proc.returncode == 2 and "cannot reach the robustlab server" in proc.stderr


# ---------------------------------------------------------------------------------------------------- live server
@pytest.mark.services
@pytest.mark.e2e
def test_submit_waits_and_prints_metrics(pg_stack: Stack, tmp_path: Path) -> None:
    spec = write(tmp_path / "spec.json", tiny_spec("cli-submit"))
    proc = robustlab("submit", str(spec), env=pg_stack.env)  # server from ROBUSTLAB_SERVER_URL
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "submitted job" in proc.stdout and "clean_acc" in proc.stdout and "pgd_linf_acc@0.05" in proc.stdout

    board = robustlab("leaderboard", "--dataset", "spirals", "--limit", "50", "--server", pg_stack.base_url)
    assert board.returncode == 0, board.stderr and "cli-submit" in board.stdout


@pytest.mark.services
@pytest.mark.e2e
def test_submit_of_a_failing_job_is_exit_1(pg_stack: Stack, tmp_path: Path) -> None:
    spec = write(tmp_path / "spec.json", diverging_spec("cli-diverge"))
    proc = robustlab("submit", str(spec), "--server", pg_stack.base_url, env=pg_stack.env)
    assert proc.returncode == 1, proc.stderr + proc.stdout
    assert "failed" in proc.stderr and "TrainingDiverged" in proc.stderr


@pytest.mark.services
@pytest.mark.e2e
def test_submit_of_an_invalid_spec_prints_the_422_readably(pg_stack: Stack, tmp_path: Path) -> None:
    spec = write(tmp_path / "spec.json", tiny_spec(train={"lr": 1e6}))
    proc = robustlab("submit", str(spec), "--server", pg_stack.base_url, env=pg_stack.env)
    assert proc.returncode == 2
    assert "invalid job spec" in proc.stderr and "train.lr: Input should be less than or equal to 1000" in " ".join(
        proc.stderr.split()
    )
