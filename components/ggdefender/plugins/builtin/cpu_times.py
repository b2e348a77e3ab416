"""CPU busy percentage measured over a real interval, shared by `cpu_usage` and `cpu_usage_per_core`.

psutil.cpu_percent(interval=None) keeps one module-wide "previous reading", so its first value is meaningless
(the AWS Python agent's bug R17) and any other caller in the process disturbs it. Each sampler here keeps
its own previous reading and, when it has none or it is too recent, waits for a real interval first.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, ClassVar, List

from ... import settings
from ..contract import Plugin
from . import system


def _totals(times: Any) -> tuple:
    fields = times._asdict()
    # Linux counts guest time inside user/nice already; psutil's own cpu_percent subtracts it the same way
    total = sum(fields.values()) - fields.get("guest", 0.0) - fields.get("guest_nice", 0.0)
    idle = fields.get("idle", 0.0) + fields.get("iowait", 0.0)
    return total, idle


def busy_percent(before: Any, after: Any) -> float:
    """Share of non-idle time between two cpu_times readings (system.cpu_times or psutil's), 0..100."""
    total_1, idle_1 = _totals(before)
    total_2, idle_2 = _totals(after)
    elapsed = total_2 - total_1
    if elapsed <= 0:  # no tick elapsed, or counters went backwards (seen after suspend on some kernels)
        return 0.0
    busy = elapsed - max(0.0, idle_2 - idle_1)
    return round(min(100.0, max(0.0, busy / elapsed * 100.0)), 2)


class CpuSampler:
    """Average CPU busy percent since the previous call, over at least `min_interval` seconds."""

    def __init__(self, percpu: bool, min_interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self.percpu = percpu
        self.min_interval = min_interval
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._last: Any = None  # set by prime() below
        self._last_at = 0.0
        self.prime()

    def _read(self) -> Any:
        return system.cpu_times(self.percpu)

    def prime(self) -> None:
        """Take the reference reading now, so a later measure() needs no wait."""
        with self._lock:
            self._last, self._last_at = self._read(), self._clock()

    def measure(self) -> "float | List[float]":
        with self._lock:
            waited = self._clock() - self._last_at
            if waited < self.min_interval:
                self._sleep(self.min_interval - waited)
            current, now = self._read(), self._clock()
            previous, self._last, self._last_at = self._last, current, now
        if self.percpu:
            if len(previous) != len(current):  # a CPU went on/offline: no comparable interval
                raise RuntimeError(f"CPU count changed from {len(previous)} to {len(current)} during the interval")
            return [busy_percent(a, b) for a, b in zip(previous, current)]
        return busy_percent(previous, current)


# the sample configuration both CPU plugins declare (their options are these)
SAMPLE_CONFIG = """\
MinIntervalSeconds: 1   # shortest measuring interval (0.1-10); only the first sample waits for it
"""


class CpuPercentPlugin(Plugin):
    """What `cpu_usage` and `cpu_usage_per_core` share: a sampler of their own and its MinIntervalSeconds."""

    unit = "percent"
    options = {"MinIntervalSeconds": 1.0}
    percpu: ClassVar[bool] = False

    def __init__(self):
        self._sampler = CpuSampler(percpu=self.percpu)

    def configure(self, options):
        self._sampler.min_interval = settings.as_float(
            options["MinIntervalSeconds"], "MinIntervalSeconds", minimum=0.1, maximum=10)

    def sample(self):
        return self._sampler.measure()
