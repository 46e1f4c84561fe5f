"""Benchmark of the evaluation engine's overheads (a script, not a test).

    python benchmarks/bench_evaluation.py            # CPU with 1 thread (CUDA if present)
    python benchmarks/bench_evaluation.py --quick    # fewer rounds
    python benchmarks/bench_evaluation.py --only pgd-images --rounds 9

Three ratios, each on the same model and the same data for both sides:

* **PGD throughput** — ``evaluation.pgd.pgd_accuracy`` (our adapter: the [0, 1] box map, the worst case over
  restarts; given the clean pass's logits, as ``evaluation.runner`` calls it) against a raw torchattacks loop
  (``PGD`` / ``PGDL2`` called directly, then one forward to score). Data: scikit-learn's digits, already in
  [0, 1], so the raw loop is correct as it is (PGDL2 gets the image-shaped (N, 1, 8, 8) view it expects).
  Ratio = our samples/s ÷ raw samples/s; goal ≥ 0.95.
* **PGD throughput on convolutional image networks** — the same comparison on CIFAR-10-shaped random images
  (3×32×32, n = 128) through explicit and 1-Lipschitz image backbones (normalisation inside, two stages,
  pixel-unshuffle): torchattacks takes the (N, 3, 32, 32) images as they are; ours goes through the box map and
  the evaluation's batches. Goal ≥ 0.95.
* **Gaussian sweep** — ``evaluation.gaussian.gaussian_noise_accuracy`` over k = len(σ)·repeats noisy copies
  against k clean forwards of the test set. Ratio = ours ÷ k forwards; goal ≤ 1.2.
* **Certification** — ``evaluation.certified.certified_accuracy`` (sound Lipschitz bound from exact spectral
  norms + margins) against one clean forward, for the model and test set of every shipped classification preset
  that certifies (``examples/*.json``). "cold, in a job" is what ``evaluation.runner`` pays and carries the goal
  (≤ 1.2): the bounds of the weights as they are (``compute_bounds``) plus the margins of the job's clean pass;
  "warm" is a later call on the same, unchanged model, with its own forward (the bounds are cached per model
  while its parameters are unchanged; goal ≤ 1.2 too); "cold" (own forward + fresh bounds) is shown for
  information: it is one forward more than "cold, in a job".

Models for PGD and Gaussian: an explicit ResNet and an implicit θ = 0.5 network with spectral normalisation (the
Reshniak & Webster's poster's field F^{α,β}), built by ``models.build_model`` from a spec. Weights are the seeded
initialisation everywhere (throughput does not depend on training; a preset whose initial weights have no bound is
skipped). Timings interleave the candidates round by round (a load change on a shared machine hits
both alike); times are medians over rounds and each ratio is the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torchattacks  # noqa: E402

from core.spec import JobSpec, ModelSpec  # noqa: E402
from evaluation.certified import certified_accuracy, compute_bounds  # noqa: E402
from evaluation.datasets import digits, load_dataset, two_spirals  # noqa: E402
from evaluation.gaussian import gaussian_noise_accuracy, predict  # noqa: E402
from evaluation.pgd import pgd_accuracy  # noqa: E402
from evaluation.runner import prepare_model  # noqa: E402
from models import LipschitzBoundUnavailable, build_model, lipschitz_bound  # noqa: E402

GOALS = {"pgd": 0.95, "gaussian": 1.2, "certified": 1.2}
ATTACK_CLASSES = {"Linf": torchattacks.PGD, "L2": torchattacks.PGDL2}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Timings(dict):
    """name → median seconds per call; :meth:`ratio` is the median over rounds of the per-round ratio (the two
    calls of a round ran back to back, so a load change on a shared machine mostly cancels out)."""

    def __init__(self, samples: dict[str, list[float]]):
        super().__init__({k: statistics.median(v) for k, v in samples.items()})
        self.samples = samples

    def ratio(self, num: str, den: str) -> float:
        return statistics.median(a / b for a, b in zip(self.samples[num], self.samples[den], strict=True))


def time_interleaved(fns: dict[str, Callable[[], object]], rounds: int, device: torch.device) -> Timings:
    """Seconds per call of each function, calls interleaved round by round (in reversed order every other round,
    so neither side always runs first), after one warm-up each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(rounds):
        order = list(fns.items()) if i % 2 == 0 else list(reversed(fns.items()))
        for name, fn in order:
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return Timings(times)


def make_model(family: str, input_dim: int, output_dim: int, device: torch.device, **kw) -> torch.nn.Module:
    fields = {"family": family, "input_dim": input_dim, "output_dim": output_dim, **kw}
    if family == "implicit":
        fields.setdefault("theta", 0.5)
        fields.setdefault("spectral", {"lower": -1.0, "upper": 1.0})
    torch.manual_seed(0)
    return build_model(ModelSpec.model_validate(fields)).to(device).eval()


def models_for(data, device: torch.device) -> dict[str, torch.nn.Module]:
    d, k = data.input_dim, data.num_classes
    return {
        "explicit w32 d10": make_model("explicit", d, k, device, width=32, depth=10, h=0.3),
        "implicit w16 d5 θ=.5 spectral": make_model("implicit", d, k, device, width=16, depth=5, h=0.3),
    }


# ---------------------------------------------------------------------------------------------------- PGD
class Image2Flat(torch.nn.Module):
    """torchattacks' PGDL2 needs (N, C, H, W): the raw loop feeds (N, 1, 8, 8) and flattens here."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.flatten(1))


def bench_pgd(rounds: int, device: torch.device, steps: int, n: int) -> list[dict]:
    data = digits(n_train=1000, n_test=n, seed=0)
    x, y = data.x_test.to(device), data.y_test.to(device)
    rows = []
    for model_name, model in models_for(data, device).items():
        for norm, eps in (("Linf", 8 / 255), ("L2", 0.5)):
            alpha = 2.5 * eps / steps

            with torch.no_grad():
                clean_logits = model(x)

            def ours(model=model, norm=norm, eps=eps, clean_logits=clean_logits) -> None:  # as evaluation.runner
                pgd_accuracy(model, x, y, norm, [eps], steps, 1, None, 0, (0.0, 1.0), clean_logits)

            def raw(model=model, norm=norm, eps=eps, alpha=alpha) -> None:
                if norm == "Linf":
                    attack = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
                    adv = attack(x, y)
                    with torch.no_grad():
                        (model(adv).argmax(1) == y).float().mean()
                else:
                    wrapped = Image2Flat(model)
                    attack = torchattacks.PGDL2(wrapped, eps=eps, alpha=alpha, steps=steps, random_start=True)
                    adv = attack(x.view(len(x), 1, 8, 8), y)
                    with torch.no_grad():
                        (wrapped(adv).argmax(1) == y).float().mean()

            t = time_interleaved({"ours": ours, "raw": raw}, rounds, device)
            rows.append(
                {
                    "case": f"PGD {norm} {steps} steps, {model_name}, digits n={len(x)}",
                    "ours": len(x) / t["ours"],
                    "peer": len(x) / t["raw"],
                    "ratio": t.ratio("raw", "ours"),  # throughput ratio
                    "goal": f"≥ {GOALS['pgd']}",
                    "ok": t.ratio("raw", "ours") >= GOALS["pgd"],
                    "unit": "samples/s",
                }
            )
    return rows


# ---------------------------------------------------------------------------------------------------- PGD, images
IMAGE_SHAPE = (3, 32, 32)
IMAGE_STAGES = [{"channels": 16, "depth": 2}, {"channels": 32, "depth": 2}]
CIFAR_NORMALIZATION = {"mean": [0.4914, 0.4822, 0.4465], "std": [0.2470, 0.2435, 0.2616]}


def image_models(device: torch.device) -> dict[str, torch.nn.Module]:
    """Convolutional image networks (the image backbone: normalisation inside, two stages, pixel-unshuffle) on
    CIFAR-10-shaped inputs."""
    fields = {"conv": True, "input_shape": list(IMAGE_SHAPE), "stages": IMAGE_STAGES,
              "normalization": CIFAR_NORMALIZATION}  # fmt: skip
    dim = IMAGE_SHAPE[0] * IMAGE_SHAPE[1] * IMAGE_SHAPE[2]
    return {
        f"{family} conv 16-32": make_model(family, dim, 10, device, **fields, **({"h": 0.3} if family == "explicit"
                                                                                 else {}))
        for family in ("explicit", "lipschitz")
    }  # fmt: skip


def bench_pgd_images(rounds: int, device: torch.device, steps: int, n: int) -> list[dict]:
    """PGD on convolutional image networks through the service path (``pgd_accuracy`` with the evaluation's
    defaults: the box map, batches of ``evaluate.batch_size``) vs raw torchattacks on the (N, 3, 32, 32) images,
    which torchattacks takes as they are. Random images in [0, 1] (throughput does not depend on the pixels)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((n, *IMAGE_SHAPE), generator=gen).to(device)
    y = torch.randint(0, 10, (n,), generator=gen).to(device)
    rows = []
    for model_name, model in image_models(device).items():
        with torch.no_grad():
            clean_logits = model(x)
        for norm, eps in (("Linf", 8 / 255), ("L2", 0.5)):
            alpha = 2.5 * eps / steps

            def ours(model=model, norm=norm, eps=eps, clean_logits=clean_logits) -> None:
                pgd_accuracy(model, x, y, norm, [eps], steps, 1, None, 0, (0.0, 1.0), clean_logits)

            def raw(model=model, norm=norm, eps=eps, alpha=alpha) -> None:
                attack = ATTACK_CLASSES[norm](model, eps=eps, alpha=alpha, steps=steps, random_start=True)
                adv = attack(x, y)
                with torch.no_grad():
                    (model(adv).argmax(1) == y).float().mean()

            t = time_interleaved({"ours": ours, "raw": raw}, rounds, device)
            rows.append(
                {
                    "case": f"PGD {norm} {steps} steps, {model_name}, 3×32×32 n={n}",
                    "ours": n / t["ours"],
                    "peer": n / t["raw"],
                    "ratio": t.ratio("raw", "ours"),
                    "goal": f"≥ {GOALS['pgd']}",
                    "ok": t.ratio("raw", "ours") >= GOALS["pgd"],
                    "unit": "samples/s",
                }
            )
    return rows


# ---------------------------------------------------------------------------------------------------- Gaussian
def bench_gaussian(rounds: int, device: torch.device) -> list[dict]:
    sigmas, repeats = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5], 10
    k = len(sigmas) * repeats
    rows = []
    for data_name, data in (("digits n=797", digits(n_train=1000, n_test=797)), ("spirals n=100", two_spirals())):
        x, y = data.x_test.to(device), data.y_test.to(device)
        for model_name, model in models_for(data, device).items():

            def ours(model=model, x=x, y=y, box=data.valid_range) -> None:
                gaussian_noise_accuracy(model, x, y, sigmas, repeats, 0, box)

            def forwards(model=model, x=x) -> None:
                for _ in range(k):
                    predict(model, x)

            t = time_interleaved({"ours": ours, "k forwards": forwards}, rounds, device)
            rows.append(
                {
                    "case": f"Gaussian {len(sigmas)} σ × {repeats} repeats, {model_name}, {data_name}",
                    "ours": t["ours"] * 1e3,
                    "peer": t["k forwards"] * 1e3,
                    "ratio": t.ratio("ours", "k forwards"),
                    "goal": f"≤ {GOALS['gaussian']}",
                    "ok": t.ratio("ours", "k forwards") <= GOALS["gaussian"],
                    "unit": "ms",
                }
            )
    return rows


# ---------------------------------------------------------------------------------------------------- certified
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def certified_presets() -> list[tuple[str, JobSpec]]:
    """Every shipped classification preset that certifies (examples/*.json): its model and its test set."""
    presets = []
    for path in sorted(EXAMPLES.glob("*.json")):
        fields = json.loads(path.read_text())
        if "sweep" in fields:  # a sweep file: its job is one of the presets' models
            continue
        spec = JobSpec.model_validate(fields)
        if spec.evaluate.certified is not None and spec.dataset.name in ("spirals", "digits"):
            presets.append((path.stem, spec))
    return presets


def bench_certified(rounds: int, device: torch.device) -> list[dict]:
    """Each preset's model (seeded initial weights) on its own test set. "cold, in a job" carries the goal: it is
    what ``evaluation.runner`` pays (exact bounds of freshly trained weights + margins of its clean pass); "warm"
    is certifying an unchanged model again, with its own forward; "cold" (own forward + fresh bounds) is shown for
    information: it is one forward more than "cold, in a job", so it can never reach 1.2."""
    rows = []
    for name, spec in certified_presets():
        data = load_dataset(spec.dataset)
        _, model = prepare_model(spec, data, device)  # as a job builds it: sizes from the data, seeded weights
        model.eval()
        x, y = data.x_test.to(device), data.y_test.to(device)
        eps = spec.evaluate.certified.eps
        try:
            lipschitz_bound(model)
        except LipschitzBoundUnavailable as exc:  # e.g. θhLip(F) ≥ 1 at the initial weights; training fixes it
            print(f"  {name}: skipped, no bound at its initial weights ({exc})")
            continue

        def forward(model=model, x=x) -> None:
            with torch.no_grad():
                model(x)

        def warm(model=model, x=x, y=y, eps=eps) -> None:
            certified_accuracy(model, x, y, eps)

        def cold(model=model, x=x, y=y, eps=eps) -> None:
            with torch.no_grad():  # an in-place no-op bumps a parameter's version: the cache misses
                next(model.parameters()).add_(0.0)
            certified_accuracy(model, x, y, eps)

        with torch.no_grad():
            clean_logits = model(x)

        def in_job(model=model, x=x, y=y, eps=eps, logits=clean_logits) -> None:  # as evaluation.runner
            certified_accuracy(model, x, y, eps, logits, compute_bounds(model))

        candidates = {"forward": forward, "warm": warm, "cold": cold, "cold, in a job": in_job}
        t = time_interleaved(candidates, rounds, device)
        for kind in ("cold, in a job", "warm", "cold"):
            ratio = t.ratio(kind, "forward")
            rows.append(
                {
                    "case": f"{name} (n={len(x)}): {kind}",
                    "ours": t[kind] * 1e3,
                    "peer": t["forward"] * 1e3,
                    "ratio": ratio,
                    "goal": "(info)" if kind == "cold" else f"≤ {GOALS['certified']}",
                    "ok": True if kind == "cold" else ratio <= GOALS["certified"],
                    "unit": "ms",
                }
            )
    return rows


def print_rows(title: str, rows: list[dict], peer: str) -> None:
    print(f"\n{title}")
    width = max(len(r["case"]) for r in rows)
    print(f"  {'case':<{width}}  {'ours':>10}  {peer:>12}  {'ratio':>6}  goal")
    for r in rows:
        mark = "" if r["goal"] == "(info)" else "ok" if r["ok"] else "MISSED"
        print(
            f"  {r['case']:<{width}}  {r['ours']:>10.4g}  {r['peer']:>12.4g}  {r['ratio']:>6.3f}  {r['goal']} {mark}"
            f"   ({r['unit']})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--rounds", type=int, help="rounds (overrides --quick)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on CPU (default 1)")
    parser.add_argument("--steps", type=int, default=20, help="PGD steps")
    parser.add_argument("--only", choices=["pgd", "pgd-images", "gaussian", "certified"], action="append")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    rounds = 3 if args.quick else 15
    rounds = args.rounds or rounds
    print(f"device {device}, torch {torch.__version__}, torchattacks {torchattacks.__version__}, rounds {rounds}")
    only = set(args.only or ["pgd", "pgd-images", "gaussian", "certified"])
    if "pgd" in only:
        print_rows("PGD throughput: ours vs raw torchattacks", bench_pgd(rounds, device, args.steps, 797), "raw")
    if "pgd-images" in only:
        rows = bench_pgd_images(rounds, device, args.steps, 128)
        print_rows("PGD throughput on conv image networks: ours vs raw torchattacks", rows, "raw")
    if "gaussian" in only:
        print_rows("Gaussian sweep: ours vs k clean forwards", bench_gaussian(rounds, device), "k forwards")
    if "certified" in only:
        print_rows("Certification: ours vs one clean forward", bench_certified(rounds, device), "1 forward")


if __name__ == "__main__":
    main()
