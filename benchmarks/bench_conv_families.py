"""Benchmark of the convolutional image backbone of every family (a script, not a test).

    python benchmarks/bench_conv_families.py            # CUDA if present, else CPU with 1 thread
    python benchmarks/bench_conv_families.py --quick    # fewer rounds

CIFAR-sized random data: 3×32×32 images in [0, 1], 10 classes, batch ``--batch`` (64), stages
``--channels`` (16, 32) with one residual step each and pixel-unshuffle downsampling between them.

1. **Training step, each conv family**: images/s of robustlab's training loop (``evaluation.training.train_classifier``:
   Adam, cross-entropy, seeded shuffling, per-batch loss read-back, solver diagnostics) against a plain hand-written
   PyTorch loop (zero_grad, forward, cross-entropy, backward, step) over the same model, data and batches. The
   robustlab loop is timed between its first and last per-epoch progress reports (the epochs between are pure
   training; the one forward over the training set for ``train_acc`` at the end of a call is reported apart).
   Goal ≥ 0.9×.
2. **Implicit conv layer fwd+bwd to tol 1e-5** (θ = 1, h = 1, F = ``ConvResidualFunction`` with ``--deq-channels``
   channels on 32×32, tanh, kernels scaled so that h·Lip(F) = 0.9 by the sound conv bound) against torchdeq's fastest
   forward × backward solver pair on the same F from the same initial guess (``pip install --no-deps torchdeq``),
   with the gradients' relative difference. Also our closed-form conv term against the autograd fallback (the same
   solvers with VJPs taken by autograd on a recorded graph of F). Goal ≤ 0.5× torchdeq's time.

Timings interleave the candidates round by round and report the median over rounds.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import statistics
import sys
import time
import types
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_implicit import grads_of, rel_diff, time_interleaved, torchdeq_fwd_bwd  # noqa: E402

from core.spec import TrainSpec  # noqa: E402
from evaluation.datasets import Dataset  # noqa: E402
from evaluation.training import train_classifier  # noqa: E402
from models.conv import ConvResidualFunction, certified_conv_norm  # noqa: E402
from models.families import FAMILY_BUILDERS  # noqa: E402
from models.steps import SolverConfig, ThetaStep  # noqa: E402

FAMILIES = ("explicit", "implicit", "hamiltonian", "lipschitz")
TORCHDEQ_SOLVERS = ("fixed_point_iter", "anderson", "broyden")
OUR_PAIRS = (
    ("anderson", "gmres"),
    ("fixed_point", "neumann"),
    ("anderson", "neumann"),
    ("fixed_point", "gmres"),
    ("auto", "auto"),
)
CIFAR = (3, 32, 32)


def model_spec(family: str, args: argparse.Namespace) -> types.SimpleNamespace:
    """The model section (read by attribute, as the builders do) of a CIFAR-sized conv network of ``family``."""
    stage = types.SimpleNamespace
    return types.SimpleNamespace(
        family=family,
        conv=True,
        stages=[stage(channels=c, depth=1, hidden=None) for c in args.channels],
        downsample="unshuffle",
        kernel_size=3,
        activation="relu" if family == "lipschitz" else "tanh",
        shared_weights=False,
        input_shape=CIFAR,
        input_dim=3 * 32 * 32,
        output_dim=10,
        normalization=types.SimpleNamespace(mean=[0.4914, 0.4822, 0.4465], std=[0.2470, 0.2435, 0.2616]),
        h=0.2,
        theta=0.5,
        solver=types.SimpleNamespace(
            forward="anderson", backward="gmres", tol=1e-4, max_iter=30, backward_tol=None, backward_max_iter=None
        ),
    )


# --- 1. training step ------------------------------------------------------------------------------------------


def hand_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int, epochs: int, seed: int) -> None:
    """The plain PyTorch loop: the same optimiser, loss and batch order as robustlab's."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen).to(x.device)
        for i in range(0, len(x), batch):
            idx = order[i : i + batch]
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()


def robustlab_loop(model: nn.Module, data: Dataset, batch: int, epochs: int, seed: int, device) -> tuple[float, float]:
    """(seconds of epochs 2…E between the progress reports, seconds of the whole call) of ``train_classifier``."""
    marks: list[float] = []
    spec = TrainSpec(epochs=epochs, lr=1e-3, batch_size=batch, seed=seed)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # loose tolerance: a missed one is not the point here
        train_classifier(model, data, spec, device, progress=lambda _: marks.append(time.perf_counter()))
    return marks[-1] - marks[0], time.perf_counter() - start


def bench_training(args: argparse.Namespace, device: torch.device) -> list[tuple[str, float, float, float, float]]:
    gen = torch.Generator().manual_seed(0)
    n = args.batch * args.batches
    x = torch.rand(n, *CIFAR, generator=gen).to(device)
    y = torch.randint(0, 10, (n,), generator=gen).to(device)
    data = Dataset(x, y, x[: args.batch], y[: args.batch], num_classes=10, valid_range=(0.0, 1.0))
    rows = []
    for family in args.families:
        torch.manual_seed(0)
        base = FAMILY_BUILDERS[family](model_spec(family, args)).to(device)
        ours, ours_call, plain = [], [], []
        for r in range(args.rounds):
            pair = [("ours", copy.deepcopy(base)), ("plain", copy.deepcopy(base))]
            for name, model in pair if r % 2 == 0 else pair[::-1]:
                if name == "ours":
                    steady, whole = robustlab_loop(model, data, args.batch, args.epochs, r, device)
                    ours.append(steady)
                    ours_call.append(whole)
                else:
                    start = time.perf_counter()
                    hand_loop(model, x, y, args.batch, args.epochs - 1, r)  # as many epochs as the timed span
                    plain.append(time.perf_counter() - start)
        images = n * (args.epochs - 1)
        t_ours, t_plain = statistics.median(ours), statistics.median(plain)
        rows.append((family, images / t_ours, images / t_plain, t_plain / t_ours, statistics.median(ours_call)))
        print(f"  {family:12} ours {images / t_ours:8.1f} img/s   plain {images / t_plain:8.1f} img/s   "
              f"ratio {t_plain / t_ours:5.2f}   (whole call incl. train_acc pass {statistics.median(ours_call):.2f} s)",
              flush=True)  # fmt: skip
    return rows


# --- 2. implicit conv layer vs torchdeq ------------------------------------------------------------------------


def deq_problem(args: argparse.Namespace, device: torch.device) -> tuple[ConvResidualFunction, torch.Tensor]:
    torch.manual_seed(args.seed)
    c = args.deq_channels
    f = ConvResidualFunction(c, c, (32, 32), 3, "tanh")
    with torch.no_grad():
        lip = certified_conv_norm(f.conv1.weight, 32) * certified_conv_norm(f.conv2.weight, 32)
        scale = (args.lip / lip) ** 0.5  # θ = 1, h = 1: h·Lip(F) ≤ ‖K₂‖‖K₁‖ (tanh is 1-Lipschitz)
        f.conv1.weight.mul_(scale)
        f.conv2.weight.mul_(scale)
    f = f.to(device)
    x = torch.randn(args.deq_batch, c * 32 * 32, device=device, requires_grad=True)
    return f, x


class NoClosedForm(ConvResidualFunction):
    """The same F without ``implicit_term``: the θ-step falls back to autograd VJPs (models.steps.AutogradTerm)."""

    implicit_term = None


def bench_deq(args: argparse.Namespace, device: torch.device) -> list[tuple[str, float, float]]:
    f, x = deq_problem(args, device)
    fallback = NoClosedForm(f.channels, f.conv1.out_channels, f.size, 3, "tanh").to(device)
    fallback.load_state_dict(f.state_dict())

    def layer(fn: nn.Module, fw: str, bw: str) -> ThetaStep:
        return ThetaStep(fn, h=1.0, theta=1.0, solver=SolverConfig(fw, bw, args.tol, 50, args.tol, 50))

    def fwd_bwd(step: ThetaStep, fn: nn.Module):
        def run() -> None:
            x.grad = None
            fn.zero_grad(set_to_none=True)
            step(x).square().sum().backward()

        return run

    frozen = f.implicit_term({k: v.detach() for k, v in f.weights().items()}, 1.0)
    one_f = frozen.fixed_point_map(x.detach())

    def four_f() -> None:
        with torch.no_grad():
            for _ in range(4):
                one_f(x.detach())

    candidates, ours = {"F": four_f}, {}
    for fw, bw in OUR_PAIRS:
        ours[f"{fw} + {bw}"] = layer(f, fw, bw)
        candidates[f"ours {fw} + {bw}"] = fwd_bwd(ours[f"{fw} + {bw}"], f)
    candidates["ours anderson + gmres, autograd VJPs"] = fwd_bwd(layer(fallback, "anderson", "gmres"), fallback)
    peers = {}
    deq_args = types.SimpleNamespace(tol=args.tol, max_iter=50, h=1.0)
    try:
        for fs, bs in itertools.product(TORCHDEQ_SOLVERS, TORCHDEQ_SOLVERS):
            run, stats = torchdeq_fwd_bwd(f, x, deq_args, fs, bs)
            candidates[f"torchdeq {fs} + {bs}"] = run
            peers[f"{fs} + {bs}"] = stats
    except ImportError:
        print("# torchdeq is not installed (pip install --no-deps torchdeq): peer rows skipped")
    times = time_interleaved(candidates, device, rounds=args.deq_rounds, number=1, warmup=1)
    t_f = times.pop("F") / 4
    best_peer = min(peers, key=lambda k: times[f"torchdeq {k}"]) if peers else None
    reference = grads_of(candidates[f"torchdeq {best_peer}"], x, f) if best_peer else None
    rows = []
    for name, t in sorted(times.items(), key=lambda kv: kv[1]):
        if name.startswith("ours") and "autograd" not in name:
            step = ours[name.removeprefix("ours ")]
            step.stats.reset()
            grads = grads_of(candidates[name], x, f)
            n_it = step.stats.forward_iterations + step.stats.backward_iterations
            its = f"f-it {step.stats.forward_iterations:3d} b-it {step.stats.backward_iterations:3d}"
            its += f"  {t / (n_it * t_f):4.2f}× limit"
        elif name.startswith("torchdeq"):
            stats = peers[name.removeprefix("torchdeq ")]
            grads = grads_of(candidates[name], x, f)
            n_it = int(stats["f"]["nstep"].max()) + int(stats["b"]["nstep"].max())
            its = f"f-it {int(stats['f']['nstep'].max()):3d} b-it {int(stats['b']['nstep'].max()):3d}"
            its += f"  {t / (n_it * t_f):4.2f}× limit"
        else:
            grads = grads_of(candidates[name], x, fallback)
            its = ""
        diff = rel_diff(grads, reference) if reference else float("nan")
        rows.append((name, t, diff))
        print(f"  {name:44} {t * 1e3:9.1f} ms  {its:29}  grad Δ vs torchdeq fastest {diff:8.1e}")
    print(f"  (one evaluation of F: {t_f * 1e3:.1f} ms; × limit = time ÷ ((f-it + b-it) × F), a VJP costing about "
          "one F: 1.0 would be the solves' evaluations alone)")  # fmt: skip
    peer_time = times[f"torchdeq {best_peer}"] if best_peer else float("nan")
    default = times["ours anderson + gmres"]
    fastest = min(times[f"ours {k}"] for k in ours)
    print(f"\n  ours default (anderson + gmres) ÷ torchdeq fastest ({best_peer}): {default / peer_time:.2f}  "
          f"goal ≤ 0.5  {'PASS' if default / peer_time <= 0.5 else 'MISS'}")  # fmt: skip
    print(f"  ours fastest pair ÷ torchdeq fastest: {fastest / peer_time:.2f}")
    print(f"  ours auto (resolved to {', '.join(ours['auto + auto'].stats.pairs)}) ÷ torchdeq fastest: "
          f"{times['ours auto + auto'] / peer_time:.2f}")  # fmt: skip
    auto = times["ours anderson + gmres, autograd VJPs"]
    print(f"  closed-form conv term ÷ autograd VJPs (anderson + gmres): {default / auto:.2f}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=3, help="batches per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="robustlab epochs per call (the first is warm-up)")
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--deq-channels", type=int, default=16)
    parser.add_argument("--deq-batch", type=int, default=32)
    parser.add_argument("--deq-rounds", type=int, default=9)
    parser.add_argument("--lip", type=float, default=0.9)
    parser.add_argument("--tol", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    parser.add_argument("--skip", choices=["training", "deq"], action="append", default=[])
    parser.add_argument("--quick", action="store_true", help="2 rounds each")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.deq_rounds = 2, 2
    device = torch.device(
        "cuda" if args.device == "auto" and torch.cuda.is_available() else "cpu" if args.device == "auto"
        else args.device
    )  # fmt: skip
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    print(f"# conv families benchmark — torch {torch.__version__}, device {device}, {args.threads} thread(s)")
    if "training" not in args.skip:
        print(f"\n1. training step, CIFAR-sized random data (3×32×32, batch {args.batch}, stages {args.channels} × 1 "
              f"step, unshuffle), {args.batches} batches × {args.epochs - 1} timed epochs, median of {args.rounds} "
              "rounds; ratio = ours ÷ plain images/s, goal ≥ 0.9")  # fmt: skip
        rows = bench_training(args, device)
        worst = min(r[3] for r in rows)
        print(f"  worst ratio {worst:.2f}  {'PASS' if worst >= 0.9 else 'MISS'}")
    if "deq" not in args.skip:
        print(f"\n2. implicit conv layer fwd+bwd, θ = 1, h·Lip(F) ≤ {args.lip}, {args.deq_channels} channels on 32×32, "
              f"batch {args.deq_batch}, tol {args.tol:g}, median of {args.deq_rounds} rounds")  # fmt: skip
        bench_deq(args, device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
