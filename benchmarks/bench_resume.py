"""Benchmark: what resuming a job costs (a script, not a test; issue 14).

    python benchmarks/bench_resume.py            # 3 rounds (~2 min on 2 shared cores)
    python benchmarks/bench_resume.py --quick    # 1 round

The job: ``examples/digits-explicit.json``'s data, model and training (1000 digits, explicit ResNet of depth 10,
Adam, 40 epochs), at width 64 and batches of 50 (``--width``, ``--batch``: 20 batches per epoch), with a light
evaluation (clean + Gaussian noise), checkpoints every ``--every`` epochs (default 4 = epochs // 10, what a worker
does when the spec does not say). Three runs per round, each a fresh ``evaluation.runner.run_job`` in this process:

* **plain**: no checkpoints at all;
* **uninterrupted**: checkpoints every ``every`` epochs (the worker's job when nothing goes wrong);
* **interrupted + resumed**: the same, stopped at the end of epoch ``stop`` (default ``2·every + every − 1`` = 11:
  one epoch short of a checkpoint, the worst case: ``every − 1`` epochs are lost), then run again: it loads the
  checkpoint of epoch ``2·every`` and trains the rest. Its time is the two runs together.

Goal (issue 14): resumed total ≤ uninterrupted + one checkpoint interval (``every`` × the uninterrupted run's
seconds per epoch) + 10 % of uninterrupted. Printed: the three times, the checkpoint overhead (uninterrupted ÷
plain), the budget and the ratio resumed ÷ budget (≤ 1 meets the goal). What is *not* in it: a real worker's loss
detection (lease expiry, ``ROBUSTLAB_LEASE_SECONDS``, 60 s by default) and its start-up; those are the service's,
the same with or without checkpoints. Rounds interleave the three runs; medians over rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.metrics import is_timing  # noqa: E402
from core.spec import JobSpec  # noqa: E402
from evaluation.checkpoints import Checkpointer  # noqa: E402
from evaluation.runner import JobStopped, run_job  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def job_spec(every: int, device: str, width: int, batch: int) -> JobSpec:
    data = json.loads((REPO / "examples" / "digits-explicit.json").read_text())
    data["name"] = "bench-resume"
    data["model"]["width"] = width
    data["train"]["batch_size"] = batch
    data["train"]["checkpoint_every"] = every
    data["evaluate"] = {"gaussian": {"sigmas": [0.0, 0.1], "repeats": 2}}
    data["device"] = device
    return JobSpec.model_validate(data)


def timed(fn) -> tuple[dict[str, float], object]:
    """``fn()``'s wall-clock and CPU seconds (this process; one torch thread: the CPU time hardly sees the other
    processes of a shared machine, the wall time does, and also sees the fsync of each checkpoint)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}, out


def one_round(spec: JobSpec, stop: int) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        plain_t, plain = timed(lambda: run_job(spec))
        full_t, full = timed(lambda: run_job(spec, checkpoint_dir=root / "full"))
        events: list[dict] = []

        def interrupted() -> None:
            try:
                run_job(spec, progress=events.append, checkpoint_dir=root / "resumed",
                        should_stop=lambda: events[-1].get("epoch") == stop)  # fmt: skip
            except JobStopped:
                return
            raise AssertionError("the run was not stopped")

        first_t, _ = timed(interrupted)
        second_t, resumed = timed(lambda: run_job(spec, checkpoint_dir=root / "resumed"))
        assert resumed.info["checkpoints"]["resumed_from"] == stop - stop % spec.train.checkpoint_every
        results = {k: v for k, v in plain.metrics.items() if not is_timing(k)}
        assert all(resumed.metrics[k] == v == full.metrics[k] for k, v in results.items()), "metrics differ"
        # one checkpoint alone: the final state saved again (write, fsync, rename) and loaded
        ckpt = Checkpointer(root / "full", full.info["spec_hash"], spec.train.checkpoint_every)
        state = ckpt.load()
        save_t, _ = timed(lambda: ckpt.save(spec.train.epochs + 1, state))
        load_t, _ = timed(ckpt.load)
        return {
            "plain": plain_t,
            "uninterrupted": full_t,
            "interrupted": first_t,
            "resumed": second_t,
            "resumed_total": {k: first_t[k] + second_t[k] for k in first_t},
            "epoch": {k: v / spec.train.epochs for k, v in plain_t.items()},  # a plain run's seconds per epoch
            "save": save_t,
            "load": load_t,
            "bytes": {"wall": float(ckpt.files()[0][1].stat().st_size)},
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (fixed for stable timings)")
    parser.add_argument("--every", type=int, default=4, help="epochs between two checkpoints")
    parser.add_argument("--stop", type=int, default=None, help="epoch the first run stops after (default 3·every−1)")
    parser.add_argument("--width", type=int, default=64, help="the ResNet's width (the example's is 32)")
    parser.add_argument("--batch", type=int, default=50, help="training batch size (the example's is 100)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one round")
    parser.add_argument("--json", action="store_true", help="also print every round's times as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    spec = job_spec(args.every, args.device, args.width, args.batch)
    stop = args.stop or 3 * args.every - 1
    rounds = 1 if args.quick else args.rounds
    run_job(spec.model_copy(update={"train": spec.train.model_copy(update={"epochs": 1})}))  # warm-up
    samples = [one_round(spec, stop) for _ in range(rounds)]
    if args.json:
        print(json.dumps(samples, indent=1))
    saves = len([e for e in range(1, spec.train.epochs + 1) if e % args.every == 0 or e == spec.train.epochs])
    print(f"job: digits-explicit model at width {args.width}, {spec.train.epochs} epochs of batches of {args.batch}, "
          f"checkpoint every {args.every} ({saves} saves), stopped after epoch {stop} (lost {stop % args.every} "
          f"epochs), {rounds} round(s), {args.threads} thread(s), device {args.device}; medians")  # fmt: skip
    kb = samples[0]["bytes"]["wall"] / 1e3
    ok = True
    for clock in ("wall", "cpu"):
        med = {k: statistics.median(s[k][clock] for s in samples) for k in samples[0] if clock in samples[0][k]}
        interval = args.every * med["epoch"]
        budget = med["uninterrupted"] * 1.1 + interval
        ratio = med["resumed_total"] / budget
        ok = ok and ratio <= 1
        print(f"  [{clock} seconds]")
        print(f"    plain (no checkpoints)      {med['plain']:7.2f}")
        overhead = med["uninterrupted"] / med["plain"]
        print(f"    uninterrupted (checkpoints) {med['uninterrupted']:7.2f}   = {overhead:.3f} × plain;"
              f" one checkpoint ({kb:.0f} kB): save {med['save'] * 1e3:.1f} ms, load "
              f"{med['load'] * 1e3:.1f} ms")  # fmt: skip
        print(f"    interrupted + resumed       {med['resumed_total']:7.2f}   ({med['interrupted']:.2f} + "
              f"{med['resumed']:.2f})")  # fmt: skip
        print(f"    budget = uninterrupted × 1.1 + one interval ({args.every} × {med['epoch']:.3f}) = {budget:.2f}")
        print(f"    ratio resumed / budget = {ratio:.3f}  (goal ≤ 1: {'met' if ratio <= 1 else 'MISSED'})")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
