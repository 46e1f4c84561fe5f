"""The processes ``robustlab up`` starts, and stopping all of them on any signal that stops it.

``up`` serves the API in its own process (uvicorn) and runs the Celery worker as a child in a process group of its
own (the worker's prefork children are in it too). Whatever stops ``up`` — Ctrl-C (SIGINT), ``kill`` (SIGTERM),
a closed terminal (SIGHUP), SIGQUIT — ends in :func:`stop_group`: SIGTERM to the whole group (Celery's warm
shutdown), then SIGKILL to what is left after the grace period. uvicorn handles SIGINT and SIGTERM itself and,
once the server has shut down, raises the signal again with the handlers it found: :func:`exit_on_signals`
installs handlers that turn every one of them into :class:`SystemExit`, so ``up``'s ``finally`` runs (the default
SIGTERM action would end the process on the spot and leave the worker running). If ``up`` itself is killed with
SIGKILL, the worker gets SIGTERM from the kernel (``PR_SET_PDEATHSIG``, Linux).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT") if hasattr(signal, n))
GRACE_SECONDS = 15.0  # Celery's warm shutdown: the job running now may finish its current step


def _term_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies, even by SIGKILL (Linux; elsewhere nothing)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start_group(command: list[str], **popen) -> subprocess.Popen:
    """``command`` in a new session (its own process group, which its children join); ``popen``: more
    ``subprocess.Popen`` arguments (``env``, ``stdout``, …)."""
    return subprocess.Popen(command, start_new_session=True, preexec_fn=_term_with_parent, **popen)


def stop_group(proc: subprocess.Popen, grace: float = GRACE_SECONDS) -> None:
    """SIGTERM to ``proc``'s process group; SIGKILL to the group if any of it is left after ``grace`` seconds.
    Stop signals wait until it is done (a second Ctrl-C cannot cut it short and leave the group running)."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while _group_alive(proc):  # the leader may be gone while its children still run
            if time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.1)
        proc.wait()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _group_alive(proc: subprocess.Popen) -> bool:
    proc.poll()  # reap the leader once it exits (a zombie still counts as a member of the group)
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return False
    return True


@contextmanager
def exit_on_signals() -> Iterator[None]:
    """Within the block SIGINT and SIGTERM raise ``SystemExit(128 + signal)``, and SIGHUP / SIGQUIT are turned into
    a SIGTERM (then the old handlers are back)."""

    def leave(signum: int, _frame) -> None:
        if signum not in (signal.SIGINT, signal.SIGTERM):
            # SIGHUP / SIGQUIT become a SIGTERM: while uvicorn serves, its own SIGTERM handler shuts it down
            # gracefully (a SystemExit raised inside its event loop can hang the shutdown); otherwise this handler
            # runs again for the SIGTERM and leaves.
            signal.raise_signal(signal.SIGTERM)
            return
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, leave) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
