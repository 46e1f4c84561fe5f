"""Benchmark of the convolution norm bound (models/conv_norms.py): time and tightness (a script, not a test).

    python benchmarks/bench_conv_bound.py            # 1 CPU thread, as a worker core would run it
    python benchmarks/bench_conv_bound.py --quick    # fewer kernels and repeats

Reported, for seeded Gaussian kernels (scaled by 1/√(C·k²), as at initialisation):
  * small operators (≤ 8 channels on ≤ 8×8, where the exact norm is computed from the operator's matrix):
    bound ÷ exact for Gram iteration alone (what is used above the exact size) — worst and median over the kernels
    and paddings — and the time of both; the bound must never be below 1;
  * medium operators (1–4 channels on 16×16 and 32×32, exact still computable, slowly): bound ÷ exact;
  * 64 channels on 32×32, 3×3 (the issue's size; the matrix, 65 536², cannot be formed): bound ÷ a 100-step power
    iteration of conv_transpose2d(conv2d(·)) on the true zero-padded convolution (a *lower* bound of the norm:
    the ratio must be ≥ 1, and how far above 1 it is bounds the bound's slack from above), and the bound's time
    (goal ≤ 0.1 s); also a stride-2 downsampling convolution 64 → 128 channels.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.conv_norms import (  # noqa: E402
    EXACT_MAX_ENTRIES,
    circular_grid,
    conv_norm_upper_bound,
    conv_operator_norm,
    conv_output_size,
    polyphase_kernel,
)
from models.gram_iteration import circular_gram_bound  # noqa: E402


def kernel(c_out: int, c_in: int, k: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(c_out, c_in, k, k, dtype=torch.float64, generator=gen) / (c_in * k * k) ** 0.5


def timed(fn, *args, repeats: int = 1) -> tuple[float, float, object]:
    """(median wall seconds, median CPU seconds of this process, last value) over ``repeats`` calls of ``fn(*args)``
    after one warm-up. On a shared machine the CPU time is what the call costs; the wall time adds the waits."""
    value = fn(*args)
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        value = fn(*args)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu), value


def power_iteration(weight: torch.Tensor, side: int, stride: int, padding: int, steps: int, seed: int) -> float:
    """‖conv‖ from below: √ of the Rayleigh quotient of convᵀconv after ``steps`` power steps (float64)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, weight.shape[1], side, side, dtype=torch.float64, generator=gen)
    out = conv_output_size(side, weight.shape[-1], stride, padding)
    extra = side - ((out - 1) * stride - 2 * padding + weight.shape[-1])  # output_padding that restores the side
    with torch.no_grad():
        for _ in range(steps):
            y = torch.nn.functional.conv2d(x, weight, stride=stride, padding=padding)
            x = torch.nn.functional.conv_transpose2d(y, weight, stride=stride, padding=padding, output_padding=extra)
            x = x / x.norm()
        return float(torch.nn.functional.conv2d(x, weight, stride=stride, padding=padding).norm())


def row(label: str, ratios: list[float], t_exact: list[float], t_bound: list[float]) -> str:
    return (f"{label} {max(ratios):7.4f} {statistics.median(ratios):7.4f} {min(ratios):7.4f} "
            f"{statistics.median(t_exact) * 1e3:9.2f} {statistics.median(t_bound) * 1e3:9.2f}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--kernels", type=int, default=5, help="seeded kernels per configuration")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.kernels, args.repeats = 2, 3
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    print(f"# convolution norm bound — torch {torch.__version__}, {args.threads} thread(s); exact up to "
          f"{EXACT_MAX_ENTRIES} matrix entries, Gram iteration above")  # fmt: skip

    print("\nsmall operators: Gram-iteration bound ÷ exact norm (padding k//2, 0 and k−1; stride 1 and 2)")
    print(f"{'C_in→C_out':>10} {'k':>2} {'n':>3} {'s':>2} {'worst':>7} {'median':>7} {'min':>7}"
          f" {'exact ms':>9} {'bound ms':>9}")  # fmt: skip
    small = [((1, 1), 1, 8, 1), ((3, 8), 1, 8, 1), ((1, 4), 3, 8, 1), ((8, 8), 3, 8, 1), ((8, 4), 3, 8, 2),
             ((2, 3), 5, 8, 1), ((8, 8), 5, 8, 1), ((4, 4), 3, 4, 1)]  # fmt: skip
    for (c_in, c_out), k, n, s in small:
        ratios, t_exact, t_bound = [], [], []
        for _ in range(args.kernels):
            w = kernel(c_out, c_in, k, gen)
            for pad in sorted({k // 2, 0, k - 1}):
                _, te, exact = timed(conv_operator_norm, w, n, s, pad)
                _, tb, bound = timed(conv_norm_upper_bound, w, n, s, pad)
                ratios.append(bound / exact)
                t_exact.append(te)
                t_bound.append(tb)
        print(row(f"{c_in:>4}→{c_out:<5} {k:>2} {n:>3} {s:>2}", ratios, t_exact, t_bound))

    print("\nmedium operators ('same' padding): Gram-iteration bound ÷ exact norm")
    print(f"{'C_in→C_out':>10} {'k':>2} {'n':>3} {'worst':>7} {'median':>7} {'min':>7} {'exact ms':>9} {'bound ms':>9}")
    for (c_in, c_out), k, n in [((1, 1), 3, 16), ((2, 2), 3, 16), ((1, 2), 3, 32), ((1, 1), 5, 32)]:
        ratios, t_exact, t_bound = [], [], []
        for _ in range(max(1, args.kernels // 2)):
            w = kernel(c_out, c_in, k, gen)
            _, te, exact = timed(conv_operator_norm, w, n)
            _, tb, bound = timed(conv_norm_upper_bound, w, n)
            ratios.append(bound / exact)
            t_exact.append(te)
            t_bound.append(tb)
        print(row(f"{c_in:>4}→{c_out:<5} {k:>2} {n:>3}", ratios, t_exact, t_bound))

    print("\nlarge operators: bound ÷ 100-step power iteration of the true zero-padded convolution (a lower bound)")
    print(f"{'C_in→C_out':>10} {'k':>2} {'n':>3} {'s':>2} {'ratio':>7} {'bound ms':>9} {'(wall)':>7} {'steps':>5}"
          f" {'certified slack':>15} {'power ms':>9}")  # fmt: skip
    for (c_in, c_out), k, n, s in [((64, 64), 3, 32, 1), ((64, 128), 3, 32, 2), ((64, 64), 1, 32, 1)]:
        for _ in range(max(1, args.kernels // 2)):
            w = kernel(c_out, c_in, k, gen)
            pad = k // 2
            wall, cpu, bound = timed(conv_norm_upper_bound, w, n, s, pad, repeats=args.repeats)
            phases, lo, hi = polyphase_kernel(w, s, pad)
            gram = circular_gram_bound(phases, circular_grid(-(-n // s), conv_output_size(n, k, s, pad), lo, hi))
            _, tp, power = timed(power_iteration, w, n, s, pad, 100, 0)
            print(f"{c_in:>4}→{c_out:<5} {k:>2} {n:>3} {s:>2} {bound / power:7.4f} {cpu * 1e3:9.1f} {wall * 1e3:7.1f} "
                  f"{gram.steps:>5} {gram.upper / gram.lower - 1:15.1e} {tp * 1e3:9.0f}")  # fmt: skip
    print(
        "(ms: CPU time of this process, median; (wall): wall-clock, which on a shared machine adds waiting. "
        "steps: Gram squarings; certified slack: the bound ÷ a lower bound of the circular convolution's norm, "
        "− 1, i.e. how far Gram iteration stopped from that norm)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
