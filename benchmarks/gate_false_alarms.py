"""False alarms and power of ``robustlab check``'s statistical rule, measured (a script, not a test).

    nice -n 10 python benchmarks/gate_false_alarms.py --preset tiny --mode train --trials 100
    nice -n 10 python benchmarks/gate_false_alarms.py --preset tiny --mode checkpoint --trials 100
    nice -n 10 python benchmarks/gate_false_alarms.py --preset digits --mode checkpoint --trials 100
    nice -n 10 python benchmarks/gate_false_alarms.py --preset digits --mode train --trials 40 --json fa.json

``--preset tiny`` is the tiny spirals spec of ``tests/cli/test_check.py`` (100 test points); ``digits`` is the
shipped ``examples/digits-explicit.json`` (797 test images). Every trial judges, with :func:`cli.check.compare` (the
code the command runs), a candidate against a baseline under ``--max-drop METRIC=TOL`` on the gated metrics at
``--alpha``:

* ``--mode train`` (fresh training seeds): per trial a baseline of M runs (``--make-baseline --repeats M``: seeds
  never used before) and N candidate runs of the same spec with other fresh seeds. The unchanged candidate measures
  false alarms; the same N candidate models with Gaussian noise added to their weights, at a scale calibrated once
  to cost 2, 5 or 10 points of clean accuracy, measure power. Rows also judge the first M' ≤ M baseline runs against
  the first N' ≤ N candidate runs (other settings, from the same runs).
* ``--mode checkpoint`` (one trained model, fresh evaluation seeds): per trial the model is evaluated twice with
  new Gaussian / PGD seeds (baseline, candidate): paired per-sample tests. Power: the candidate is the model with a
  fresh draw of calibrated weight noise.

The drop of a power trial is measured, not assumed: the clean-accuracy drop of each noisy model against the same
model without noise, averaged over the trials. Rates come with Clopper–Pearson 95 % intervals; the minimum
detectable drop (90 % power) is interpolated linearly between the measured drops. The CI time of a setting is the
median wall time of the candidate's runs (training + evaluation, one torch thread) times N.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cli.check import Policy, Rule, Run, Side, compare  # noqa: E402
from core.spec import JobSpec  # noqa: E402
from evaluation.datasets import load_dataset  # noqa: E402
from evaluation.runner import evaluate, prepare_model  # noqa: E402
from evaluation.training import train_classifier  # noqa: E402

TINY = {
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
PRESETS = {
    "tiny": (TINY, ["clean_acc", "gaussian_acc@0.1", "pgd_linf_acc@0.05", "pgd_l2_acc@0.05", "pgd_linf_acc@0.1"]),
    "digits": (
        json.loads((ROOT / "examples" / "digits-explicit.json").read_text()),
        ["clean_acc", "gaussian_acc@0.1", "pgd_linf_acc@0.05", "pgd_l2_acc@0.25"],
    ),
}
DROPS = (0.02, 0.05, 0.10)
CPU = torch.device("cpu")


def with_seeds(spec: dict, train: int | None, evaluation: int) -> JobSpec:
    out = json.loads(json.dumps(spec))
    if train is not None:
        out["train"]["seed"] = train
    for part in ("gaussian", "pgd"):
        out["evaluate"][part]["seed"] = evaluation
    return JobSpec.model_validate(out)


def train(spec: dict, seed: int):
    s = with_seeds(spec, seed, seed)
    data = load_dataset(s.dataset)
    s, model = prepare_model(s, data, CPU)
    train_classifier(model, data, s.train, CPU, task=data.task)
    return model.eval(), data


def evaluate_run(model, data, spec: dict, train_seed: int, eval_seed: int, checkpoint: str | None) -> Run:
    s = with_seeds(spec, train_seed, eval_seed)
    s = s.model_copy(update={"model": s.model.model_copy(update={"input_dim": data.input_dim,
                                                                 "output_dim": data.output_dim})})  # fmt: skip
    metrics, info = evaluate(model, s, data, CPU, lambda _event: None)
    return Run(metrics, f"seed {train_seed}/{eval_seed}", {**s.model_dump(mode="json"), "checkpoint": checkpoint},
               None, info["outcomes"])  # fmt: skip


def noisy(model, scale: float, seed: int):
    """The model with N(0, (scale·mean|w|)²) noise added to every tensor of its state."""
    g = torch.Generator().manual_seed(seed)
    out = copy.deepcopy(model)
    state = {k: v + scale * v.abs().mean() * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
             for k, v in model.state_dict().items()}  # fmt: skip
    out.load_state_dict(state)
    return out.eval()


@torch.no_grad()
def clean_acc(model, data) -> float:
    return float((model(data.x_test).argmax(1) == data.y_test).float().mean())


def calibrate(model, data, drop: float, draws: int = 8) -> float:
    """The noise scale whose mean clean-accuracy drop over ``draws`` noise draws is ``drop`` (bisection)."""
    base = clean_acc(model, data)
    lo, hi = 0.0, 4.0
    for _ in range(12):
        mid = (lo + hi) / 2
        mean_drop = base - np.mean([clean_acc(noisy(model, mid, 10_000 + i), data) for i in range(draws)])
        lo, hi = (mid, hi) if mean_drop < drop else (lo, mid)
    return (lo + hi) / 2


def clopper_pearson(k: int, n: int) -> tuple[float, float]:
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    return ci.low, ci.high


def judge(base: list[Run], cand: list[Run], metrics: list[str], tol: float, alpha: float) -> tuple[bool, str]:
    policy = Policy([Rule("max_drop", m, tol) for m in metrics], alpha=alpha)
    report = compare(Side("baseline", base), Side("candidate", cand), policy)
    if report.exit_code == 2:
        raise SystemExit(f"the gate could not compare: {report.headline}")
    tests = {b.finding.test for c in report.checks for b in c.bounds if b.finding is not None}
    return report.exit_code == 1, ", ".join(sorted(tests))


def mdd(points: list[tuple[float, float]], target: float = 0.9) -> str:
    """The drop at which power reaches ``target``, interpolated between (drop, power) points."""
    points = sorted(points)
    if points[0][1] >= target:
        return f"≤ {points[0][0] * 100:.1f} points"
    for (d0, p0), (d1, p1) in zip(points, points[1:], strict=False):
        if p0 < target <= p1:
            return f"≈ {100 * (d0 + (target - p0) * (d1 - d0) / (p1 - p0)):.1f} points"
    return f"> {points[-1][0] * 100:.1f} points"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--mode", choices=["train", "checkpoint"], default="train")
    parser.add_argument("--trials", type=int, default=100, help="false-alarm trials")
    parser.add_argument("--power-trials", type=int, default=None, help="trials per drop (default: --trials)")
    parser.add_argument("--baseline-runs", type=int, default=5, help="M (train mode)")
    parser.add_argument("--candidate-runs", type=int, default=2, help="N (train mode)")
    parser.add_argument("--tol", type=float, default=0.01)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument(
        "--third-epochs", action="store_true", help="train mode: also candidates trained for a third of the epochs"
    )
    parser.add_argument("--seed", type=int, default=1_000, help="first seed (runs use seeds from here up, once)")
    parser.add_argument("--json", type=Path, help="write the per-trial verdicts here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec, metrics = PRESETS[args.preset]
    power_trials = args.trials if args.power_trials is None else args.power_trials
    m_runs, n_runs = (args.baseline_runs, args.candidate_runs) if args.mode == "train" else (1, 1)
    settings = [(m_runs, n_runs)]
    if args.mode == "train":
        settings += sorted({(m, n) for m in (1, 3, m_runs) for n in (1, n_runs) if m <= m_runs} - {(m_runs, n_runs)})
    alarms = {s: 0 for s in settings}
    hits = {(s, d): 0 for s in settings for d in DROPS}
    realised = {d: [] for d in DROPS}
    short_spec = json.loads(json.dumps(spec))
    short_spec["train"]["epochs"] = max(1, spec["train"]["epochs"] // 3)
    short_hits = {s: 0 for s in settings}
    short_drops: list[float] = []
    tests_used: dict = {}
    cand_seconds: list[float] = []
    rows = []
    start = time.perf_counter()
    seed = args.seed + (0 if args.mode == "train" else 500_000) + (0 if args.preset == "tiny" else 100_000)
    model0, data = train(spec, seed)  # checkpoint mode: the one model; train mode: the calibration model
    seed += 1
    scales = {d: calibrate(model0, data, d) for d in DROPS}
    print(f"noise scales: {', '.join(f'{d * 100:g} pts → {s:.3g}' for d, s in scales.items())}", file=sys.stderr)
    for trial in range(max(args.trials, power_trials)):
        if args.mode == "train":
            base = []
            for _ in range(m_runs):
                model, data = train(spec, seed)
                base.append(evaluate_run(model, data, spec, seed, seed, None))
                seed += 1
            cand, cand_models = [], []
            for _ in range(n_runs):
                t0 = time.perf_counter()
                model, data = train(spec, seed)
                cand.append(evaluate_run(model, data, spec, seed, seed, None))
                cand_seconds.append(time.perf_counter() - t0)
                cand_models.append((model, seed))
                seed += 1
        else:
            base = [evaluate_run(model0, data, spec, 0, seed, "ckpt")]
            t0 = time.perf_counter()
            cand = [evaluate_run(model0, data, spec, 0, seed + 1, "ckpt")]
            cand_seconds.append(time.perf_counter() - t0)
            cand_models = [(model0, seed + 1)]
            seed += 2
        row: dict = {"trial": trial}
        if trial < args.trials:
            for m, n in settings:
                failed, used = judge(base[:m], cand[:n], metrics, args.tol, args.alpha)
                alarms[(m, n)] += failed
                tests_used.setdefault((m, n), used)
                row[f"alarm M={m} N={n}"] = failed
        if trial < power_trials:
            for d in DROPS:
                weak = []
                for i, (model, s) in enumerate(cand_models):
                    bad = noisy(model, scales[d], 50_000 + 7 * trial + i)
                    realised[d].append(clean_acc(model, data) - clean_acc(bad, data))
                    ckpt = "ckpt+noise" if args.mode == "checkpoint" else None
                    weak.append(evaluate_run(bad, data, spec, s, s, ckpt))
                for m, n in settings:
                    failed, _ = judge(base[:m], weak[:n], metrics, args.tol, args.alpha)
                    hits[((m, n), d)] += failed
                    row[f"detect {d} M={m} N={n}"] = failed
            if args.third_epochs and args.mode == "train":
                short = []
                for _ in range(n_runs):
                    model, data = train(short_spec, seed)
                    short.append(evaluate_run(model, data, short_spec, seed, seed, None))
                    seed += 1
                short_drops.append(np.mean([r.metrics["clean_acc"] for r in base])
                                   - np.mean([r.metrics["clean_acc"] for r in short]))  # fmt: skip
                for m, n in settings:
                    failed, _ = judge(base[:m], short[:n], metrics, args.tol, args.alpha)
                    short_hits[(m, n)] += failed
                    row[f"detect third-epochs M={m} N={n}"] = failed
        rows.append(row)
        head = alarms[settings[0]]
        print(f"trial {trial + 1}: false alarms {head}/{min(trial + 1, args.trials)} "
              f"({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)  # fmt: skip
    elapsed = time.perf_counter() - start

    what = {"train": "fresh training seeds", "checkpoint": "one checkpoint, fresh evaluation seeds"}[args.mode]
    print(f"\nrobustlab check, preset {args.preset} ({spec['name']}), {what}; alpha {args.alpha:g}, "
          f"--max-drop {args.tol:g} on {', '.join(metrics)}")  # fmt: skip
    per_run = statistics.median(cand_seconds)
    print("candidate run (train + evaluate)" if args.mode == "train" else "candidate evaluation", end="")
    print(f": median {per_run:.2f} s; total {elapsed:.0f} s; measured clean-accuracy drops: "
          + ", ".join(f"{d * 100:g} → {100 * np.mean(realised[d]):.1f} ± {100 * np.std(realised[d]):.1f} pts"
                      for d in DROPS))  # fmt: skip
    header = f"{'setting':18s} {'test':32s} {'false alarms (95% CI)':28s}"
    header += "".join(f" power@{d * 100:g}pt (CI)      " for d in DROPS) + " MDD(90%)  CI time"
    print(header)
    summary = {}
    for m, n in settings:
        k = alarms[(m, n)]
        lo, hi = clopper_pearson(k, args.trials)
        cells = f"{k:3d}/{args.trials} = {k / args.trials:5.1%} [{lo:.1%}, {hi:.1%}]"
        powers = []
        line = ""
        for d in DROPS:
            h = hits[((m, n), d)]
            plo, phi = clopper_pearson(h, power_trials)
            powers.append((float(np.mean(realised[d])), h / power_trials))
            line += f" {h:3d}/{power_trials} [{plo:.0%}, {phi:.0%}]   "
        label = f"M={m} N={n}" if args.mode == "train" else "1 vs 1 eval"
        print(f"{label:18s} {tests_used[(m, n)][:32]:32s} {cells:28s}{line} {mdd(powers):9s} {n * per_run:.1f} s")
        summary[label] = {"false_alarms": k, "trials": args.trials, "ci": [lo, hi], "power": powers,
                          "power_trials": power_trials, "mdd": mdd(powers), "ci_seconds": n * per_run}  # fmt: skip
    if short_drops:
        epochs = f"{short_spec['train']['epochs']} of {spec['train']['epochs']} epochs"
        spread = f"{100 * np.mean(short_drops):.1f} ± {100 * np.std(short_drops):.1f} pts"
        print(f"\ncandidate trained for {epochs}: clean-accuracy drop {spread} (baseline mean − candidate mean)")
        for m, n in settings:
            h = short_hits[(m, n)]
            lo, hi = clopper_pearson(h, power_trials)
            print(f"M={m} N={n}: detected {h}/{power_trials} [{lo:.0%}, {hi:.0%}]")
            summary[f"M={m} N={n}"]["third_epochs"] = {"detected": h, "drop": float(np.mean(short_drops))}
    if args.json:
        payload = {"args": {**vars(args), "json": str(args.json)}, "scales": scales, "summary": summary, "trials": rows}
        args.json.write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
