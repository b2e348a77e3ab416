"""The fleet tier's evaluation, pure (no Flink): what the streaming job computes, step by step, and a batch
reference (`evaluate`) the job's output is tested against.

- Per thing (`ThingWindows`): a report already seen (same thing and report id)
  is a duplicate and dropped (the last `MAX_IDS` ids are remembered: the job pickles this state per
  report, so it stays small); a report more than `lateness` older than the thing's newest report (or behind
  the job's watermark) is late and dropped. Each behavior with `durationSeconds` has tumbling windows
  aligned to the epoch; a window's value is the SUM (counters) or the LAST value (gauges: the report with
  the latest event time) of its reports, as `detect.evaluator` forms them; a window becomes a datapoint
  timed at its end once the thing's newest report, or the watermark, is `lateness` past that end. A
  behavior without a duration makes a datapoint per report, at its time.
- Per (behavior, window) across the fleet (`Distribution`): every reporting device's datapoint of a
  statistical behavior, exact (value -> count, nearest rank with `detect.statistics.percentile`) up to
  `exact_limit` distinct values, then a DDSketch (relative accuracy `baselines.RELATIVE_ACCURACY`) marked
  approximate. Behaviors without a duration rank over `DEFAULT_BUCKET_MS` buckets aligned to the epoch.
- Per thing and behavior (`ThingAlarms`): the verdict (static check, fleet threshold, or the baselines
  model's band for ML) goes through the device's own streak step (`detect.evaluator.step`), in datapoint
  time order. An alarm with no datapoint for more than two days is invalidated at that moment of event
  time; a behavior removed or changed (a new profile at restart) invalidates its alarm.
- Violation ids are uuid5 of (thing, behavior, start time): a replay from a checkpoint names the same ids.
"""

from __future__ import annotations

import bisect
import collections
import hashlib
import math
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Tuple

from ggdefender.detect import metrics as M
from ggdefender.detect.evaluator import INVALIDATE_AFTER, Evaluator, end_alarm, step
from ggdefender.detect.profile import ML, STATIC, STATISTICAL
from ggdefender.detect.state import BehaviorState
from ggdefender.detect.statistics import History, percentile
from ggdefender.detect.violations import INVALIDATED

from .records import Report

DEFAULT_BUCKET_MS = 300_000          # the ranking period of behaviors without durationSeconds
INVALIDATE_AFTER_MS = int(INVALIDATE_AFTER * 1000)
MAX_IDS = 64                         # report ids remembered per thing for dedupe (5 h of 5-minute reports)
EXACT_LIMIT = 10_000                 # distinct values ranked exactly before switching to a sketch
END_OF_INPUT_MS = 2 ** 62             # Flink's final watermark of a bounded input, in effect
STALE_REASON = "no datapoint for more than 2 days"
ID_NAMESPACE = uuid.UUID("5f0c1b7e-3c1d-4d55-9a0e-8f6b7c2f1a01")  # ours: fleet violation ids


def violation_id(thing: str, key: str, start_ms: int) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, f"{thing}\n{key}\n{start_ms}"))


def profile_fingerprint(behaviors: Iterable) -> str:
    return hashlib.sha256("\n".join(f"{b.key}={b.fingerprint}" for b in behaviors).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Datapoint:
    thing: str
    key: str           # behavior key "profile/name"
    end_ms: int        # the end of its window or ranking bucket (its own time when it needs neither)
    t_ms: int          # its time: the window end, or the report's time without a duration
    value: Any


# -- per thing: dedupe, lateness, windows ---------------------------------------------------------------------


class ThingWindows:
    """One thing's open windows and recent report ids (picklable: the job keeps it in keyed state)."""

    __slots__ = ("max_ms", "ids", "open")

    def __init__(self):
        self.max_ms: Optional[int] = None
        self.ids: "collections.OrderedDict[int, None]" = collections.OrderedDict()
        self.open: Dict[Tuple[str, int], list] = {}   # (behavior key, window end) -> [value, at_ms, report id]

    def add(self, r: Report, behaviors: Iterable, lateness_ms: int,
            watermark_ms: Optional[int] = None) -> Tuple[str, List[Datapoint]]:
        """("ok" | "duplicate" | "late", datapoints now complete)."""
        if r.report_id in self.ids:
            return "duplicate", []
        if (self.max_ms is not None and r.at_ms + lateness_ms < self.max_ms) or \
                (watermark_ms is not None and r.at_ms + lateness_ms <= watermark_ms):
            return "late", []
        self.ids[r.report_id] = None
        if self.max_ms is None or r.at_ms > self.max_ms:
            self.max_ms = r.at_ms
        if len(self.ids) > MAX_IDS:
            self.ids.popitem(last=False)
        out: List[Datapoint] = []
        for b in behaviors:
            v = r.metrics.get(b.metric)
            if v is None:
                continue
            if b.duration:
                d = b.duration * 1000
                end = (r.at_ms // d + 1) * d
                w = self.open.get((b.key, end))
                if w is None:
                    self.open[(b.key, end)] = [v, r.at_ms, r.report_id]
                elif b.spec.aggregation == M.SUM:
                    w[0] += v
                elif (r.at_ms, r.report_id) > (w[1], w[2]):  # LAST: the latest in event time, whatever the order
                    w[0], w[1], w[2] = v, r.at_ms, r.report_id
            elif b.criteria_type == STATISTICAL:  # ranked with the fleet's datapoints of its bucket
                out.append(Datapoint(r.thing, b.key, (r.at_ms // DEFAULT_BUCKET_MS + 1) * DEFAULT_BUCKET_MS,
                                     r.at_ms, v))
            else:  # needs no fleet: due as soon as event time passes the report itself
                out.append(Datapoint(r.thing, b.key, r.at_ms, r.at_ms, v))
        out.extend(self.close(r.thing, self.max_ms - lateness_ms))
        return "ok", out

    def close(self, thing: str, limit_ms: int) -> List[Datapoint]:
        """The datapoints of windows ending at or before `limit_ms`, in time order."""
        done = sorted((end, key) for key, end in self.open if end <= limit_ms)
        return [Datapoint(thing, key, end, end, self.open.pop((key, end))[0]) for end, key in done]

    def next_end(self) -> Optional[int]:
        return min((end for _, end in self.open), default=None)


# -- across the fleet: the distribution of one (behavior, window) ------------------------------------------------


class _Expanded:
    """A sorted multiset seen as a sorted list (len and index), so `statistics.percentile` ranks it as is."""

    def __init__(self, counts: dict):
        self.values = sorted(counts)
        self.cum: list = []
        n = 0
        for v in self.values:
            n += counts[v]
            self.cum.append(n)

    def __len__(self) -> int:
        return self.cum[-1] if self.cum else 0

    def __getitem__(self, i: int) -> Any:
        return self.values[bisect.bisect_right(self.cum, i)]


class Distribution:
    """Mergeable datapoints of one (behavior, window): exact value counts, or a sketch past `exact_limit`."""

    __slots__ = ("counts", "sketch", "n", "total", "negatives", "exact_limit")

    def __init__(self, exact_limit: int = EXACT_LIMIT):
        self.counts: Optional[dict] = {}
        self.sketch: Any = None
        self.n = 0
        self.total = 0.0
        self.negatives = 0
        self.exact_limit = exact_limit

    @property
    def approximate(self) -> bool:
        return self.counts is None

    def add(self, value: float, count: int = 1) -> None:
        self.n += count
        self.total += value * count
        if value < 0:
            self.negatives += count
        if self.counts is not None:
            self.counts[value] = self.counts.get(value, 0) + count
            if len(self.counts) > self.exact_limit:
                self._to_sketch()
        else:
            for _ in range(count):
                self.sketch.add(value)

    def _to_sketch(self) -> None:
        from .baselines import Distribution as Sketch  # the bounded DDSketch the baselines use

        self.sketch = Sketch()
        assert self.counts is not None
        for v, c in self.counts.items():
            for _ in range(c):
                self.sketch.add(v)
        self.counts = None

    def merge(self, other: "Distribution") -> None:
        self.n += other.n
        self.total += other.total
        self.negatives += other.negatives
        if other.counts is not None:
            if self.counts is not None:
                for v, c in other.counts.items():
                    self.counts[v] = self.counts.get(v, 0) + c
                if len(self.counts) > self.exact_limit:
                    self._to_sketch()
            else:
                for v, c in other.counts.items():
                    for _ in range(c):
                        self.sketch.add(v)
        else:
            if self.counts is not None:
                self._to_sketch()
            self.sketch.merge(other.sketch)

    def statistic(self, name: str, quantile: Optional[float]) -> Optional[float]:
        """The threshold for `Average` or a percentile; None when empty or any value is negative (AWS ranks
        no negative values, as the device's history does)."""
        if not self.n or self.negatives:
            return None
        if name == "Average":
            return self.total / self.n
        assert quantile is not None
        if self.counts is not None:
            return percentile(_Expanded(self.counts), quantile)  # type: ignore[arg-type]
        return self.sketch.quantile(quantile)


# -- per thing: verdicts and alarms ---------------------------------------------------------------------------


@dataclass
class Threshold:
    value: Optional[float]
    approximate: bool = False
    population: int = 0


class ThingAlarms:
    """One thing's behavior states (`detect.state.BehaviorState`) and the profile they were made for."""

    __slots__ = ("states", "profile_fp")

    def __init__(self):
        self.states: Dict[str, BehaviorState] = {}
        self.profile_fp: Optional[str] = None

    def reconcile(self, thing: str, behaviors: tuple, fp: str, at_s: float) -> list:
        """Adopt the current profile: alarms of behaviors removed or changed are invalidated (the device's
        own `Evaluator.set_behaviors`)."""
        if fp == self.profile_fp:
            return []
        ev = Evaluator(thing, states=self.states)
        events = ev.set_behaviors(behaviors, at_s)
        self.profile_fp = fp
        return events

    def expire(self, thing: str, by_key: dict, clock_ms: int) -> list:
        """Invalidate alarms whose last datapoint is more than two days before `clock_ms`."""
        events = []
        for key, st in self.states.items():
            if st.in_alarm and st.last_dp_at is not None and clock_ms - st.last_dp_at * 1000 > INVALIDATE_AFTER_MS:
                events.append(end_alarm(INVALIDATED, thing, by_key[key], st, st.last_value,
                                        st.last_dp_at + INVALIDATE_AFTER, STALE_REASON))
        return events

    def next_expiry_ms(self) -> Optional[int]:
        """When the earliest active alarm goes stale (event time), or None."""
        times = [int(round(st.last_dp_at * 1000)) + INVALIDATE_AFTER_MS + 1
                 for st in self.states.values() if st.in_alarm and st.last_dp_at is not None]
        return min(times, default=None)

    def resolve(self, dp: Datapoint, b: Any, threshold: Optional[Threshold], models: Any) -> list:
        """One datapoint's verdict through the streaks (after `expire` up to its time)."""
        st = self.states[b.key]
        t = dp.t_ms / 1000.0
        st.last_dp_at = t
        value = dp.value
        offending = None
        resolved: Any = None
        ctype = b.criteria_type
        if ctype is STATIC:
            violating, offending = b.check(value)
        elif ctype is STATISTICAL:
            resolved = threshold.value if threshold is not None else None
            if resolved is None:
                return []
            violating = not b.compare(value, resolved)
        else:  # ML: the band of the latest baselines model; PENDING_BUILD gives no verdict
            band = models.band(History.key(b.metric, b.duration), b.confidence) if models is not None else None
            if band is None:
                return []
            resolved = tuple(band)
            violating = value < band[0] or value > band[1]
        events = step(dp.thing, b, st, value, t, violating, offending, resolved,
                      lambda: violation_id(dp.thing, b.key, dp.t_ms))
        for e in events:
            if e["violationEventType"] == "in-alarm" and threshold is not None and threshold.approximate:
                e["thresholdApproximate"] = True
        return events


# -- the batch reference ----------------------------------------------------------------------------------------


@dataclass
class Counts:
    records: int = 0
    parsed: int = 0
    rejected: Dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    late: int = 0
    datapoints: int = 0
    violations: int = 0


def thresholds_of(datapoints: Iterable[Datapoint], by_key: dict, exact_limit: int = EXACT_LIMIT) -> dict:
    """{(behavior key, window end): Threshold} over every thing's datapoints of statistical behaviors."""
    dists: Dict[Tuple[str, int], Distribution] = {}
    for dp in datapoints:
        b = by_key[dp.key]
        if b.criteria_type is STATISTICAL:
            d = dists.get((dp.key, dp.end_ms))
            if d is None:
                d = dists[(dp.key, dp.end_ms)] = Distribution(exact_limit)
            d.add(float(dp.value))
    return {k: threshold_of(d, by_key[k[0]]) for k, d in dists.items()}


def threshold_of(d: Distribution, b: Any) -> Threshold:
    return Threshold(d.statistic(b.statistic, b.quantile), d.approximate, d.n)


def resolve_thing(alarms: ThingAlarms, thing: str, dps: List[Datapoint], behaviors: tuple, fp: str,
                  thresholds: dict, models: Any, order: dict) -> list:
    """A thing's datapoints (of one or more windows) in time order through expiry and the streaks."""
    by_key = {b.key: b for b in behaviors}
    events: list = []
    for dp in sorted(dps, key=lambda p: (p.t_ms, order[p.key])):
        events += alarms.reconcile(thing, behaviors, fp, dp.t_ms / 1000.0)
        events += alarms.expire(thing, by_key, dp.t_ms)
        events += alarms.resolve(dp, by_key[dp.key], thresholds.get((dp.key, dp.end_ms)), models)
    return events


def evaluate(lines: Iterable, behaviors: tuple, *, lateness_ms: int, models: Any = None,
             custom_types: Optional[dict] = None, exact_limit: int = EXACT_LIMIT,
             alarms: Optional[Dict[str, ThingAlarms]] = None, watermark_ms: Optional[int] = None
             ) -> Tuple[list, Counts]:
    """The whole input at once, with the streaming job's semantics for an input ordered within
    `lateness_ms` (what the job decides by watermark alone, this decides by each thing's own reports). The
    end of a bounded input is the end of time, as Flink's final watermark: every device has stopped, so the
    alarms still active are invalidated, each two days after its last datapoint. With `watermark_ms`, the input
    goes on and event time has reached that watermark: only what the job has done by then is done (windows
    closed at end + lateness, verdicts at end + lateness + 1 ms, stale alarms up to that time)."""
    from .records import RecordError, parse_line

    counts = Counts()
    windows: Dict[str, ThingWindows] = {}
    dps: List[Datapoint] = []
    for line in lines:
        counts.records += 1
        try:
            r = parse_line(line, custom_types)
        except RecordError as exc:
            counts.rejected[exc.reason] = counts.rejected.get(exc.reason, 0) + 1
            continue
        counts.parsed += 1
        w = windows.setdefault(r.thing, ThingWindows())
        status, got = w.add(r, behaviors, lateness_ms)
        if status == "duplicate":
            counts.duplicates += 1
        elif status == "late":
            counts.late += 1
        else:
            dps += got
    final = watermark_ms is None
    for thing, w in windows.items():
        dps += w.close(thing, math.inf if final else watermark_ms - lateness_ms)  # type: ignore[operator,arg-type]
    counts.datapoints = len(dps)
    by_key = {b.key: b for b in behaviors}
    order = {b.key: i for i, b in enumerate(behaviors)}
    fp = profile_fingerprint(behaviors)
    thresholds = thresholds_of(dps, by_key, exact_limit)
    per_thing: Dict[str, list] = collections.defaultdict(list)
    for dp in dps:
        per_thing[dp.thing].append(dp)
    alarms = alarms if alarms is not None else {}
    events: list = []
    for thing in sorted(per_thing):
        a = alarms.setdefault(thing, ThingAlarms())
        due, rest = per_thing[thing], []
        clock = END_OF_INPUT_MS
        if watermark_ms is not None:
            due = [dp for dp in per_thing[thing] if dp.end_ms + lateness_ms + 1 <= watermark_ms]
            rest = [dp for dp in per_thing[thing] if dp.end_ms + lateness_ms + 1 > watermark_ms]
            clock = min([watermark_ms - lateness_ms - 1] + [dp.t_ms for dp in rest])
        events += resolve_thing(a, thing, due, behaviors, fp, thresholds, models, order)
        events += a.expire(thing, by_key, clock)
    counts.violations = len(events)
    return events, counts
