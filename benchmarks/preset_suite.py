"""Per shipped classification preset: the cheap PGD-CE figure, the strong suite's figure and their gap.

Each preset (``examples/*.json`` with task classification; a sweep preset: its base point) is run as shipped
(trained, then evaluated with its own ``evaluate.pgd`` and ``evaluate.autoattack``), one at a time, one torch
thread; its ``result.json`` goes to ``OUT/<preset>/``. Presets already measured there are read back, not run again,
so the measurement can be spread over several calls. The table: per preset, threat model and ε, PGD-CE's accuracy,
the suite's, the gap (PGD − suite, points) and the published headline (``robust_<norm>_acc@ε``, the per-sample
minimum over every attack: never above the suite's figure), then the reliability flags and the attack seconds.

    nice -n 10 .venv/bin/python benchmarks/preset_suite.py --out runs/presets --budget-minutes 40
    .venv/bin/python benchmarks/preset_suite.py --out runs/presets --no-run      # the table only
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: measured first: the issue's case (1-Lipschitz digits), then the cheap spirals, then the other digits
ORDER = (
    "digits-lipschitz", "spirals-explicit", "spirals-lipschitz", "spirals-hamiltonian", "spirals-implicit",
    "spirals-ode", "spirals-theta-sweep", "digits-explicit", "digits-hamiltonian", "digits-implicit",
    "digits-explicit-conv",
)  # fmt: skip


def classification_presets() -> list[str]:
    """Every shipped classification preset that runs on CPU (``"device": "cuda"`` presets are for GPU workers)."""
    from core.spec import JobSpec
    from evaluation.sweep import split_sweep

    names = []
    for path in sorted((ROOT / "examples").glob("*.json")):
        base, _ = split_sweep(json.loads(path.read_text()))
        spec = JobSpec.model_validate(base)
        if spec.task == "classification" and spec.device != "cuda":
            names.append(path.stem)
    return sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def run_preset(name: str, out: Path) -> None:
    import torch

    from core.spec import JobSpec
    from evaluation.runner import run_job
    from evaluation.sweep import split_sweep

    torch.set_num_threads(1)
    base, _ = split_sweep(json.loads((ROOT / "examples" / f"{name}.json").read_text()))
    start = time.perf_counter()
    run_job(JobSpec.model_validate(base), out / name)
    print(f"{name}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)


def table(names: list[str], out: Path) -> str:
    rows = [
        "| preset | threat model | ε | PGD-CE | suite | gap (points) | published (best known) | attack seconds "
        "(suite / PGD) | flags |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        path = out / name / "result.json"
        if not path.exists():
            rows.append(f"| `{name}` | not measured | | | | | | | |")
            continue
        result = json.loads(path.read_text())
        m, info = result["metrics"], result["info"]
        flags = ", ".join(f["flag"] for f in info.get("reliability", {}).get("flags", [])) or "none"
        secs = info.get("attack_seconds", {})
        timing = f"{secs.get('autoattack', float('nan')):.0f} / {secs.get('pgd', float('nan')):.0f}"
        for norm in ("linf", "l2"):
            levels = sorted((float(k.split("@")[1]), k.split("@")[1]) for k in m if k.startswith(f"pgd_{norm}_acc@"))
            for _, eps in levels:
                pgd, aa, best = (m.get(f"{kind}_{norm}_acc@{eps}") for kind in ("pgd", "autoattack", "robust"))
                gap = f"{100 * (pgd - aa):+.1f}" if pgd is not None and aa is not None else "—"
                cells = [f"{100 * v:.1f}" if v is not None else "—" for v in (pgd, aa, best)]
                threat = "L∞" if norm == "linf" else "L2"
                rows.append(f"| `{name}` | {threat} | {eps} | {' | '.join(cells[:2])} | {gap} | {cells[2]} | "
                            f"{timing} | {flags} |")  # fmt: skip
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "presets")
    parser.add_argument("--budget-minutes", type=float, default=40.0, help="start no preset after this long")
    parser.add_argument("--no-run", action="store_true", help="print the table of what is measured already")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child process: run this preset only
    parser.add_argument("presets", nargs="*", help="only these (default: every CPU classification preset)")
    args = parser.parse_args()
    names = args.presets or classification_presets()
    start = time.perf_counter()
    if args.one:
        run_preset(args.one, args.out)
        return
    for name in names:
        if args.no_run or (args.out / name / "result.json").exists():
            continue
        left = 60 * args.budget_minutes - (time.perf_counter() - start)
        if left <= 0:
            print(f"{name}: not run, the {args.budget_minutes:g}-minute budget is spent", file=sys.stderr)
            continue
        try:  # a child process per preset, stopped when the budget runs out
            subprocess.run([sys.executable, __file__, "--out", str(args.out), "--one", name], timeout=left, check=True)
        except subprocess.TimeoutExpired:
            print(f"{name}: stopped unfinished, the {args.budget_minutes:g}-minute budget ran out", file=sys.stderr)
    print(table(names, args.out))


if __name__ == "__main__":
    main()
