"""``robustlab check``: the command line of the CI robustness regression gate.

Exit 0 (pass), 1 (a regression) or 2 (bad usage, unreadable input, a metric missing on one side, a candidate run that
failed)::

    # once, on main: a baseline of 5 training seeds, carrying its noise estimate
    robustlab check --make-baseline examples/digits-explicit.json --repeats 5 --out ci/baseline

    # on every change: train the candidate (2 seeds) and test it against that baseline at alpha = 0.05
    robustlab check examples/digits-explicit.json --repeats 2 --baseline ci/baseline \\
        --max-drop clean_acc=0.01 --max-drop 'pgd_*=0.02' --junit check.xml --summary check.md

    # weights evaluated with a spec (spec field `checkpoint`), baseline the newest succeeded job named "main"
    robustlab check spec.json --checkpoint runs/pr --baseline-tag main --server http://ci:8000 --policy policy.yaml

Candidate (one of): ``SPEC`` trained here with :func:`evaluation.runner.run_job`, or on ``--server`` through the
REST API (``--local`` keeps it here); ``SPEC --checkpoint DIR`` evaluates stored weights instead of training;
``--candidate result.json`` (repeatable) reads finished runs.

Baseline (optional when the policy only has absolute bounds): ``--baseline`` a ``result.json``, the ``run --out``
directory holding one, a ``--make-baseline`` directory (all its runs), or a job id on the server, repeatable; or
``--baseline-tag NAME``, the newest succeeded job on the server whose spec ``name`` is NAME.

Policy: :mod:`cli.check.policy`; the decision rule and its tests: :mod:`cli.check.compare`,
:mod:`cli.check.statistics`; ``docs/ci.md`` has the measured false-alarm rates and power.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from cli.backend import Backend, BackendError, InProcess, JobRun, OnServer
from cli.check.compare import compare
from cli.check.files import CheckError, write_file
from cli.check.inputs import (
    Side,
    load_candidate_spec,
    load_result_file,
    looks_like_path,
    noise_estimate,
    repeat_specs,
    run_of_job,
    save_runs,
    seeds_label,
    write_baseline,
)
from cli.check.policy import BaselineSpread, build_policy, check_alpha
from cli.check.reports import console, err_console, junit_xml, markdown_summary, print_report
from cli.check.server import Server, load_baseline
from cli.client import RobustlabClient


def _server(url: str | None, api_key: str | None) -> Server:
    from core.config import get_settings

    return Server(RobustlabClient(url or get_settings().server_url, api_key=api_key))


def _seed(spec, i: int) -> str:
    return f"train seed {spec.train.seed}" if spec.checkpoint is None else f"evaluation {i + 1}"


def _produce(spec_file: Path, checkpoint, name, repeats, server, local, out, api_key, timeout, server_client):
    """Run SPEC ``repeats`` times through a backend (:mod:`cli.backend`: here, or on the server): ``(runs,
    specs, label, server_client)``; :class:`CheckError` at the first run that did not succeed."""
    spec = load_candidate_spec(spec_file, checkpoint, name)
    specs = repeat_specs(spec, repeats)
    what = f"{spec_file}" + (f" + checkpoint {spec.checkpoint}" if spec.checkpoint else "")
    on_server = server is not None and not local
    backend: Backend
    if on_server:
        server_client = server_client or _server(server, api_key)

        def submitted(i: int, _spec, job: dict) -> None:
            err_console.print(f"candidate job {job['id']} ({i + 1}/{len(specs)}): {job['status']}", highlight=False)

        backend = OnServer(server_client.client, timeout=timeout, on_submitted=submitted)
        dirs = None
    else:
        backend = InProcess()
        dirs = None if out is None else [out if len(specs) == 1 else out / f"repeat-{i}" for i in range(len(specs))]

    def done(i: int, run: JobRun) -> None:
        if run.ok:
            return
        if run.status == "unknown":
            raise CheckError(f"waiting for candidate job {run.job_id}: {run.error}")
        if on_server:
            reason = f": {run.error}" if run.error else ""
            raise CheckError(f"candidate: job {run.job_id} ({run.name}) is {run.status}, not succeeded{reason}")
        raise CheckError(f"run {i + 1}/{len(specs)} ({_seed(specs[i], i)}) failed: {run.error}")

    try:
        data = backend.with_checkpoints([s.model_dump(mode="json") for s in specs])
        jobs = backend.run(data, dirs, progress=None if on_server else err_console, on_done=done)
    except BackendError as exc:
        raise CheckError(f"submitting the candidate: {exc}" if exc.name else str(exc)) from None
    if on_server:
        runs = [run_of_job(job, f"job {job.job_id}") for job in jobs]
        if out is not None:
            save_runs(runs, out)
    else:
        runs = [run_of_job(job, f"in-process ({_seed(specs[i], i)})") for i, job in enumerate(jobs)]
    return runs, specs, f"{what} ({backend.where}, {seeds_label(specs)})", server_client


def make_baseline(spec_file: Path, repeats: int, out: Path | None, **produce) -> None:
    """``--make-baseline SPEC --repeats N --out DIR``: N seeds' runs and ``DIR/baseline.json`` with their spread."""
    if out is None:
        raise CheckError("--make-baseline needs --out DIR (where the baseline's runs and baseline.json go)")
    runs, specs, label, client = _produce(spec_file, repeats=repeats, out=out, server_client=None, **produce)
    if client is not None:
        client.close()
    manifest = write_baseline(runs, specs, out)
    console.print(f"baseline: {label} → {manifest}", highlight=False)
    noise = noise_estimate(runs)
    for name in ("clean_acc", *sorted(n for n in noise if n.startswith(("pgd_", "certified_l2", "autoattack_")))):
        if name in noise:
            v = noise[name]
            console.print(f"  {name}: mean {v['mean']:.4g}, seed-to-seed std {v['std']:.3g} (n={v['n']})")
    if repeats == 1:
        err_console.print(
            "[yellow]warning:[/] one run carries no noise estimate: the gate will assume the candidate's spread "
            "for it (give --repeats 3 or more)",
            highlight=False,
        )


def check(
    spec_file: Annotated[
        Path | None, typer.Argument(help="candidate job spec: trained here, or on --server", show_default=False)
    ] = None,
    candidate: Annotated[
        list[Path] | None,
        typer.Option("--candidate", help="candidate result.json instead of a spec (repeatable: runs of several seeds)"),
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="evaluate these weights (a `run --out` dir or .safetensors) with SPEC instead of training"),
    ] = None,
    baseline: Annotated[
        list[str] | None,
        typer.Option(
            "--baseline", help="result.json, its run directory, a --make-baseline directory, or a server job id"
        ),
    ] = None,
    baseline_tag: Annotated[
        str | None, typer.Option("--baseline-tag", help="the newest succeeded job on the server with this spec name")
    ] = None,
    make_baseline_spec: Annotated[
        Path | None,
        typer.Option(
            "--make-baseline", help="run this SPEC --repeats times and write a baseline with its noise to --out"
        ),
    ] = None,
    max_drop: Annotated[
        list[str] | None,
        typer.Option("--max-drop", help="METRIC=TOL: largest allowed drop (rise, if lower is better); TOL or N%"),
    ] = None,
    min_: Annotated[list[str] | None, typer.Option("--min", help="METRIC=FLOOR: absolute lower bound")] = None,
    max_: Annotated[list[str] | None, typer.Option("--max", help="METRIC=CEILING: absolute upper bound")] = None,
    policy: Annotated[
        Path | None, typer.Option(help="policy file (JSON/YAML): max_drop, min, max, direction, alpha")
    ] = None,
    alpha: Annotated[
        float | None,
        typer.Option("--alpha", help="false-alarm rate over all gated metrics together (Holm), in (0, 1); 0.05"),
    ] = None,
    repeats: Annotated[
        int, typer.Option(min=1, max=100, help="runs with train/eval seeds + 0..N−1 (candidate, or --make-baseline)")
    ] = 1,
    k: Annotated[
        float | None, typer.Option("--k", min=0.0, help="legacy rule: fail when drop > tol + k·SE (no alpha)")
    ] = None,
    baseline_spread: Annotated[
        BaselineSpread | None,
        typer.Option(help="legacy rule (with --k): noise of a one-run baseline, zero or candidate"),
    ] = None,
    server: Annotated[
        str | None, typer.Option(help="robustlab API: runs the candidate spec and resolves baseline job ids / tags")
    ] = None,
    local: Annotated[bool, typer.Option("--local", help="train the candidate here even with --server")] = False,
    candidate_name: Annotated[
        str | None, typer.Option(help="rename the candidate spec (keeps PR jobs apart from the baseline tag)")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="write the candidate's result.json (per repeat) here")] = None,
    junit: Annotated[Path | None, typer.Option(help="write a JUnit XML report (one testcase per metric)")] = None,
    summary: Annotated[Path | None, typer.Option(help="write a Markdown summary (a pull-request comment)")] = None,
    timeout: Annotated[float | None, typer.Option(help="seconds to wait for server jobs")] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="ROBUSTLAB_API_KEY", help="Bearer key for a server with ROBUSTLAB_AUTH=keys")
    ] = None,
) -> None:
    """CI regression gate: compare a candidate with a baseline; exit 0 pass, 1 regression, 2 usage or error."""
    start = time.perf_counter()
    server_client: Server | None = None
    produce = {"checkpoint": checkpoint, "name": candidate_name, "server": server, "local": local}
    try:
        if alpha is not None:
            check_alpha(alpha)
        if make_baseline_spec is not None:
            if spec_file is not None or candidate or baseline or baseline_tag:
                raise CheckError("--make-baseline SPEC takes no candidate and no baseline (only --repeats, --out)")
            make_baseline(make_baseline_spec, repeats, out, api_key=api_key, timeout=timeout, **produce)
            raise typer.Exit(0)
        pol = build_policy(policy, max_drop or (), min_ or (), max_ or (), k, baseline_spread, alpha)
        if spec_file is not None and candidate:
            raise CheckError("give a candidate SPEC or --candidate result files, not both")
        if spec_file is None and not candidate:
            raise CheckError("no candidate: give a job SPEC (trained and evaluated) or --candidate result.json")
        if candidate and (repeats > 1 or checkpoint is not None):
            raise CheckError("--repeats and --checkpoint need a candidate SPEC, not --candidate result files")
        if any(r.kind == "max_drop" for r in pol.rules) and not baseline and not baseline_tag:
            raise CheckError("--max-drop compares with a baseline: give --baseline FILE|JOB_ID or --baseline-tag NAME")
        if baseline_tag is not None or any(not looks_like_path(b) for b in baseline or ()):
            server_client = _server(server, api_key)
        base_side = load_baseline(baseline or (), baseline_tag, server_client)
        if spec_file is not None:
            runs, _, label, server_client = _produce(
                spec_file, repeats=repeats, out=out, api_key=api_key, timeout=timeout, server_client=server_client,
                **produce,
            )  # fmt: skip
            cand_side = Side(label, runs)
        else:
            files = [load_result_file(p) for p in candidate or ()]
            label = files[0].source if len(files) == 1 else f"{len(files)} runs ({', '.join(f.source for f in files)})"
            cand_side = Side(label, files)
        report = compare(base_side, cand_side, pol)
    except CheckError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        err_console.print("[bold red]error:[/] interrupted", highlight=False)
        raise typer.Exit(130) from None
    except typer.Exit:
        raise
    except Exception as exc:  # a crash must not read as "regression" (exit 1) in CI
        err_console.print_exception(max_frames=8)
        err_console.print(f"[bold red]error:[/] the gate failed: {type(exc).__name__}: {exc}", highlight=False)
        raise typer.Exit(2) from None
    finally:
        if server_client is not None:
            server_client.close()
    report.seconds = time.perf_counter() - start
    print_report(report)
    try:
        if junit is not None:
            write_file(junit, junit_xml(report), "JUnit report")
        if summary is not None:
            write_file(summary, markdown_summary(report), "summary")
    except CheckError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    raise typer.Exit(report.exit_code)
