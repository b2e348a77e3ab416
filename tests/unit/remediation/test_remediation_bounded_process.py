"""bounded_process with real processes: a cancelled or timed-out handler loses its whole process group."""

import os
import sys
import threading
import time

import psutil

from ggdefender.remediation.bounded_process import group_members, run_argv

# the handler forks a child; both write their pid to a marker file and sleep; the child ignores SIGTERM
HANDLER = r"""
import os, signal, sys, time
d = sys.argv[1]
if os.fork() == 0:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    open(os.path.join(d, "child"), "w").write(str(os.getpid()))
    time.sleep(600); os._exit(0)
open(os.path.join(d, "handler"), "w").write(str(os.getpid()))
time.sleep(600)
"""


def _pids(tmp_path, deadline=30.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        files = [tmp_path / "handler", tmp_path / "child"]
        if all(f.exists() and f.read_text() for f in files):
            return [int(f.read_text()) for f in files]
        time.sleep(0.05)
    raise TimeoutError("the handler and its child never started")


def _alive(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_cancel_ends_the_handler_and_its_child_within_the_grace_period(tmp_path):
    cancel = threading.Event()
    out = {}
    runner = threading.Thread(target=lambda: out.update(res=run_argv(
        [sys.executable, "-c", HANDLER, str(tmp_path)], timeout=600, kill_grace=1.0, cancel=cancel)))
    runner.start()
    handler, child = _pids(tmp_path)
    assert os.getpgid(child) == handler  # its own session: the child is in the handler's group
    cancel.set()
    runner.join(30)
    assert not runner.is_alive()
    res = out["res"]
    assert res.cancelled and not res.timed_out and res.returncode is None
    # the child ignored SIGTERM: it was SIGKILLed after the grace period, and nothing of the group is left
    assert not _alive(handler) and not _alive(child) and group_members(handler) == []


def test_timeout_ends_the_whole_group_too(tmp_path):
    res = run_argv([sys.executable, "-c", HANDLER, str(tmp_path)], timeout=5, kill_grace=0.5)
    handler, child = _pids(tmp_path, deadline=1)
    assert res.timed_out and not res.cancelled
    assert not _alive(handler) and not _alive(child)


def test_without_cancel_a_normal_run_is_unchanged():
    res = run_argv([sys.executable, "-c", "print('ok')"], timeout=30, cancel=threading.Event())
    assert res.returncode == 0 and res.stdout.strip() == "ok" and not res.cancelled
