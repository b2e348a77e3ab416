"""Run an argv (never a shell) with a timeout and bounded output, draining both pipes concurrently.

This closes the Device Client's gaps: its stdout reader ran before its stderr reader (a child filling the
stderr pipe deadlocked it), it stopped reading after 1000 lines (the child died of SIGPIPE) and it waited
forever. Here each pipe has its own reader that keeps reading to EOF but only keeps the last `max_bytes`,
and the whole process group is terminated, then killed, when the timeout expires or the caller cancels
(`cancel` event: the job was cancelled). "Whole group" means every process still in it, not just the
leader: a child of the handler that outlives it is stopped too (one that leaves the group with setsid
escapes; that needs a cgroup, which we do not assume).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import signal
import subprocess
import threading
import time
from typing import IO, Any, Dict, Optional, Sequence

SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclasses.dataclass
class ProcessResult:
    returncode: Optional[int]  # None when it had to be killed after the timeout
    stdout: str  # the tail, at most max_bytes
    stderr: str
    stderr_lines: int
    timed_out: bool
    truncated: bool
    cancelled: bool = False  # stopped because the caller's cancel event was set


class _TailReader(threading.Thread):
    def __init__(self, stream: IO[bytes], max_bytes: int):
        super().__init__(daemon=True)
        self.stream = stream
        self.max_bytes = max_bytes
        self.chunks: collections.deque = collections.deque()
        self.size = 0
        self.total = 0
        self.newlines = 0
        self.last_byte = b""

    def run(self) -> None:
        try:
            while True:
                chunk = self.stream.read1(65536) if hasattr(self.stream, "read1") else self.stream.read(65536)
                if not chunk:
                    break
                self.total += len(chunk)
                self.newlines += chunk.count(b"\n")
                self.last_byte = chunk[-1:]
                self.chunks.append(chunk)
                self.size += len(chunk)
                while self.size - len(self.chunks[0]) >= self.max_bytes:
                    self.size -= len(self.chunks.popleft())
        except (OSError, ValueError):
            pass

    def text(self) -> str:
        data = b"".join(self.chunks)[-self.max_bytes:] if self.max_bytes else b""
        return data.decode("utf-8", errors="replace")

    def lines(self) -> int:
        return self.newlines + (1 if self.total and self.last_byte != b"\n" else 0)


def run_argv(
    argv: Sequence[str],
    *,
    timeout: float,
    max_bytes: int = 4096,
    cwd: Optional[str] = None,
    env: Optional[dict] = None,
    user: Optional[int] = None,
    group: Optional[int] = None,
    stdin_data: Optional[bytes] = None,
    kill_grace: float = 2.0,
    cancel: Optional[threading.Event] = None,
) -> ProcessResult:
    """Run argv directly (shell=False), in its own session so the whole group can be stopped on timeout."""
    if not argv or not all(isinstance(a, str) for a in argv):
        raise ValueError("argv must be a non-empty list of strings")
    kwargs: Dict[str, Any] = {}
    if user is not None:
        kwargs["user"] = user
        kwargs["extra_groups"] = []  # drop root's supplementary groups too
    if group is not None:
        kwargs["group"] = group
    proc = subprocess.Popen(
        list(argv), shell=False, cwd=cwd, env=env if env is not None else {"PATH": SAFE_PATH, "LANG": "C.UTF-8"},
        stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, close_fds=True, **kwargs)
    assert proc.stdout is not None and proc.stderr is not None  # both PIPE
    out, err = _TailReader(proc.stdout, max_bytes), _TailReader(proc.stderr, max_bytes)
    out.start()
    err.start()
    if stdin_data is not None:
        assert proc.stdin is not None  # PIPE when there is stdin_data
        try:
            proc.stdin.write(stdin_data)
        except OSError:
            pass
        finally:
            proc.stdin.close()
    timed_out = cancelled = False
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        try:
            proc.wait(timeout=min(left, 0.1) if cancel is not None else left)
            break
        except subprocess.TimeoutExpired:
            if cancel is not None and cancel.is_set():
                cancelled = True
                break
    if timed_out or cancelled:
        stop_group(proc, kill_grace)
    # the readers end at EOF; a grandchild holding the pipe open must not block us forever
    deadline = time.monotonic() + kill_grace + 1
    for reader in (out, err):
        reader.join(max(0.0, deadline - time.monotonic()))
    for stream in (proc.stdout, proc.stderr):
        try:
            stream.close()
        except OSError:
            pass
    return ProcessResult(
        returncode=None if timed_out or cancelled else proc.returncode,
        stdout=out.text(), stderr=err.text(), stderr_lines=err.lines(), timed_out=timed_out,
        truncated=out.total > max_bytes or err.total > max_bytes, cancelled=cancelled)


def group_members(pgid: int) -> list:
    """Live (not zombie) pids in process group `pgid`, from /proc/<pid>/stat."""
    members = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()  # state ppid pgrp ...; the name may contain spaces
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            members.append(int(name))
    return members


def _wait_group(proc: subprocess.Popen, pgid: int, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while True:
        proc.poll()  # reap the leader, so it does not count as a member
        if not group_members(pgid):
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(0.05)


def stop_group(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM the whole process group, SIGKILL whatever is left of it after `grace` seconds."""
    pgid = proc.pid  # start_new_session: the leader's pid is the group id
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        if _wait_group(proc, pgid, wait):
            break
    proc.wait()
