"""Benchmark of randomized smoothing (a script, not a test).

    python benchmarks/bench_smoothing.py                 # both parts, CPU with 1 thread
    python benchmarks/bench_smoothing.py --part throughput --rounds 5
    python benchmarks/bench_smoothing.py --part families --dataset spirals

* **Throughput** — noisy samples per second through the smoothing path (``evaluation.smoothing.class_counts``:
  the seeded per-point noise, x + σ·z, the forward, the vote count) against raw batched forwards of the same
  model (the same number of rows, ``batch`` at a time, from one noisy tensor made beforehand, argmax only), for
  one σ and for three σ (which share their standard-normal draws). Ratio = ours ÷ raw samples/s; goal ≥ 0.9.
  Beside it, the loop of Cohen et al.'s reference code (``core.py``, ``_sample_noise``: per point and batch,
  ``x.repeat``, ``torch.randn_like(batch) * σ``, a forward, ``argmax``, a count in NumPy), the same rows: it
  draws its noise as any smoothing must, so ours ÷ Cohen's loop is our own overhead, and Cohen ÷ raw the cost
  of the draws themselves (a fresh noisy tensor per batch also leaves the CPU caches colder than a re-used one).
  Models: the digits presets' explicit and 1-Lipschitz networks and the spirals implicit one, seeded
  initialisation (throughput does not depend on training). Times are this process's CPU time (one torch thread:
  time the machine's other work takes from it is not counted); calls are interleaved round by round, and each
  ratio is the median of the per-round ratios.
* **Families** — for every family (explicit, implicit, ode, hamiltonian, lipschitz) a model trained with
  Gaussian noise σ = 0.25 (``train.noise_sigma``) through ``evaluation.runner.run_job`` on digits (or spirals),
  then its certified L2 accuracy at ε = 0.25 from the Lipschitz margin (the network itself, deterministic) beside
  randomized smoothing's at σ = 0.25 (the smoothed classifier, probability ≥ 1 − α), with the clean accuracies.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.spec import JobSpec  # noqa: E402
from evaluation.datasets import load_dataset  # noqa: E402
from evaluation.runner import prepare_model, run_job  # noqa: E402
from evaluation.smoothing import ESTIMATION, class_counts  # noqa: E402

GOAL = 0.9
THROUGHPUT_PRESETS = ("digits-explicit", "digits-lipschitz", "spirals-implicit")
#: the families' models: the digits / spirals presets' (ode: Reshniak & Webster's spirals-ode on digits too)
FAMILY_PRESETS = {
    "digits": {f: f"digits-{f}" for f in ("explicit", "implicit", "hamiltonian", "lipschitz")} | {"ode": "spirals-ode"},
    "spirals": {f: f"spirals-{f}" for f in ("explicit", "implicit", "ode", "hamiltonian", "lipschitz")},
}
DIGITS_TRAIN = {"epochs": 40, "lr": 0.005, "optimizer": "adam", "batch_size": 100, "seed": 0}


def preset(name: str) -> dict:
    return json.loads((ROOT / "examples" / f"{name}.json").read_text())


def throughput(name: str, sigmas: list[float], points: int, num: int, batch: int, rounds: int) -> dict:
    """Seconds of the smoothing path and of raw forwards over the same rows; the median per-round ratio."""
    spec = JobSpec.model_validate(preset(name))
    data = load_dataset(spec.dataset)
    _, model = prepare_model(spec, data, torch.device("cpu"))
    model.eval()
    x = data.x_test[:points]
    classes = data.output_dim
    rows = points * num * len(sigmas)
    noisy = x[:1] + 0.25 * torch.randn(batch, *x.shape[1:], generator=torch.Generator().manual_seed(0))

    def ours() -> None:
        class_counts(model, x, sigmas, num, batch, 0, ESTIMATION, classes)

    @torch.no_grad()
    def raw() -> None:
        for start in range(0, rows, batch):
            model(noisy[: min(batch, rows - start)]).argmax(1)

    @torch.no_grad()
    def cohen() -> None:
        for sigma in sigmas:
            for i in range(points):
                counts = np.zeros(classes, dtype=int)
                for start in range(0, num, batch):
                    size = min(batch, num - start)
                    repeated = x[i : i + 1].repeat((size, 1))
                    noise = torch.randn_like(repeated) * sigma
                    predictions = model(repeated + noise).argmax(1)
                    counts += np.bincount(predictions.cpu().numpy(), minlength=classes)

    fns = {"ours": ours, "raw": raw, "cohen": cohen}
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {key: [] for key in fns}
    for i in range(rounds):
        for key in list(fns) if i % 2 == 0 else list(fns)[::-1]:
            start = time.process_time()
            fns[key]()
            times[key].append(time.process_time() - start)

    def ratio(num_key: str, den_key: str) -> float:  # samples/s of num ÷ of den, median over rounds
        return statistics.median(d / n for n, d in zip(times[num_key], times[den_key], strict=True))

    result = {"model": name, "sigmas": len(sigmas), "rows": rows}
    result.update({f"{key}_per_s": rows / statistics.median(t) for key, t in times.items()})
    result.update(ratio=ratio("ours", "raw"), vs_cohen=ratio("ours", "cohen"), cohen_vs_raw=ratio("cohen", "raw"))
    return result


def family_spec(family: str, dataset: str, n: int, n_test: int | None) -> JobSpec:
    """The preset's model of ``family`` trained with noise σ = 0.25, certified (Lipschitz) and smoothed at 0.25."""
    base = preset(FAMILY_PRESETS[dataset][family])
    spec = {"name": f"bench-smoothing-{dataset}-{family}", "model": base["model"], "train": dict(base["train"])}
    if dataset == "digits":
        spec["dataset"] = {"name": "digits", "n_train": 1000, "n_test": n_test or 797, "seed": 0}
        if base["dataset"]["name"] != "digits":  # the ode preset is a spirals one: digits training settings
            spec["train"] = {**DIGITS_TRAIN, "regularizers": base["train"].get("regularizers", {})}
    else:
        spec["dataset"] = {**base["dataset"], "n_test": n_test or base["dataset"]["n_test"]}
    spec["train"]["noise_sigma"] = 0.25
    spec["evaluate"] = {
        "gaussian": None,
        "certified": {"eps": [0.25]},
        "smoothing": {"sigmas": [0.25], "eps": [0.25], "n0": 100, "n": n, "alpha": 0.001},
    }
    return JobSpec.model_validate(spec)


def families(dataset: str, n: int, n_test: int | None) -> list[dict]:
    rows = []
    for family in FAMILY_PRESETS[dataset]:
        start = time.perf_counter()
        result = run_job(family_spec(family, dataset, n, n_test))
        m = result.metrics
        rows.append({
            "family": family,
            "clean": m["clean_acc"],
            "lipschitz_bound": m.get("lipschitz_bound"),
            "lipschitz_certified@0.25": m.get("certified_l2_acc@0.25"),
            "smoothed_clean@0.25": m["smoothed_clean_acc@0.25"],
            "smoothed_certified@0.25": m["smoothed_certified_l2_acc_sigma0.25@0.25"],
            "seconds": time.perf_counter() - start,
            "warnings": [w for w in result.info.get("warnings", []) if "certified" in w],
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["throughput", "families", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--points", type=int, default=100, help="test points in the throughput part")
    parser.add_argument("--num", type=int, default=1000, help="draws per point in the throughput part")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--dataset", choices=["digits", "spirals"], default="digits")
    parser.add_argument("--n", type=int, default=1000, help="smoothing's n in the families part")
    parser.add_argument("--n-test", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.part in ("throughput", "both"):
        print(f"throughput: {args.points} points × {args.num} draws, batch {args.batch}, {args.rounds} rounds")
        print(f"{'model':<18} {'σ':>2} {'ours /s':>9} {'raw /s':>9} {'Cohen /s':>9} {'ours÷raw':>8} "
              f"{'ours÷Cohen':>10} {'Cohen÷raw':>9}  (goal ≥ {GOAL} for ours÷raw)")  # fmt: skip
        for name in THROUGHPUT_PRESETS:
            for sigmas in ([0.25], [0.12, 0.25, 0.5]):
                r = throughput(name, sigmas, args.points, args.num, args.batch, args.rounds)
                rates = f"{r['ours_per_s']:>9.0f} {r['raw_per_s']:>9.0f} {r['cohen_per_s']:>9.0f}"
                ratios = f"{r['ratio']:>8.2f} {r['vs_cohen']:>10.2f} {r['cohen_vs_raw']:>9.2f}"
                print(f"{name:<18} {r['sigmas']:>2} {rates} {ratios}")
    if args.part in ("families", "both"):
        print(f"\nfamilies on {args.dataset}, trained with noise σ = 0.25; smoothing n0 = 100, n = {args.n}, α = 0.001")
        rows = families(args.dataset, args.n, args.n_test)
        print(f"{'family':<12} {'clean':>6} {'Lip bound':>10} {'Lip cert@0.25':>13} {'g clean':>8} "
              f"{'smoothed cert@0.25':>18} {'s':>6}")  # fmt: skip
        for r in rows:
            bound = "none" if r["lipschitz_bound"] is None else f"{r['lipschitz_bound']:.3g}"
            lipschitz = percent(r["lipschitz_certified@0.25"])
            print(f"{r['family']:<12} {percent(r['clean']):>6} {bound:>10} {lipschitz:>13} "
                  f"{percent(r['smoothed_clean@0.25']):>8} {percent(r['smoothed_certified@0.25']):>18} "
                  f"{r['seconds']:>6.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
