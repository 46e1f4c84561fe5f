"""Benchmark of the strong attack suite's cost against raw torchattacks (a script, not a test).

    python benchmarks/bench_suite.py            # CPU with 1 thread (CUDA if present)
    python benchmarks/bench_suite.py --quick    # fewer samples and rounds

Two ratios of throughput (samples/s, ours ÷ raw; goal ≥ 0.95), the same model, data and settings on both sides:

* **APGD-CE** — one member through the suite (``evaluation.autoattack.suite_robust`` with ``attacks=("apgd-ce",)``:
  the box adapter, the explicit settings, the admissibility check of every adversarial example) against
  ``torchattacks.APGD`` called directly, then one forward to score;
* **the suite** — ``suite_robust`` with the standard members (APGD-CE, APGD-DLR, APGD-T, FAB-T, Square; 100
  iterations, 5000 queries), each on what the earlier ones left robust, against raw torchattacks running the same
  members with the same settings each on every sample (then one forward each to score). torchattacks' APGD, APGD-T
  and FAB skip the samples they find misclassified at the start, so the raw side saves part of the work on its own;
  what is left is the suite's gain from attacking only what is still robust.

Model: an explicit ResNet trained for a few epochs on scikit-learn's digits (already in [0, 1], so the raw
torchattacks calls are correct as they are, on the (N, 1, 8, 8) image view). Timings interleave the candidates
round by round (``bench_evaluation.time_interleaved``); each ratio is the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torchattacks  # noqa: E402
from bench_evaluation import time_interleaved  # noqa: E402

from core.spec import JobSpec  # noqa: E402
from evaluation.autoattack import attack_settings, suite_robust  # noqa: E402
from evaluation.datasets import load_dataset  # noqa: E402
from evaluation.runner import prepare_model  # noqa: E402
from evaluation.training import train_classifier  # noqa: E402

GOAL = 0.95
MEMBERS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square")
SPEC = {
    "name": "bench-suite",
    "dataset": {"name": "digits", "n_train": 1000, "n_test": 797},
    "model": {"family": "explicit", "width": 64, "depth": 4, "h": 0.5, "activation": "tanh"},
    "train": {"epochs": 8, "lr": 0.01, "batch_size": 100},
}


class Images(nn.Module):
    """The model on torchattacks' (N, 1, 8, 8) view of the flat digits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.model(v.flatten(1))


def raw(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, n_classes: int, members: tuple[str, ...],
        steps: int, queries: int) -> float:  # fmt: skip
    """Raw torchattacks: every member on every sample; robust accuracy (clean-correct and never fooled)."""
    images = Images(model).eval()
    v = x.reshape(len(x), 1, 8, 8)
    with torch.no_grad():
        robust = images(v).argmax(1) == y
    for name in members:
        kwargs = {k: val for k, val in attack_settings(name, "Linf", n_classes, 0, steps, queries, 1).items()
                  if k != "class"}  # fmt: skip
        cls = {"apgd-ce": torchattacks.APGD, "apgd-dlr": torchattacks.APGD, "apgd-t": torchattacks.APGDT,
               "fab-t": torchattacks.FAB, "square": torchattacks.Square}[name]  # fmt: skip
        adv = cls(images, eps=eps, **kwargs)(v, y)
        with torch.no_grad():
            robust &= images(adv).argmax(1) == y
    return float(robust.float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--eps", type=float, default=0.05)
    args = parser.parse_args()
    torch.set_num_threads(1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    spec = JobSpec.model_validate(SPEC)
    data = load_dataset(spec.dataset)
    spec, model = prepare_model(spec, data, device)
    train_classifier(model, data, spec.train, device, lambda _e: None, None, task=data.task)
    model.eval()
    n = 200 if args.quick else 400
    x, y = data.x_test[:n].to(device), data.y_test[:n].to(device)
    with torch.no_grad():
        logits = model(x)
    k = data.num_classes
    rounds = 2 if args.quick else 3
    print(f"model: explicit ResNet on digits, clean accuracy {float((logits.argmax(1) == y).float().mean()):.3f}; "
          f"{n} samples, L∞ ε = {args.eps:g}, {4 * rounds} rounds (APGD-CE) and {rounds} (suite), device {device}")

    def ours(members: tuple[str, ...]):
        return lambda: suite_robust(model, x, y, "Linf", [args.eps], k, members, 100, 5000, 1, 0, (0.0, 1.0), logits)

    found: dict[str, float] = {}

    def keep(name: str, fn):
        def run():
            out = fn()
            found[name] = float(out[0][args.eps].robust.float().mean()) if isinstance(out, tuple) else out
        return run

    one = time_interleaved(
        {"ours": keep("ours-apgd", ours(("apgd-ce",))),
         "raw": keep("raw-apgd", lambda: raw(model, x, y, args.eps, k, ("apgd-ce",), 100, 5000))},
        4 * rounds, device,  # a fraction of a second each: more rounds for a steadier median
    )  # fmt: skip
    print(f"APGD-CE: ours {one['ours']:.2f} s, raw torchattacks APGD {one['raw']:.2f} s; robust accuracy "
          f"{found['ours-apgd']:.3f} / {found['raw-apgd']:.3f}; throughput ratio {one.ratio('raw', 'ours'):.2f}× "
          f"(goal ≥ {GOAL})")  # fmt: skip
    suite = time_interleaved(
        {"ours": keep("ours-suite", ours(MEMBERS)),
         "raw": keep("raw-suite", lambda: raw(model, x, y, args.eps, k, MEMBERS, 100, 5000))},
        rounds, device,
    )  # fmt: skip
    print(f"suite ({', '.join(MEMBERS)}): ours {suite['ours']:.2f} s, raw torchattacks (each member on every "
          f"sample) {suite['raw']:.2f} s; robust accuracy {found['ours-suite']:.3f} / {found['raw-suite']:.3f}; "
          f"throughput ratio {suite.ratio('raw', 'ours'):.2f}× (goal ≥ {GOAL})")  # fmt: skip


if __name__ == "__main__":
    main()
