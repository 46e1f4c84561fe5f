"""False-alarm rate of ``robustlab check --repeats`` on a model that did not change (a script, not a test).

    python benchmarks/gate_false_alarms.py                       # 50 trials, fresh training seeds, 1 torch thread
    python benchmarks/gate_false_alarms.py --mode checkpoint     # one trained model, fresh evaluation seeds only
    python benchmarks/gate_false_alarms.py --trials 100 --tol 0.05 --k 3 --json fa.json

Each trial compares the tiny spirals spec of ``tests/cli/test_check.py`` against itself, so every exit 1 is a
false alarm. ``--mode train`` (default):

* baseline: ``run_job`` with train and evaluation seed ``b`` → ``base/result.json`` (and seeds b+1 … b+N−1 for the
  pooled variant below);
* candidate: the gate itself, ``robustlab check SPEC --repeats N --baseline base/result.json --max-drop …`` with the
  spec's seeds at ``c = b + N``, so its runs use seeds c … c+N−1 (no seed is used twice in the whole benchmark).

``--mode checkpoint``: the model is trained once; baseline and candidate evaluate its weights (``--checkpoint``)
with different Gaussian-noise and PGD seeds, so only the evaluation's own randomness is left.

The gate's exit codes are counted (every gated metric at ``--max-drop TOL``). The same runs are then judged again
offline with :func:`cli.check.compare` under other rules (the "gate" row must agree with the exit codes):

* ``1 run, no allowance``: the first candidate run alone against the baseline (a naive gate);
* ``mean of N, k = 0``: the mean without the spread term;
* ``mean of N, k (the gate)``: ``baseline − mean > tol + k·s/√N`` (``--baseline-spread zero``, the default);
* ``… --baseline-spread candidate``: the one baseline run taken as noisy as a candidate run: ``k·s·√(1/N + 1)``;
* ``mean of N vs N baseline runs``: ``--baseline`` given N times: ``k·√(s²/N + s_b²/N)``.

A trial "alarms" if any gated metric regresses. A sweep over tolerances and k follows.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cli.check import Policy, Rule, Side, compare, load_result_file  # noqa: E402

SPEC = {
    "name": "gate-false-alarms",
    "dataset": {"name": "spirals", "n_train": 100, "n_test": 100},
    "model": {"family": "explicit", "width": 8, "depth": 4, "h": 0.3},
    "train": {"epochs": 150, "lr": 0.02},
    "evaluate": {
        "gaussian": {"sigmas": [0.1], "repeats": 2},
        "pgd": {"norm": ["Linf", "L2"], "eps": [0.05, 0.1], "steps": 10},
        "certified": {"eps": [0.05]},
    },
}
METRICS = ["clean_acc", "gaussian_acc@0.1", "pgd_linf_acc@0.05", "pgd_l2_acc@0.05", "pgd_linf_acc@0.1"]


def seeded(spec: dict, seed: int, train: bool = True) -> dict:
    out = json.loads(json.dumps(spec))
    if train:
        out["train"]["seed"] = seed
    out["evaluate"]["gaussian"]["seed"] = seed
    out["evaluate"]["pgd"]["seed"] = seed
    return out


def run(spec: dict, out: Path) -> Path:
    from core.spec import JobSpec
    from evaluation.runner import run_job

    run_job(JobSpec.model_validate(spec), out_dir=out)
    return out / "result.json"


def judge(base: list, cand: list, tol: float, k: float, spread: str = "zero") -> list[str]:
    """The metrics that regress under this rule."""
    rules = [Rule("max_drop", m, tol) for m in METRICS]
    report = compare(Side("baseline", base), Side("candidate", cand), Policy(rules, k=k, baseline_spread=spread))
    return [c.metric for c in report.regressions]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["train", "checkpoint"], default="train")
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tol", type=float, default=0.02, help="--max-drop tolerance of every gated metric")
    parser.add_argument("--k", type=float, default=2.0)
    parser.add_argument("--epochs", type=int, default=SPEC["train"]["epochs"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the per-trial numbers here")
    args = parser.parse_args()

    from typer.testing import CliRunner

    from cli.main import app

    torch.set_num_threads(args.threads)
    spec = json.loads(json.dumps(SPEC))
    spec["train"]["epochs"] = args.epochs
    n, k, tol = args.repeats, args.k, args.tol
    max_drop = [a for m in METRICS for a in ("--max-drop", f"{m}={tol}")]
    variants = {
        "1 run, no allowance": lambda b, c: judge(b[:1], c[:1], tol, 0.0),
        f"mean of {n}, k = 0": lambda b, c: judge(b[:1], c, tol, 0.0),
        f"mean of {n}, k = {k:g} (the gate)": lambda b, c: judge(b[:1], c, tol, k),
        f"mean of {n}, k = {k:g}, --baseline-spread candidate": lambda b, c: judge(b[:1], c, tol, k, "candidate"),
        f"mean of {n} vs {n} baseline runs, k = {k:g}": lambda b, c: judge(b, c, tol, k),
    }
    gate_row = list(variants)[2]
    alarms = dict.fromkeys(variants, 0)
    per_metric = {name: dict.fromkeys(METRICS, 0) for name in variants}
    rows, gate_seconds, disagreements, pairs = [], [], 0, []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        spec_file = work / "spec.json"
        train = args.mode == "train"
        checkpoint, ckpt = [], {}
        if not train:  # one model for every trial
            run(seeded(spec, 0), work / "model")
            checkpoint, ckpt = ["--checkpoint", str(work / "model")], {"checkpoint": str(work / "model")}
        for trial in range(args.trials):
            b = 10_000 + trial * 2 * n
            c = b + n
            bases = [run({**seeded(spec, b + i, train), **ckpt}, work / f"t{trial}-base{i}") for i in range(n)]
            spec_file.write_text(json.dumps(seeded(spec, c, train)))
            out = work / f"t{trial}-cand"
            t0 = time.perf_counter()
            argv = ["check", str(spec_file), *checkpoint, "--repeats", str(n), "--k", str(k),
                    "--baseline", str(bases[0]), "--out", str(out), *max_drop]  # fmt: skip
            result = CliRunner().invoke(app, argv)
            gate_seconds.append(time.perf_counter() - t0)
            if result.exit_code not in (0, 1):
                raise SystemExit(f"trial {trial}: the gate exited {result.exit_code}:\n{result.output}")
            base_runs = [load_result_file(p) for p in bases]
            cand_runs = [load_result_file(out / f"repeat-{i}" / "result.json") for i in range(n)]
            pairs.append((base_runs, cand_runs))
            row = {"trial": trial, "exit": result.exit_code, "baseline_seed": b, "candidate_seed": c}
            for name, rule in variants.items():
                failed = rule(base_runs, cand_runs)
                alarms[name] += bool(failed)
                for metric in failed:
                    per_metric[name][metric] += 1
                row[name] = failed
            disagreements += bool(row[gate_row]) != (result.exit_code == 1)
            row["metrics"] = {"baseline": [r.metrics for r in base_runs], "candidate": [r.metrics for r in cand_runs]}
            rows.append(row)
            print(
                f"trial {trial + 1}/{args.trials}: gate exit {result.exit_code} ({gate_seconds[-1]:.1f} s); "
                f"false alarms so far: {alarms[gate_row]}/{trial + 1}",
                file=sys.stderr,
                flush=True,
            )
    elapsed = time.perf_counter() - start

    what = "fresh training + evaluation seeds" if args.mode == "train" else "one checkpoint, fresh evaluation seeds"
    print(
        f"\nrobustlab check false alarms: {args.trials} trials of the tiny spirals spec ({args.epochs} epochs), {what};"
    )
    print(f"every metric gated with --max-drop {tol:g}: {', '.join(METRICS)}")
    print(f"{'rule':55s} {'false alarms':>14s}   per metric")
    for name in variants:
        detail = ", ".join(f"{m} {v}" for m, v in per_metric[name].items() if v)
        print(f"{name:55s} {alarms[name]:>4d}/{args.trials:<4d}{alarms[name] / args.trials:6.1%}   {detail or '-'}")
    exits = [r["exit"] for r in rows]
    print(f"gate exit codes: {exits.count(0)}× 0, {exits.count(1)}× 1; offline re-check disagreed {disagreements}×")
    median = sorted(gate_seconds)[len(gate_seconds) // 2]
    print(f"gate wall time per trial ({n} runs): median {median:.2f} s (total {elapsed:.0f} s, {args.threads} thread)")

    print("\nsweep (same runs): false alarms / trials")
    tols = sorted({tol, 0.05, 0.1})
    ks = sorted({k, 3.0})
    header = "".join(f"  tol {t:<4g} k {kk:<3g}" for t in tols for kk in ks)
    print(f"{'rule':40s}{header}")
    for label, base_n, spread in (
        (f"mean of {n} (the gate)", 1, "zero"),
        (f"mean of {n}, --baseline-spread candidate", 1, "candidate"),
        (f"mean of {n} vs {n} baseline runs", n, "zero"),
    ):
        cells = []
        for t in tols:
            for kk in ks:
                count = sum(bool(judge(bs[:base_n], cs, t, kk, spread)) for bs, cs in pairs)
                cells.append(f"{f'{count}/{args.trials}':>14s}  ")
        print(f"{label:40s}" + "".join(cells))
    if args.json:
        summary = {name: {"alarms": alarms[name], "per_metric": per_metric[name]} for name in variants}
        payload = {"args": {**vars(args), "json": str(args.json)}, "summary": summary, "trials": rows}
        args.json.write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
