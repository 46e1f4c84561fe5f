"""Helpers of the web and export tests: test data made through the service's own code paths, and a real server.

* :func:`populate` fills a migrated database through the code paths the service uses: ``db.seed`` (synthetic
  succeeded jobs, for volume, filters and sorting), jobs that go queued → claimed → completed as a worker stores
  them (``db.jobs``) with the PNG plots ``evaluation.plots.write_plots`` draws into ``ARTIFACTS_DIR/<id>/``, a failed
  job and a running job with training progress; optionally one real tiny job run by the worker's code
  (``worker.executor.execute_job``: train, evaluate, plots, results).
* :func:`start_uvicorn`: a real ``uvicorn api.main:app`` on a free port; :func:`stop` ends it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from service_helpers import REPO, free_port, service_env, tiny_spec, worker_provenance

from core.config import Settings
from core.provenance import current_code
from core.spec import JobSpec
from db import jobs, lifecycle
from db.seed import seed_leaderboard
from db.session import session_scope
from evaluation.plots import write_plots

SCREENSHOTS = REPO / "test-output" / "screenshots"
N_SEEDED = 24
WORKER = "web-test-worker"
SIGMAS = (0.0, 0.1, 0.2, 0.3)
EPS = (0.05, 0.1)
PGD_STEPS, PGD_RESTARTS = 10, 2

#: the jobs with plots: name → (model, clean accuracy, robustness factor); every value is distinct from the others
PLOTTED: dict[str, tuple[dict[str, Any], float, float]] = {
    "web-explicit": ({"family": "explicit", "width": 8, "depth": 4, "h": 0.2}, 0.955, 0.55),
    "web-implicit": ({"family": "implicit", "width": 8, "depth": 4, "h": 0.2, "theta": 0.5}, 0.945, 0.8),
    "web-hamiltonian": ({"family": "hamiltonian", "width": 8, "depth": 4, "h": 0.2}, 0.905, 0.7),
}


def plotted_metrics(clean: float, robust: float) -> dict[str, float]:
    """A consistent metric set (certified ≤ PGD L2 ≤ clean, PGD L∞ ≤ clean), with 3 decimals."""
    m = {"clean_acc": clean, "lipschitz_bound": round(12.5 / robust, 3), "train_seconds": round(3.0 * robust, 3)}
    for s in SIGMAS:
        m[f"gaussian_acc@{s:g}"] = round(clean * (1 - (1 - robust) * s * 2.5), 3)
        m[f"gaussian_acc_std@{s:g}"] = round(0.01 + 0.05 * s, 3)
    for e in EPS:
        m[f"pgd_linf_acc@{e:g}"] = round(clean * (1 - (1 - robust) * e * 8), 3)
        m[f"pgd_l2_acc@{e:g}"] = round(clean * (1 - (1 - robust) * e * 5), 3)
        m[f"certified_l2_acc@{e:g}"] = round(m[f"pgd_l2_acc@{e:g}"] * robust * (1 - e), 3)
    return m


def _spec(name: str, model: dict[str, Any]) -> JobSpec:
    return JobSpec.model_validate(
        tiny_spec(
            name,
            model=model,
            evaluate={
                "gaussian": {"sigmas": list(SIGMAS), "repeats": 2},
                "pgd": {"norm": ["Linf", "L2"], "eps": list(EPS), "steps": PGD_STEPS, "restarts": PGD_RESTARTS},
                "certified": {"eps": list(EPS)},
            },
        )
    )


def _attack_info() -> dict[str, Any]:
    return {
        norm: {"library": "torchattacks 3.5.1", "attack": attack, "norm": norm, "steps": PGD_STEPS,
               "restarts": PGD_RESTARTS}
        for norm, attack in (("Linf", "PGD"), ("L2", "PGDL2"))
    }  # fmt: skip


@dataclass
class Populated:
    ids: dict[str, str] = field(default_factory=dict)  # job name → id (plotted, failed, running, real)
    seeded: list = field(default_factory=list)  # db.seed.SeededJob
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # plotted job name → metrics
    timings: dict[str, float] = field(default_factory=dict)


def regression_metrics(mse: float) -> dict[str, float]:
    """A consistent regression metric set (clean ≤ PGD ≤ certified MSE, PSNR = 10·log10(1/MSE)), 4 decimals."""

    def psnr(v: float) -> float:
        return round(10 * np.log10(1 / v), 4)

    m = {"clean_mse": mse, "clean_psnr": psnr(mse), "train_mse": round(0.8 * mse, 4), "lipschitz_bound": 1.5}
    for s in SIGMAS[1:]:
        m[f"gaussian_mse@{s:g}"] = round(mse * (1 + 10 * s), 4)
        m[f"gaussian_mse_std@{s:g}"] = round(0.001 + 0.01 * s, 4)
        m[f"gaussian_psnr@{s:g}"] = psnr(m[f"gaussian_mse@{s:g}"])
        m[f"gaussian_psnr_std@{s:g}"] = 0.05
    for e in EPS:
        m[f"pgd_linf_mse@{e:g}"] = round(mse * (1 + 20 * e), 4)
        m[f"pgd_l2_mse@{e:g}"] = round(mse * (1 + 10 * e), 4)
        m[f"certified_linf_mse@{e:g}"] = round(mse * (2 + 40 * e), 4)
        m[f"certified_l2_mse@{e:g}"] = round(mse * (2 + 20 * e), 4)
        m[f"certified_l2_deviation_mse@{e:g}"] = round((1.5 * e) ** 2, 6)
    return m


def add_regression_jobs(url: str, artifacts: Path, mses: dict[str, float]) -> dict[str, str]:
    """Succeeded regression jobs (sine) with :func:`regression_metrics` and the regression plots that
    ``write_plots`` draws for them, stored as a worker stores them; returns name → job id."""
    ids = {}
    for name, mse in mses.items():
        metrics = regression_metrics(mse)
        spec = JobSpec.model_validate(
            tiny_spec(name, task="regression", dataset={"name": "sine", "n_train": 21, "n_test": 20})
        )
        with session_scope(url) as s:
            job = jobs.create_job(s, spec, code_version=current_code().identity)
            assert lifecycle.claim_job(s, job.id, WORKER, 600) is not None
            plots = write_plots(artifacts / job.id, metrics, name)
            info = {"plots": plots, **worker_provenance()}
            assert lifecycle.complete_job(s, job.id, metrics, info, worker=WORKER) is not None
            ids[name] = job.id
    return ids


def populate(url: str, artifacts: Path, real_job: bool = False) -> Populated:
    out = Populated()
    t0 = time.perf_counter()
    out.seeded = seed_leaderboard(url, N_SEEDED, seed=11, quantum=0.01)
    for name, (model, clean, robust) in PLOTTED.items():
        metrics = plotted_metrics(clean, robust)
        job_dir = None
        with session_scope(url) as s:
            job = jobs.create_job(s, _spec(name, model), code_version=current_code().identity)
            out.ids[name] = job.id
            assert lifecycle.claim_job(s, job.id, WORKER, 600) is not None
            radii = np.random.default_rng(len(name)).gamma(2.0, 0.04, size=100)
            job_dir = artifacts / job.id
            plots = write_plots(job_dir, metrics, name, radii=radii, certified_eps=EPS, radius_method="test")
            info = {"pgd": _attack_info(), "plots": plots, **worker_provenance()}
            assert lifecycle.complete_job(s, job.id, metrics, info, worker=WORKER) is not None
        out.metrics[name] = metrics
    with session_scope(url) as s:
        code = current_code().identity
        failed = jobs.create_job(s, _spec("web-failed", {"family": "explicit", "width": 8, "depth": 2}), code)
        lifecycle.claim_job(s, failed.id, WORKER, 600)
        lifecycle.fail_job(s, failed.id, "TrainingDiverged: the loss is nan at epoch 3", worker=WORKER)
        running = jobs.create_job(s, _spec("web-running", {"family": "explicit", "width": 8, "depth": 3}), code)
        lifecycle.claim_job(s, running.id, WORKER, 3600)
        progress = {"phase": "train", "epoch": 12, "epochs": 30, "loss": 0.42, "seconds_per_epoch": 0.5,
                    "eta_seconds": 600.0}  # fmt: skip
        assert lifecycle.update_progress(s, running.id, progress, WORKER)
        out.ids |= {"web-failed": failed.id, "web-running": running.id}
    out.timings["seed_s"] = time.perf_counter() - t0
    if real_job:
        t1 = time.perf_counter()
        out.ids["web-real"] = run_real_job(url, artifacts)
        out.timings["real_job_s"] = time.perf_counter() - t1
    return out


def run_real_job(url: str, artifacts: Path) -> str:
    """A tiny job through the worker's own code: claim, train, evaluate, write plots, store results."""
    from worker.executor import execute_job

    with session_scope(url) as s:
        job = jobs.create_job(s, JobSpec.model_validate(tiny_spec("web-real")), code_version=current_code().identity)
    settings = Settings(database_url=url, broker_url="memory://", artifacts_dir=artifacts, progress_interval=0.5)
    outcome = execute_job(job.id, WORKER, settings)
    if outcome != "succeeded":
        with session_scope(url) as s:
            error = jobs.get_job(s, job.id).error
        raise AssertionError(f"the real tiny job {job.id} ended {outcome}: {error}")
    return job.id


# ---------------------------------------------------------------------------------------------------- server
@dataclass
class Site:
    base_url: str
    database_url: str
    artifacts_dir: Path
    data: Populated
    log: Path
    proc: subprocess.Popen | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def tail(self, lines: int = 80) -> str:
        text = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return f"----- uvicorn ({self.log}) -----\n" + "\n".join(text[-lines:])


def start_uvicorn(url: str, artifacts: Path, workdir: Path) -> tuple[subprocess.Popen, str, Path]:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = service_env(url, "memory://", artifacts, base_url)
    log = workdir / "uvicorn.log"
    command = [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 60
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {proc.returncode}\n{log.read_text(errors='replace')}")
        try:
            if (r := httpx.get(f"{base_url}/healthz", timeout=5)).status_code == 200:
                return proc, base_url, log
            last = r.text
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.2)
    stop(proc)
    raise RuntimeError(f"uvicorn not ready after 60 s: {last}\n{log.read_text(errors='replace')}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
