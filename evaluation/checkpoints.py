"""Training checkpoints that a job resumes from after its worker was lost.

A :class:`Checkpointer` owns one directory (the worker's is ``artifacts_dir/<job id>/checkpoints``)::

    ckpt = Checkpointer(directory, spec_hash, every=10)
    state = ckpt.load()                # the newest state saved for this spec hash, or None (start from epoch 0)
    ...
    if ckpt.due(epoch, epochs):
        ckpt.save(epoch, state)        # atomic: a crash leaves the previous checkpoint intact
    ...
    ckpt.prune(final=True)             # the job finished: only the final checkpoint is kept

Each file, ``epoch-000010.pt``, is written by ``torch.save`` to a temporary name in the same directory, flushed and
``fsync``-ed, then renamed over its final name (``os.replace``, atomic on POSIX) and the directory entry synced: a
reader sees a whole checkpoint or none. :meth:`Checkpointer.save` keeps the newest ``keep`` (2); a finished job keeps
its final one only (the weights are also in ``model.safetensors``; the final checkpoint adds the optimiser, schedule
and RNG states, so the same training can be continued).

A checkpoint names the spec hash it was trained for. :meth:`Checkpointer.load` refuses one of another spec (a
:class:`CheckpointRefused` warning; the file is renamed ``*.refused``, kept, and never offered again), as it skips a
file that cannot be read (truncated by a full disk, not a checkpoint), and looks at the next older one; when none
is left the job starts cleanly from epoch 0. Files are read with ``torch.load(weights_only=True)``: tensors,
numbers, strings, lists and dicts only, never arbitrary pickled objects.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
import warnings
from pathlib import Path

import torch

from core.provenance import current_code

log = logging.getLogger(__name__)

FORMAT = 1  # of the payload {"format", "spec_hash", "epoch", "code", "state"}
_NAME = re.compile(r"^epoch-(\d{6,})\.pt$")


class CheckpointRefused(RuntimeWarning):
    """A checkpoint in the directory was not resumed from (another spec's, or unreadable)."""


def checkpoint_name(epoch: int) -> str:
    return f"epoch-{epoch:06d}.pt"


def default_every(epochs: int) -> int:
    """Epochs between two checkpoints when the spec leaves ``train.checkpoint_every`` unset: about ten per job."""
    return max(1, epochs // 10)


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class Checkpointer:
    """Saves and loads the training state of one job (one spec hash) in ``directory``, every ``every`` epochs.

    After :meth:`load`, :attr:`resumed_from` is the epoch of the state it returned (None: nothing resumed) and
    :attr:`refused` lists the files it would not resume from, with the reason.
    """

    def __init__(self, directory: Path, spec_hash: str, every: int, keep: int = 2) -> None:
        if every < 1 or keep < 1:
            raise ValueError(f"checkpoint every ≥ 1 epochs and keep ≥ 1 files, got every={every}, keep={keep}")
        self.directory = Path(directory)
        self.spec_hash, self.every, self.keep = spec_hash, every, keep
        self.resumed_from: int | None = None
        self.refused: list[str] = []

    # ------------------------------------------------------------------------------------------------ files
    def files(self) -> list[tuple[int, Path]]:
        """``(epoch, path)`` of the checkpoints in the directory, newest first."""
        if not self.directory.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.directory.iterdir() if (m := _NAME.match(p.name))]
        return sorted(found, reverse=True)

    def due(self, epoch: int, epochs: int) -> bool:
        """Whether a checkpoint is written after ``epoch`` of ``epochs``: every ``every`` epochs, and the last."""
        return epoch % self.every == 0 or epoch == epochs

    # ------------------------------------------------------------------------------------------------ load
    def load(self) -> dict | None:
        """The newest readable state saved for this spec hash (its epoch in :attr:`resumed_from`), or None.

        A checkpoint of another spec hash is refused and an unreadable one skipped (each renamed ``*.refused``, with
        a :class:`CheckpointRefused` warning), for the next older one; with none left, None: the job starts cleanly
        from epoch 0 rather than mixing two trainings.
        """
        self.resumed_from = None
        for epoch, path in self.files():
            try:
                payload = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:  # truncated, not a torch file, or holding objects weights_only refuses
                self._skip(path, f"unreadable: {type(exc).__name__}: {exc}")
                continue
            if not isinstance(payload, dict) or payload.get("format") != FORMAT or "state" not in payload:
                self._skip(path, "not a robustlab training checkpoint")
                continue
            if payload.get("spec_hash") != self.spec_hash:
                found = str(payload.get("spec_hash"))[:12]
                self._skip(path, f"saved for spec {found}…, this job is {self.spec_hash[:12]}…", refused=True)
                continue
            code = current_code().identity
            if payload.get("code") != code:
                log.warning("%s: checkpoint %s was written by code %s, resumed by %s", self.directory, path.name,
                            payload.get("code"), code)  # fmt: skip
            self.resumed_from = int(payload.get("epoch", epoch))
            log.info("%s: resuming from %s (epoch %d)", self.directory, path.name, self.resumed_from)
            return payload["state"]
        return None

    def _skip(self, path: Path, reason: str, refused: bool = False) -> None:
        """Warn (:class:`CheckpointRefused`, recorded in :attr:`refused`) and rename the file ``*.refused``: kept
        for a person to look at, never offered again."""
        message = f"checkpoint {path.name} {'refused' if refused else 'skipped'} ({reason})"
        self.refused.append(message)
        log.warning("%s: %s", self.directory, message)
        warnings.warn(message, CheckpointRefused, stacklevel=3)
        self._set_aside(path)

    @staticmethod
    def _set_aside(path: Path) -> None:
        try:
            path.replace(path.with_name(path.name + ".refused"))
        except OSError:
            pass

    # ------------------------------------------------------------------------------------------------ save
    def save(self, epoch: int, state: dict) -> Path:
        """Write ``state`` (after ``epoch``) atomically as ``epoch-<epoch>.pt``, then keep the newest ``keep``.
        Returns the checkpoint's path."""
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / checkpoint_name(epoch)
        payload = {
            "format": FORMAT,
            "spec_hash": self.spec_hash,
            "epoch": epoch,
            "code": current_code().identity,
            "state": state,
        }
        tmp = self.directory / f".{final.name}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            with open(tmp, "wb") as f:
                torch.save(payload, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(self.directory)
        self.prune(final=False)
        return final

    def prune(self, final: bool) -> list[Path]:
        """Delete old checkpoints: keep the newest ``keep`` (``final=False``, after each save) or only the newest,
        the final one (``final=True``: the job finished). Leftover temporary files of a crashed save go too.
        Returns the paths kept."""
        files = self.files()
        kept = files[: 1 if final else self.keep]
        for _, path in files[len(kept) :]:
            path.unlink(missing_ok=True)
        if self.directory.is_dir():
            for tmp in self.directory.glob(".epoch-*.tmp"):
                if final:  # a save in flight can only be this job's own, which has finished
                    tmp.unlink(missing_ok=True)
        return [path for _, path in kept]


__all__ = ["CheckpointRefused", "Checkpointer", "checkpoint_name", "default_every"]
