"""Training checkpoints (``evaluation.checkpoints``): atomic writes (a crash mid-save leaves the previous checkpoint
whole), another spec's checkpoint refused, pruning, and a job stopped mid-training and run again ending with the
same metrics, to the bit, as one that was never stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest
import torch

from core.metrics import is_timing
from core.spec import JobSpec
from evaluation.checkpoints import Checkpointer, CheckpointRefused, checkpoint_name, default_every
from evaluation.runner import JobStopped, run_job

REPO = Path(__file__).resolve().parents[2]


def state_of(epoch: int, size: int = 16) -> dict:
    return {"epoch": epoch, "weights": torch.full((size,), float(epoch)), "log": {"loss": 1.0 / epoch}}


def test_save_keeps_the_newest_two_and_a_finished_job_only_its_final_one(tmp_path: Path) -> None:
    ckpt = Checkpointer(tmp_path, "a" * 64, every=1)
    for epoch in range(1, 6):
        ckpt.save(epoch, state_of(epoch))
    assert [e for e, _ in ckpt.files()] == [5, 4]
    loaded = Checkpointer(tmp_path, "a" * 64, every=1).load()
    assert torch.equal(loaded["weights"], torch.full((16,), 5.0)) and loaded["log"] == {"loss": 0.2}
    kept = ckpt.prune(final=True)
    assert kept == [tmp_path / checkpoint_name(5)] and sorted(p.name for p in tmp_path.iterdir()) == [kept[0].name]


def test_due_every_n_epochs_and_the_last() -> None:
    ckpt = Checkpointer(Path("unused"), "h", every=4)
    assert [e for e in range(1, 11) if ckpt.due(e, 10)] == [4, 8, 10]
    assert default_every(5) == 1 and default_every(100) == 10


def test_a_failed_write_leaves_the_previous_checkpoint_intact(tmp_path: Path) -> None:
    """torch.save fails half-way (an unpicklable object after a large tensor has gone to the file): nothing appears
    under a final name, the temporary file is gone, the previous checkpoint loads."""
    ckpt = Checkpointer(tmp_path, "a" * 64, every=1)
    ckpt.save(1, state_of(1))
    with pytest.raises(Exception, match="(?i)pickle|lambda"):
        ckpt.save(2, {**state_of(2, size=1 << 20), "broken": lambda: None})
    assert sorted(p.name for p in tmp_path.iterdir()) == [checkpoint_name(1)]
    assert Checkpointer(tmp_path, "a" * 64, every=1).load()["epoch"] == 1


SAVER = textwrap.dedent(
    """
    import sys, torch
    from pathlib import Path
    from evaluation.checkpoints import Checkpointer
    ckpt = Checkpointer(Path(sys.argv[1]), "a" * 64, every=1, keep=3)
    for epoch in range(1, 1000):
        print("writing", epoch, flush=True)
        ckpt.save(epoch, {"epoch": epoch, "weights": torch.full((4 << 20,), float(epoch))})  # 16 MB
    """
)


def test_sigkill_during_saves_never_leaves_a_partial_checkpoint(tmp_path: Path) -> None:
    """A real process saving 16 MB checkpoints in a loop is SIGKILLed mid-write: every file under a final name
    loads whole, the newest is what ``load()`` resumes from, and a leftover temporary file is never loaded."""
    directory = tmp_path / "ckpt"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", SAVER, str(directory)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        for line in proc.stdout:
            if line.strip() == "writing 4":
                break
        time.sleep(0.02)  # inside torch.save / fsync of epoch 4 most of the time
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    ckpt = Checkpointer(directory, "a" * 64, every=1, keep=3)
    files = ckpt.files()
    assert len(files) >= 3
    for epoch, path in files:
        payload = torch.load(path, weights_only=True)
        assert torch.equal(payload["state"]["weights"], torch.full((4 << 20,), float(epoch)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is skipped or refused
        assert ckpt.load()["epoch"] == files[0][0] == ckpt.resumed_from
    ckpt.prune(final=True)
    assert [p.name for p in directory.iterdir()] == [checkpoint_name(files[0][0])]  # temporary files gone too


def test_a_checkpoint_of_another_spec_is_refused_and_the_job_starts_cleanly(tmp_path: Path) -> None:
    Checkpointer(tmp_path, "a" * 64, every=1).save(7, state_of(7))
    ours = Checkpointer(tmp_path, "b" * 64, every=1)
    with pytest.warns(CheckpointRefused, match="refused .*saved for spec aaaaaaaaaaaa"):
        assert ours.load() is None
    assert ours.resumed_from is None and len(ours.refused) == 1
    assert [p.name for p in tmp_path.iterdir()] == [checkpoint_name(7) + ".refused"]  # kept aside, not deleted
    ours.save(1, state_of(1))
    assert Checkpointer(tmp_path, "b" * 64, every=1).load()["epoch"] == 1  # never offered again
    # a foreign one newer than ours: refused too, and ours, older, is resumed from
    Checkpointer(tmp_path, "a" * 64, every=1).save(9, state_of(9))
    with pytest.warns(CheckpointRefused, match="epoch-000009.pt refused"):
        assert ours.load()["epoch"] == 1 and ours.resumed_from == 1


def test_an_unreadable_newest_checkpoint_falls_back_to_the_one_before(tmp_path: Path) -> None:
    ckpt = Checkpointer(tmp_path, "a" * 64, every=1)
    ckpt.save(1, state_of(1))
    newest = ckpt.save(2, state_of(2))
    newest.write_bytes(newest.read_bytes()[:100])  # a disk that lied about the write
    with pytest.warns(CheckpointRefused, match="epoch-000002.pt skipped"):
        assert ckpt.load()["epoch"] == 1
    assert ckpt.resumed_from == 1


# ------------------------------------------------------------------------------------------------ resume via run_job
def resumable_spec(family: dict, **train) -> JobSpec:
    return JobSpec.model_validate(
        {
            "name": "resume",
            "dataset": {"name": "spirals", "n_train": 60, "n_test": 40},
            "model": family,
            "train": {"epochs": 9, "lr": 0.02, "batch_size": 16, "checkpoint_every": 3, **train},
            "evaluate": {
                "gaussian": {"sigmas": [0.0, 0.1], "repeats": 2},
                "pgd": {"norm": ["Linf"], "eps": [0.05], "steps": 5},
                "certified": {"eps": [0.05]},
            },
        }
    )


def timeless(metrics: dict[str, float]) -> dict[str, float]:
    """The results, without the times and throughputs (which differ between any two runs)."""
    return {k: v for k, v in metrics.items() if not is_timing(k)}


@pytest.mark.parametrize(
    ("family", "train"),
    [
        # R_rnd draws its noise from the training generator: its state must come back too
        ({"family": "explicit", "width": 8, "depth": 3, "h": 0.2}, {"regularizers": {"stochastic": {"sigma": 0.1}}}),
        # solver diagnostics accumulate over the whole training (solver_train_*): the totals are in the checkpoint
        ({"family": "implicit", "width": 6, "depth": 2, "h": 0.3, "theta": 0.5}, {"optimizer": "sgd"}),
        # the schedule steps per batch: its state (and the warm-up's) comes back, mid-schedule
        (
            {"family": "explicit", "width": 8, "depth": 3, "h": 0.2},
            {
                "optimizer": "sgd",
                "nesterov": True,
                "schedule": {"kind": "cosine", "warmup_epochs": 2},
                "clip_grad_norm": 1.0,
                "label_smoothing": 0.1,
            },
        ),
        # certified training: the margin √2·ε·L follows the restored weights; one-cycle and AdamW states
        (
            {"family": "lipschitz", "width": 8, "hidden": 8, "depth": 2},
            {
                "optimizer": "adamw",
                "weight_decay": 0.01,
                "schedule": {"kind": "one_cycle"},
                "loss": "multi_margin",
                "margin": {"eps": 0.1},
            },
        ),
    ],
    ids=["explicit-stochastic", "implicit-sgd", "cosine-warmup-nesterov", "lipschitz-margin-one-cycle"],
)
def test_a_job_stopped_mid_training_resumes_to_the_same_metrics(tmp_path: Path, family: dict, train: dict) -> None:
    spec = resumable_spec(family, **train)
    reference = run_job(spec)

    events: list[dict] = []
    with pytest.raises(JobStopped):
        run_job(spec, progress=events.append, should_stop=lambda: events[-1].get("epoch") == 7,
                checkpoint_dir=tmp_path)  # fmt: skip
    assert [e for e, _ in Checkpointer(tmp_path, spec.spec_hash(), 3).files()] == [6, 3]

    events.clear()
    resumed = run_job(spec, progress=events.append, checkpoint_dir=tmp_path)
    train_events = [e for e in events if e.get("phase") == "train"]
    assert [e["epoch"] for e in train_events] == [6, 7, 8, 9]
    assert all(e["resumed_from"] == 6 for e in train_events)
    assert timeless(resumed.metrics) == timeless(reference.metrics)  # ==: to the last bit
    ref_state, state = reference.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(ref_state[k], state[k]) for k in ref_state)
    assert resumed.info["checkpoints"] == {"every": 3, "resumed_from": 6, "refused": [], "kept": [checkpoint_name(9)]}
    assert "checkpoints" not in reference.info and reference.info["hardware"]["device"] == "cpu"


def test_a_finished_job_run_again_only_evaluates(tmp_path: Path) -> None:
    """The final checkpoint is kept: a job whose worker died while evaluating trains nothing when run again."""
    spec = resumable_spec({"family": "explicit", "width": 8, "depth": 3, "h": 0.2}, epochs=4, checkpoint_every=None)
    first = run_job(spec, checkpoint_dir=tmp_path)
    assert first.info["checkpoints"] == {"every": 1, "resumed_from": None, "refused": [], "kept": [checkpoint_name(4)]}
    events: list[dict] = []
    again = run_job(spec, progress=events.append, checkpoint_dir=tmp_path)
    assert [e["epoch"] for e in events if e.get("phase") == "train"] == [4]
    assert timeless(again.metrics) == timeless(first.metrics)


@pytest.mark.parametrize("value", [0, -1, "5", 2.0, True])
def test_a_bad_checkpoint_interval_names_the_field(value) -> None:
    from pydantic import ValidationError

    data = resumable_spec({"family": "explicit", "width": 8, "depth": 3, "h": 0.2}).model_dump(mode="json")
    data["train"]["checkpoint_every"] = value
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate(data)
    assert [e["loc"] for e in info.value.errors()] == [("train", "checkpoint_every")]


def test_the_interval_leaves_the_hash_of_specs_without_it_alone() -> None:
    from core.spec.base import canonical_dump

    family = {"family": "explicit", "width": 8, "depth": 3, "h": 0.2}
    unset, every = resumable_spec(family, checkpoint_every=None), resumable_spec(family, checkpoint_every=3)
    assert "checkpoint_every" not in canonical_dump(unset)["train"]
    assert canonical_dump(every)["train"]["checkpoint_every"] == 3 and unset.spec_hash() != every.spec_hash()
