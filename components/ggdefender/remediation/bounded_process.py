"""Run an argv (never a shell) with a timeout and bounded output, draining both pipes concurrently.

This closes the Device Client's gaps: its stdout reader ran before its stderr reader (a child filling the
stderr pipe deadlocked it), it stopped reading after 1000 lines (the child died of SIGPIPE) and it waited
forever. Here each pipe has its own reader that keeps reading to EOF but only keeps the last `max_bytes`,
and the whole process group is terminated, then killed, when the timeout expires.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import signal
import subprocess
import threading
import time
from typing import Optional, Sequence

SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclasses.dataclass
class ProcessResult:
    returncode: Optional[int]  # None when it had to be killed after the timeout
    stdout: str  # the tail, at most max_bytes
    stderr: str
    stderr_lines: int
    timed_out: bool
    truncated: bool


class _TailReader(threading.Thread):
    def __init__(self, stream, max_bytes: int):
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
) -> ProcessResult:
    """Run argv directly (shell=False), in its own session so the whole group can be stopped on timeout."""
    if not argv or not all(isinstance(a, str) for a in argv):
        raise ValueError("argv must be a non-empty list of strings")
    kwargs = {}
    if user is not None:
        kwargs["user"] = user
        kwargs["extra_groups"] = []  # drop root's supplementary groups too
    if group is not None:
        kwargs["group"] = group
    proc = subprocess.Popen(
        list(argv), shell=False, cwd=cwd, env=env if env is not None else {"PATH": SAFE_PATH, "LANG": "C.UTF-8"},
        stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, close_fds=True, **kwargs)
    out, err = _TailReader(proc.stdout, max_bytes), _TailReader(proc.stderr, max_bytes)
    out.start()
    err.start()
    if stdin_data is not None:
        try:
            proc.stdin.write(stdin_data)
        except OSError:
            pass
        finally:
            proc.stdin.close()
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _stop_group(proc, kill_grace)
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
        returncode=None if timed_out else proc.returncode,
        stdout=out.text(), stderr=err.text(), stderr_lines=err.lines(), timed_out=timed_out,
        truncated=out.total > max_bytes or err.total > max_bytes)


def _stop_group(proc: subprocess.Popen, grace: float) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue
    proc.wait()
