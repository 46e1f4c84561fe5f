"""Benchmark of the implicit θ-layer's solvers against torchdeq (a script, not a test).

    python benchmarks/bench_implicit.py              # CUDA if present, else CPU with 1 thread
    python benchmarks/bench_implicit.py --quick      # fewer repeats

Problem (the issue's): F(z) = W₂ tanh(W₁z + b₁) + b₂ = ``ResidualFunction(64, 64)``, batch 256, implicit Euler
y = x + hF(y) (θ = 1, h = 1), weights scaled so that θh·Lip(F) = ``--lip`` (exact spectral norms), relative
tolerance 1e-5 forward and backward, at most 50 iterations each. torchdeq runs the same F and tolerance through
``get_deq(ift=True, f_stop_mode="rel", b_stop_mode="rel")`` from the same initial guess z₀ = x, for every pair of
its forward × backward solvers; its fastest pair is the reference.

Reported:
  * fwd+bwd time of every forward × backward pair of ours and of torchdeq, and of our opt-in "auto" choice
    (models/solvers/auto.py), and ours / torchdeq's fastest (goal ≤ 0.5, i.e. ours ≥ 2× faster; ≤ 0.35 for the
    pair a spec gets: the default anderson + gmres, which stored specs name, and "auto");
  * forward and backward iteration counts (evaluations of F / VJPs), the achieved residuals and the gradient
    difference to torchdeq's (a correctness check: a fast wrong answer is not a result);
  * "× limit" = time / ((forward + backward iterations) × one evaluation of F): how close a layer is to the cost of
    its evaluations alone (1.0 would be no overhead at all; every pass also needs the weight gradients, so > 1);
  * autograd memory of fwd+bwd at 10 vs 100 forward iterations (goal ≤ 1.1× growth): peak bytes of tensors saved
    for backward and alive (``torch.autograd.graph.saved_tensors_hooks``), and on CUDA also
    ``torch.cuda.max_memory_allocated``;
  * the θ = 0 layer against the explicit ResNet step (goal ≤ 1.05×).

Timings interleave the candidates round by round (so a load change on a shared machine hits all of them alike)
and report, per candidate, the median over rounds of the mean time of ``--number`` calls.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.memory import peak_saved_bytes  # noqa: E402
from models.residual import ResidualFunction  # noqa: E402
from models.solvers import BACKWARD_SOLVERS, FORWARD_SOLVERS  # noqa: E402
from models.spectral_norms import exact_spectral_norm  # noqa: E402
from models.steps import ExplicitStep, SolverConfig, ThetaStep  # noqa: E402

TORCHDEQ_SOLVERS = ("fixed_point_iter", "anderson", "broyden")
OUR_DEFAULT = ("anderson", "gmres")  # the spec's default pair (kept: stored specs name it)
AUTO = ("auto", "auto")  # opt-in: fixed_point + neumann where θh·Lip(F) < 1 is proven, else anderson + gmres


# --- timing ----------------------------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    candidates: dict[str, Callable[[], object]], device: torch.device, rounds: int, number: int, warmup: int = 3
) -> dict[str, float]:
    """Median over ``rounds`` of the mean seconds per call of each candidate; candidates alternate every round."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    sync(device)
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    names = list(candidates)
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            fn = candidates[name]
            sync(device)
            start = time.perf_counter()
            for _ in range(number):
                fn()
            sync(device)
            samples[name].append((time.perf_counter() - start) / number)
    return {name: statistics.median(ts) for name, ts in samples.items()}


# --- memory ----------------------------------------------------------------------------------------------------


def peak_device_bytes(fn: Callable[[], object], device: torch.device) -> int | None:
    if device.type != "cuda":
        return None
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    sync(device)
    return torch.cuda.max_memory_allocated(device) - base


# --- problem ---------------------------------------------------------------------------------------------------


def make_problem(args: argparse.Namespace, device: torch.device) -> tuple[ResidualFunction, torch.Tensor]:
    torch.manual_seed(args.seed)
    f = ResidualFunction(args.width, args.width, activation="tanh")
    with torch.no_grad():
        if args.weights == "orthogonal":  # ‖∂F/∂z‖ close to its bound: a genuinely slow contraction
            torch.nn.init.orthogonal_(f.lin1.weight)
            torch.nn.init.orthogonal_(f.lin2.weight)
        lip = exact_spectral_norm(f.lin1.weight) * exact_spectral_norm(f.lin2.weight)
        scale = (args.lip / (args.h * lip)) ** 0.5  # θ = 1: θh·Lip(F) = h·‖W₂‖‖W₁‖ (tanh is 1-Lipschitz)
        f.lin1.weight.mul_(scale)
        f.lin2.weight.mul_(scale)
    f = f.to(device)
    x = torch.randn(args.batch, args.width, device=device, requires_grad=True)
    return f, x


def our_layer(f: ResidualFunction, args: argparse.Namespace, forward: str, backward: str, theta: float = 1.0):
    cfg = SolverConfig(
        forward=forward,
        backward=backward,
        tol=args.tol,
        max_iter=args.max_iter,
        backward_tol=args.tol,
        backward_max_iter=args.max_iter,
    )
    return ThetaStep(f, h=args.h, theta=theta, solver=cfg)


def fwd_bwd(layer: torch.nn.Module, x: torch.Tensor, f: ResidualFunction) -> Callable[[], None]:
    def run() -> None:
        x.grad = None
        f.zero_grad(set_to_none=True)
        layer(x).square().sum().backward()

    return run


def torchdeq_fwd_bwd(f: ResidualFunction, x: torch.Tensor, args: argparse.Namespace, f_solver: str, b_solver: str):
    from torchdeq import get_deq

    deq = get_deq(
        ift=True,
        f_solver=f_solver,
        b_solver=b_solver,
        f_tol=args.tol,
        b_tol=args.tol,
        f_stop_mode="rel",
        b_stop_mode="rel",
        f_max_iter=args.max_iter,
        b_max_iter=args.max_iter,
    )
    deq.train()
    stats: dict[str, object] = {}

    def run() -> None:
        x.grad = None
        f.zero_grad(set_to_none=True)
        zs, info = deq(lambda z: x + args.h * f(z), x.detach(), backward_writer=lambda i: stats.update(b=i))
        stats["f"] = info
        stats["y"] = zs[-1].detach()
        zs[-1].square().sum().backward()

    return run, stats


def per_sample_residual(y: torch.Tensor, x: torch.Tensor, f: ResidualFunction, h: float) -> tuple[float, float]:
    """(max over samples, whole batch) of ‖y − x − hF(y)‖ / ‖x + hF(y)‖: torchdeq's 'rel' and ours."""
    with torch.no_grad():
        fy = x + h * f(y)
        r = (fy - y).flatten(1)
        per = r.norm(dim=1) / (fy.flatten(1).norm(dim=1) + 1e-12)
        return float(per.max()), float(r.norm() / fy.norm())


def grads_of(run: Callable[[], None], x: torch.Tensor, f: ResidualFunction) -> list[torch.Tensor]:
    run()
    return [x.grad.detach().clone()] + [p.grad.detach().clone() for p in f.parameters()]


def rel_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    num = sum(float((u - v).square().sum()) for u, v in zip(a, b, strict=True)) ** 0.5
    den = sum(float(v.square().sum()) for v in b) ** 0.5
    return num / den


# --- main ------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (fixed for stable timings)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--h", type=float, default=1.0)
    parser.add_argument("--lip", type=float, default=0.9, help="target θh·Lip(F) (upper bound from exact norms)")
    parser.add_argument("--weights", default="gaussian", choices=["gaussian", "orthogonal"])
    parser.add_argument("--tol", type=float, default=1e-5)
    parser.add_argument("--max-iter", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--number", type=int, default=5, help="calls per round and candidate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="5 rounds of 3 calls")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.number = 5, 3

    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    f, x = make_problem(args, device)
    print(
        f"# implicit θ-layer solver benchmark — torch {torch.__version__}, device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else f", {args.threads} thread(s)")
    )
    print(
        f"# F = ResidualFunction({args.width}, {args.width}) tanh, {args.weights} weights, batch {args.batch}, θ=1, "
        f"h={args.h}, θh·Lip(F) = {args.h * f.lipschitz_bound():.3f}, tol {args.tol:g} (relative), "
        f"max_iter {args.max_iter}; median of {args.rounds} rounds × {args.number} calls"
    )

    # one evaluation of F (no graph): the unit of the "× limit" column
    params = {k: v.detach() for k, v in f.weights().items()}
    xd = x.detach()

    def one_f() -> None:
        with torch.no_grad():
            f.apply(params, xd)

    # --- ours vs torchdeq --------------------------------------------------------------------------------------
    candidates: dict[str, Callable[[], None]] = {"F": lambda: [one_f() for _ in range(10)]}
    ours: dict[str, ThetaStep] = {}
    for fw, bw in itertools.product(sorted(FORWARD_SOLVERS), sorted(BACKWARD_SOLVERS)):
        layer = our_layer(f, args, fw, bw)
        ours[f"{fw} + {bw}"] = layer
        candidates[f"ours {fw} + {bw}"] = fwd_bwd(layer, x, f)
    ours["auto + auto"] = our_layer(f, args, *AUTO)
    candidates["ours auto + auto"] = fwd_bwd(ours["auto + auto"], x, f)
    peer_stats: dict[str, dict[str, object]] = {}
    try:
        for fs, bs in itertools.product(TORCHDEQ_SOLVERS, TORCHDEQ_SOLVERS):
            run, stats = torchdeq_fwd_bwd(f, x, args, fs, bs)
            candidates[f"torchdeq {fs} + {bs}"] = run
            peer_stats[f"{fs} + {bs}"] = stats
    except ImportError:
        print("# torchdeq is not installed (pip install --no-deps torchdeq): peer rows skipped")
    times = time_interleaved(candidates, device, rounds=args.rounds, number=args.number)
    t_f = times.pop("F") / 10

    # iterations, residuals and gradients from one more call each
    peer_best = min((times[f"torchdeq {k}"], k) for k in peer_stats)[1] if peer_stats else None
    ref_grads = grads_of(candidates[f"torchdeq {peer_best}"], x, f) if peer_best else None
    rows = []
    for name, layer in ours.items():
        layer.stats.reset()
        g = grads_of(candidates[f"ours {name}"], x, f)
        with torch.no_grad():
            y = layer(x)
        its = (layer.stats.forward_iterations, layer.stats.backward_iterations)
        converged = not layer.stats.failures
        rows.append(
            (
                "ours",
                name,
                times[f"ours {name}"],
                its,
                per_sample_residual(y, xd, f, args.h),
                converged,
                rel_diff(g, ref_grads) if ref_grads else float("nan"),
            )
        )
    for name, stats in peer_stats.items():
        g = grads_of(candidates[f"torchdeq {name}"], x, f)
        f_it = int(stats["f"]["nstep"].max())
        b_it = int(stats["b"]["nstep"].max()) if "b" in stats else -1
        converged = f_it < args.max_iter and 0 <= b_it < args.max_iter
        rows.append(
            (
                "torchdeq",
                name,
                times[f"torchdeq {name}"],
                (f_it, b_it),
                per_sample_residual(stats["y"], xd, f, args.h),
                converged,
                rel_diff(g, ref_grads),
            )
        )

    best = times[f"torchdeq {peer_best}"] if peer_best else float("nan")
    print(f"\none evaluation of F: {t_f * 1e3:.4f} ms\n")
    header = (
        f"{'impl':9} {'forward + backward solver':35} {'ms':>8} {'÷ peer best':>11} {'f-it':>5} {'b-it':>5} "
        f"{'× limit':>8} {'res max/batch':>17} {'grad Δ':>8}  ok"
    )
    print(header)
    print("-" * len(header))
    for impl, name, t, (fi, bi), (res_max, res_batch), converged, gdiff in rows:
        limit = t / ((fi + bi) * t_f) if fi + bi > 0 else float("nan")
        starred = (impl == "ours" and name == " + ".join(OUR_DEFAULT)) or (impl == "torchdeq" and name == peer_best)
        mark = "*" if starred else " "
        print(
            f"{impl:9} {name:34}{mark} {t * 1e3:8.3f} {t / best:11.2f} {fi:5d} {bi:5d} {limit:8.1f} "
            f"{res_max:8.1e}/{res_batch:8.1e} {gdiff:8.1e}  {'yes' if converged else 'NO'}"
        )
    print(
        "(* = our spec's default solver pair / torchdeq's fastest pair; auto + auto: the opt-in choice; f-it: "
        "evaluations of F (ours count a VJP/JVP as one; torchdeq: nstep, max over the batch); b-it: VJPs)"
    )

    our_default = times["ours " + " + ".join(OUR_DEFAULT)]
    our_auto = times["ours auto + auto"]
    resolved = " / ".join(ours["auto + auto"].stats.pairs)
    our_best_name = min((k for k in ours if k != "auto + auto"), key=lambda k: times[f"ours {k}"])
    our_best = times[f"ours {our_best_name}"]

    # --- memory: 10 vs 100 forward iterations ------------------------------------------------------------------
    mem_rows = []
    for fw in sorted(FORWARD_SOLVERS):
        sizes = []
        for n_iter in (10, 100):
            layer = our_layer(f, args, fw, OUR_DEFAULT[1])
            layer.solver.tol, layer.solver.max_iter = 0.0, n_iter  # run exactly n_iter evaluations

            def run(layer: ThetaStep = layer) -> None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    fwd_bwd(layer, x, f)()

            sizes.append((peak_saved_bytes(run), peak_device_bytes(run, device)))
        mem_rows.append((fw, sizes))

    # --- θ = 0 vs explicit -------------------------------------------------------------------------------------
    theta0 = our_layer(f, args, *OUR_DEFAULT, theta=0.0)
    explicit = ExplicitStep(f, h=args.h)
    t0 = time_interleaved(
        {"theta0": fwd_bwd(theta0, x, f), "explicit": fwd_bwd(explicit, x, f)},
        device,
        rounds=4 * args.rounds,
        number=4 * args.number,
    )

    print("\nautograd memory of fwd+bwd (peak saved-tensor bytes), forward max_iter 10 → 100, tol 0:")
    for fw, ((s10, d10), (s100, d100)) in mem_rows:
        line = f"  {fw:18} {s10 / 1024:9.1f} KiB → {s100 / 1024:9.1f} KiB   growth {s100 / s10:.2f}×"
        if d10 is not None:
            line += f"   cuda peak {d10 / 2**20:.2f} → {d100 / 2**20:.2f} MiB ({d100 / max(d10, 1):.2f}×)"
        print(line)

    worst_growth = max(s100 / s10 for _, ((s10, _), (s100, _)) in mem_rows)
    print("\nsummary (ratios; goals from the issue)")
    summary = [
        (f"ours spec default ({' + '.join(OUR_DEFAULT)}) ÷ torchdeq fastest ({peer_best})", our_default / best, 0.35),
        (f"ours auto (ran {resolved}) ÷ torchdeq fastest", our_auto / best, 0.35),
        (f"ours fastest ({our_best_name}) ÷ torchdeq fastest", our_best / best, 0.5),
        ("autograd memory, 100 ÷ 10 forward iterations (worst solver)", worst_growth, 1.1),
        ("θ=0 layer ÷ explicit layer (fwd+bwd)", t0["theta0"] / t0["explicit"], 1.05),
    ]
    for label, ratio, goal in summary:
        print(f"  {label:72} {ratio:6.2f}   goal ≤ {goal:<4}  {'PASS' if ratio <= goal else 'MISS'}")
    print(
        f"  (explicit layer fwd+bwd {t0['explicit'] * 1e3:.3f} ms, θ=0 layer {t0['theta0'] * 1e3:.3f} ms; "
        f"torchdeq fastest {best * 1e3:.3f} ms)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
