"""Signal a set of already-vetted processes: the requested signal, a grace period, then SIGKILL."""

from __future__ import annotations

import signal
import time
from typing import TYPE_CHECKING, Callable, Iterable

from .. import process_library
from .base import Context, Failed

if TYPE_CHECKING:
    import psutil


def describe(procs: Iterable[psutil.Process]) -> str:
    return ",".join(f"{p.pid}({_name(p)})" for p in procs)


def _name(proc: "psutil.Process") -> str:
    psutil = process_library.require()
    try:
        return proc.name()
    except psutil.Error:
        return "?"


def terminate(procs: list, sig: signal.Signals, grace: float, ctx: Context, escalate: bool = True) -> dict:
    """Send `sig`, wait up to `grace` seconds, SIGKILL survivors (unless sig already was SIGKILL).

    psutil.Process remembers each process's start time, so a pid recycled in the meantime is never hit.
    Returns short facts for statusDetails; raises Failed when something is still alive at the deadline.
    """
    psutil = process_library.require()
    signalled, gone_before = [], []
    for proc in procs:
        try:
            proc.send_signal(sig)
            signalled.append(proc)
        except psutil.NoSuchProcess:
            gone_before.append(proc)
        except psutil.AccessDenied as exc:
            raise Failed(f"permission denied signalling pid {proc.pid}: {exc}") from None
    wait = min(grace, ctx.remaining())
    gone, alive = _wait(signalled, wait)
    killed = []
    if not escalate:  # e.g. SIGHUP to make a daemon reload: survivors are expected
        return {"signal": sig.name, "signalled": describe(signalled) or "none",
                "exited": describe(gone) or "none"}
    if alive and sig != signal.SIGKILL:
        for proc in alive:
            try:
                proc.kill()
                killed.append(proc)
            except psutil.NoSuchProcess:
                pass
        _, alive = _wait(alive, max(0.5, min(5.0, ctx.remaining())))
    facts = {"signal": sig.name, "signalled": describe(signalled) or "none"}
    if killed:
        facts["killedAfterGrace"] = describe(killed)
    if alive:
        raise Failed(f"still running after {sig.name} and SIGKILL: {describe(alive)}", facts)
    return facts


def _running(proc: "psutil.Process") -> bool:
    """Alive and not a zombie: a dead process whose parent has not reaped it yet no longer runs or listens."""
    psutil = process_library.require()
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait(procs: list, timeout: float) -> tuple:
    """(gone, alive) after waiting up to timeout for procs to end (psutil.wait_procs counts zombies as alive)."""
    deadline = time.monotonic() + timeout
    alive = list(procs)
    while alive:
        alive = [p for p in alive if _running(p)]
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    return [p for p in procs if p not in alive], alive


def wait_until(predicate: Callable[[], bool], ctx: Context, poll: float = 0.1, limit: float = float("inf")) -> bool:
    """Poll predicate until true, the operation's deadline or `limit` seconds; returns the last value."""
    end = time.monotonic() + limit
    while True:
        if predicate():
            return True
        left = min(ctx.remaining(), end - time.monotonic())
        if left <= 0:
            return False
        time.sleep(min(poll, left))
