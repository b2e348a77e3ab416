"""Rate-limited logging of a condition that repeats (a failing plugin, an unreachable relay, ...).

A fault that recurs on every report must be visible but must not fill the log: the first occurrence is logged
in full, repeats are counted and summarised at most once per `every` seconds ("... 37 more time(s) in the last
300 s; last: <message>"), and when the condition clears one "recovered" line says how often it happened.
Each condition has a key (e.g. the plugin's name); keys are bounded so ever-new keys cannot grow memory.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Optional

DEFAULT_EVERY = 300.0  # seconds between two summaries of one condition
MAX_KEYS = 256


class _Condition:
    __slots__ = ("since", "count", "suppressed", "last_logged", "last_message")

    def __init__(self, now: float, message: str):
        self.since = now
        self.count = 1
        self.suppressed = 0
        self.last_logged = now
        self.last_message = message


class RateLimitedLog:
    """`failed(key, msg, *args)` for every occurrence, `recovered(key, msg, *args)` when the key works again."""

    def __init__(self, logger: logging.Logger, *, every: float = DEFAULT_EVERY, level: int = logging.WARNING,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = MAX_KEYS):
        self.logger = logger
        self.every = every
        self.level = level
        self.clock = clock
        self.max_keys = max_keys
        self._active: dict = {}
        self._lock = threading.Lock()

    def failed(self, key: str, msg: str, *args: Any, level: Optional[int] = None) -> bool:
        """Record one occurrence; True when a line was logged (first time, or a summary was due)."""
        level = self.level if level is None else level
        message = msg % args if args else msg
        now = self.clock()
        with self._lock:
            cond = self._active.get(key)
            if cond is None:
                if len(self._active) >= self.max_keys:
                    # forget the condition summarised longest ago; worst case it is logged afresh once more
                    del self._active[min(self._active, key=lambda k: self._active[k].last_logged)]
                self._active[key] = _Condition(now, message)
                line = message
            else:
                cond.count += 1
                cond.last_message = message
                if now - cond.last_logged < self.every:
                    cond.suppressed += 1
                    return False
                line = (f"{message} (still failing: {cond.suppressed + 1} time(s) in the last "
                        f"{now - cond.last_logged:.0f} s, {cond.count} in all over {now - cond.since:.0f} s)")
                cond.suppressed = 0
                cond.last_logged = now
        self.logger.log(level, "%s", line)
        return True

    def recovered(self, key: str, msg: str, *args: Any) -> bool:
        """The condition of `key` has cleared: one INFO line if it was active; True when logged."""
        now = self.clock()
        with self._lock:
            cond = self._active.pop(key, None)
        if cond is None:
            return False
        message = msg % args if args else msg
        self.logger.info("%s (after %d failure(s) over %.0f s)", message, cond.count, now - cond.since)
        return True

    def active(self, key: str) -> bool:
        with self._lock:
            return key in self._active

    def count(self, key: str) -> int:
        with self._lock:
            cond = self._active.get(key)
            return cond.count if cond else 0
