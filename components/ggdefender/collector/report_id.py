"""Report ids: epoch milliseconds, strictly increasing across reports and restarts.

AWS discards a report whose id the thing already used; the reference agents reuse ids within a second or
go backwards after a reboot. Here: id = max(now_ms, last + 1), and `last` is persisted in the state dir
with an atomic replace before the id is handed out, so a crash can skip ids but never repeat one.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable, Optional

from ggdefender.statefile import atomic_write, need, read_json, state_dir  # noqa: F401  (state_dir re-exported)

log = logging.getLogger("ggdefender.collector.report_id")

MAX_ID = 2**53 - 1  # JSON consumers keep integers exact up to here
FILE_NAME = "collector-report-id"


def _check_last_id(value: Any) -> int:
    """The file holds the last id handed out as a bare integer (which is also valid JSON)."""
    need(value, int, "the last report id")
    if not 0 <= value <= MAX_ID:
        raise ValueError(f"the last report id {value} is out of range 0..{MAX_ID}")
    return value


class ReportIds:
    """Hands out report ids; `path=None` keeps the counter in memory only (one-shot CLI use)."""

    def __init__(self, path: Optional[str] = None, clock: Callable[[], float] = time.time):
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._last = self._load()

    @classmethod
    def in_state_dir(cls, directory: Optional[str] = None, **kw: Any) -> "ReportIds":
        return cls(os.path.join(directory or state_dir(), FILE_NAME), **kw)

    @property
    def last(self) -> int:
        return self._last

    def _load(self) -> int:
        if not self.path:
            return 0
        # a bad file is moved aside: the clock (epoch ms) is still far ahead of any id we handed out before
        return read_json(self.path, _check_last_id, int, what="report id file", log=log)

    def next(self) -> int:
        with self._lock:
            rid = max(int(self._clock() * 1000), self._last + 1)
            if rid > MAX_ID:
                raise OverflowError("report id space exhausted (2^53 - 1)")
            if self.path:
                atomic_write(self.path, str(rid).encode())
            self._last = rid
            return rid
