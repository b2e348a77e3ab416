"""Per-device metric history for statistical thresholds and ML-style detection on one device.

AWS computes a `statisticalThreshold` percentile over every device the profile targets and trains ML models
on the fleet's trailing 14 days. A single device has no fleet, so here the population is this device's own
datapoints: one series per (metric, durationSeconds), holding per-window values (or per-report values when
there is no window), bounded in age (default 14 days) and count, and persisted in the state folder so a
restart keeps the baseline.

Percentile: nearest rank: sort the N values, take rank ceil(q/100 * N), minimum 1.
ML confidence levels map to a band of this history (see `ML_BANDS`); a datapoint outside the band is
anomalous. Nothing alarms until the series has `warmup` datapoints (the model is PENDING_BUILD until then).
"""

from __future__ import annotations

import bisect
import collections
import logging
import math
from dataclasses import dataclass
from typing import Any, Optional, Tuple

from ggdefender.statefile import atomic_write_json, need, read_json

log = logging.getLogger("ggdefender.detect.statistics")

# confidence level -> (lower percentile, upper percentile): HIGH confidence = fewest alarms
ML_BANDS = {"LOW": (1.0, 99.0), "MEDIUM": (0.1, 99.9), "HIGH": (0.0, 100.0)}
DAY = 86400.0


@dataclass(frozen=True)
class StatsConfig:
    warmup: int = 30                # datapoints in a series before a statistical threshold is used
    ml_warmup: int = 288            # datapoints before an ML behavior alarms (one day of 300 s reports)
    history_seconds: float = 14 * DAY
    max_points: int = 20_000        # per series
    max_series: int = 256


def percentile(sorted_values: list, q: float) -> Any:
    """Nearest-rank percentile of an ascending list (q in 0..100); None for an empty list."""
    n = len(sorted_values)
    if not n:
        return None
    rank = max(1, math.ceil(q / 100.0 * n))
    return sorted_values[min(rank, n) - 1]


class Series:
    """One metric's datapoints: insertion order for ageing, a sorted copy for percentiles."""

    __slots__ = ("points", "sorted", "negatives", "last_t")

    def __init__(self):
        self.points: collections.deque = collections.deque()  # (t, value) in time order
        self.sorted: list = []
        self.negatives = 0
        self.last_t: Optional[float] = None

    def __len__(self) -> int:
        return len(self.points)

    def add(self, t: float, value: float, cfg: StatsConfig) -> None:
        self.points.append((t, value))
        bisect.insort(self.sorted, value)
        if value < 0:
            self.negatives += 1
        self.last_t = t
        self.trim(t, cfg)

    def trim(self, now: float, cfg: StatsConfig) -> None:
        horizon = now - cfg.history_seconds
        while self.points and (len(self.points) > cfg.max_points or self.points[0][0] < horizon):
            _, old = self.points.popleft()
            del self.sorted[bisect.bisect_left(self.sorted, old)]
            if old < 0:
                self.negatives -= 1

    def percentile(self, q: float) -> Any:
        # AWS computes no percentile when any value is negative
        if self.negatives:
            return None
        return percentile(self.sorted, q)


def check_history(data: Any) -> dict:
    """detect-statistics.json: {"version": 1, "series": {key: [[t, value], ...]}}; the series, or ValueError."""
    need(data, dict, "the statistics history")
    series = need(data.get("series", {}), dict, "series")
    for key, points in series.items():
        need(points, list, f"series[{key!r}]")
        for i, p in enumerate(points):
            if not (isinstance(p, list) and len(p) == 2):
                raise ValueError(f"series[{key!r}][{i}] must be [time, value]")
            need(p[0], (int, float), f"series[{key!r}][{i}] time")
            need(p[1], (int, float), f"series[{key!r}][{i}] value")
            if not all(math.isfinite(x) for x in p):
                raise ValueError(f"series[{key!r}][{i}] must hold finite numbers")
    return series


class History:
    """All series of one device; `dirty` tells the owner to persist."""

    def __init__(self, cfg: StatsConfig = StatsConfig(), path: Optional[str] = None):
        self.cfg = cfg
        self.path = path
        self.series: dict = {}
        self.dirty = False
        if path:
            self.load()

    @staticmethod
    def key(metric: str, duration: Optional[int]) -> str:
        return f"{metric}@{duration or 0}"

    def get(self, metric: str, duration: Optional[int]) -> Series:
        k = self.key(metric, duration)
        s = self.series.get(k)
        if s is None:
            if len(self.series) >= self.cfg.max_series:
                # drop the series that was fed least recently; bounded memory beats a stale series
                oldest = min(self.series, key=lambda x: self.series[x].last_t or 0)
                del self.series[oldest]
            s = self.series[k] = Series()
        return s

    def add(self, metric: str, duration: Optional[int], t: float, value: float) -> None:
        s = self.get(metric, duration)
        if s.last_t is not None and t <= s.last_t:
            return  # one datapoint per time per series (several behaviors may share a series)
        s.add(t, float(value), self.cfg)
        self.dirty = True

    def threshold(self, metric: str, duration: Optional[int], q: Optional[float]) -> Any:
        """The percentile q of the series, or its mean when q is None (statistic `Average`)."""
        s = self.series.get(self.key(metric, duration))
        if s is None or len(s) < self.cfg.warmup:
            return None
        if q is None:
            return None if s.negatives else sum(s.sorted) / len(s.sorted)
        return s.percentile(q)

    def ml_band(self, metric: str, duration: Optional[int], confidence: str) -> Optional[Tuple[Any, Any]]:
        """(low, high) of normal values for a confidence level, or None while warming up."""
        s = self.series.get(self.key(metric, duration))
        if s is None or len(s) < self.cfg.ml_warmup or s.negatives:
            return None
        lo_q, hi_q = ML_BANDS[confidence]
        return percentile(s.sorted, lo_q), percentile(s.sorted, hi_q)

    def model_status(self, metric: str, duration: Optional[int]) -> dict:
        s = self.series.get(self.key(metric, duration))
        n = len(s) if s else 0
        return {"modelStatus": "ACTIVE" if n >= self.cfg.ml_warmup else "PENDING_BUILD",
                "datapointsCollectionPercentage": round(min(100.0, 100.0 * n / max(1, self.cfg.ml_warmup)), 1)}

    # -- persistence ------------------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {"version": 1, "series": {k: [[t, v] for t, v in s.points] for k, s in self.series.items()}}

    def load(self) -> None:
        # a file of the wrong shape is moved aside and a new baseline starts (warming up again)
        assert self.path is not None  # loaded only with a path (__init__)
        series = read_json(self.path, check_history, dict, what="statistics history", log=log)
        for k, points in list(series.items())[-self.cfg.max_series:]:
            s = Series()
            for t, v in points:
                if s.last_t is None or t > s.last_t:  # one datapoint per time, as `add` keeps it
                    s.points.append((float(t), float(v)))
                    s.last_t = float(t)
                    if v < 0:
                        s.negatives += 1
            s.sorted = sorted(v for _, v in s.points)
            if s.last_t is not None:
                s.trim(s.last_t, self.cfg)
            self.series[k] = s

    def save(self) -> None:
        if not self.path or not self.dirty:
            return
        atomic_write_json(self.path, self.to_json())
        self.dirty = False
