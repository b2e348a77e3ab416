"""Fleet baselines, the ML Detect stand-in: the model file, its loader, and the pure daily computation.

AWS does not publish ML Detect's algorithm. Ours: per ML behavior of a profile, the fleet's datapoints of the
last 14 days (every device's value in each report: ML behaviors have no durationSeconds) form a distribution;
a confidence level is a band of its quantiles (`detect.statistics.ML_BANDS`, the device's mapping) and a datapoint outside the band is anomalous.
The distribution is a DDSketch (relative accuracy `RELATIVE_ACCURACY`, bounded bins) kept PER DAY, so the
daily run reads only the new day and merges the last 14 daily partials. A behavior's model is ACTIVE only
with `min_days` days of data and `min_datapoints` datapoints (AWS's documented minimums by default).

Files (in the state folder: a directory or s3://bucket/prefix): `days/<YYYY-MM-DD>.json` (one day's partial, format `DAY_FORMAT`) and
`baselines-<YYYY-MM-DD>.json` (the model trained with data up to the end of that day, format `FORMAT`).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Tuple

from ggdefender.detect.profile import ML, Profile
from ggdefender.detect.statistics import ML_BANDS, History
from ggdefender.statefile import need

from . import storage

FORMAT = "ggdefender-fleet-baselines/1"
DAY_FORMAT = "ggdefender-fleet-baselines-day/1"
ACTIVE, PENDING_BUILD = "ACTIVE", "PENDING_BUILD"
MIN_DATAPOINTS = 25_000       # AWS: "at least 25,000 datapoints" before a model is built
MIN_DAYS = 14                 # AWS: "a minimum of 14 days" of data
WINDOW_DAYS = 14              # the trailing window a model is trained on (AWS: the last 14 days)
RELATIVE_ACCURACY = 0.01      # a quantile is within 1 % of a true value of the fleet's distribution
BIN_LIMIT = 2048              # bins per sign: values spanning more than 1.02**2048 collapse at the low end
MAX_MODEL_BYTES = 4 * 1024 * 1024
MAX_DAY_BYTES = 16 * 1024 * 1024
MAX_MODEL_FILES = 256
KEEP_DAYS = 2 * WINDOW_DAYS   # partials and models older than this (before the day built) are pruned
MODEL_NAME_RE = re.compile(r"^baselines-(\d{4}-\d{2}-\d{2})\.json\Z")
DAY_NAME_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.json\Z")
DAY_MS = 86_400_000


class BaselinesError(ValueError):
    """A model or partial file is unusable; the message names the file and the problem."""


# -- the model file and its loader ------------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    key: str
    metric: str
    duration: Optional[int]
    datapoints: int
    days: int
    status: str
    bands: Optional[Dict[str, Tuple[float, float]]]


class Models:
    """The latest baselines; `band` answers only for ACTIVE models (else None: no verdict, as PENDING_BUILD)."""

    def __init__(self, models: Optional[Dict[str, Model]] = None, trained_at: Optional[float] = None,
                 source: Optional[str] = None):
        self.models = models or {}
        self.trained_at = trained_at   # epoch seconds: the end of the last day of data (None: no model)
        self.source = source

    def band(self, behavior_key: str, confidence: str) -> Optional[Tuple[float, float]]:
        m = self.models.get(behavior_key)
        if m is None or m.status != ACTIVE or not m.bands:
            return None
        return m.bands.get(confidence)

    def status(self, behavior_key: str) -> dict:
        m = self.models.get(behavior_key)
        if m is None:
            return {"modelStatus": PENDING_BUILD, "datapoints": 0, "days": 0}
        return {"modelStatus": m.status, "datapoints": m.datapoints, "days": m.days}


def _finite(v: Any, where: str) -> float:
    need(v, (int, float), where)
    if not math.isfinite(v):
        raise ValueError(f"{where} must be a finite number")
    return float(v)


def _count(v: Any, where: str) -> int:
    need(v, int, where)
    if v < 0:
        raise ValueError(f"{where} must not be negative")
    return v


def parse_time(text: Any, where: str) -> float:
    need(text, str, where)
    try:
        t = dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        raise ValueError(f"{where} must be a UTC time like 2026-12-03T00:00:00Z, got {text[:40]!r}") from None
    return t.timestamp()


def check_model(doc: Any) -> Models:
    """A model document -> Models, or ValueError naming the field."""
    need(doc, dict, "the model")
    if doc.get("format") != FORMAT:
        raise ValueError(f"format must be {FORMAT!r}, got {str(doc.get('format'))[:60]!r}")
    trained_at = parse_time(doc.get("trainedAt"), "trainedAt")
    behaviors = need(doc.get("behaviors"), dict, "behaviors")
    models = {}
    for key, b in behaviors.items():
        where = f"behaviors[{key!r}]"
        need(b, dict, where)
        metric = need(b.get("metric"), str, f"{where}.metric")
        duration = b.get("durationSeconds")
        if duration is not None:
            _count(duration, f"{where}.durationSeconds")
        status = b.get("status")
        if status not in (ACTIVE, PENDING_BUILD):
            raise ValueError(f"{where}.status must be {ACTIVE} or {PENDING_BUILD}, got {str(status)[:40]!r}")
        bands = None
        if status == ACTIVE:
            raw = need(b.get("bands"), dict, f"{where}.bands")
            bands = {}
            for level in ML_BANDS:
                pair = raw.get(level)
                if not (isinstance(pair, list) and len(pair) == 2):
                    raise ValueError(f"{where}.bands.{level} must be [low, high]")
                lo, hi = (_finite(x, f"{where}.bands.{level}") for x in pair)
                if lo > hi:
                    raise ValueError(f"{where}.bands.{level}: low {lo} is above high {hi}")
                bands[level] = (lo, hi)
            # a higher confidence level alarms on fewer datapoints: its band holds the lower level's band
            for narrow, wide in (("LOW", "MEDIUM"), ("MEDIUM", "HIGH")):
                if not (bands[wide][0] <= bands[narrow][0] and bands[narrow][1] <= bands[wide][1]):
                    raise ValueError(f"{where}.bands: {narrow} {list(bands[narrow])} is not inside "
                                     f"{wide} {list(bands[wide])}")
        models[key] = Model(key, metric, duration, _count(b.get("datapoints"), f"{where}.datapoints"),
                            _count(b.get("days"), f"{where}.days"), status, bands)
    return Models(models, trained_at)


def _read_model(store: Any, name: str) -> Optional[Models]:
    where = store.where(name)
    try:
        data = store.read(name, MAX_MODEL_BYTES)
        if data is None:
            return None
        models = check_model(json.loads(data))
    except OSError as exc:  # StorageError names the location
        raise BaselinesError(str(exc)) from None
    except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise BaselinesError(f"{where}: not a baselines model: {exc}") from None
    models.source = where
    return models


def load_latest(path: str) -> Models:
    """The newest model (by trainedAt) at `path`: a model file, or a folder of `baselines-*.json` files; a local
    path or `s3://bucket/prefix` (S3 needs boto3). A missing file or a folder without models gives Models with
    nothing ACTIVE; a bad file is an error naming it and the problem."""
    try:
        if storage.is_file(path):
            store, name = storage.split_file(path)
            return _read_model(store, name) or Models()
        store = storage.location(path)
        names = [n for n in store.names() if MODEL_NAME_RE.match(n)]
    except OSError as exc:
        raise BaselinesError(str(exc)) from None
    except ValueError as exc:
        raise BaselinesError(str(exc)) from None
    if len(names) > MAX_MODEL_FILES:
        raise BaselinesError(f"{path}: more than {MAX_MODEL_FILES} model files (the baselines job keeps "
                             f"{KEEP_DAYS} days); remove old ones")
    best = Models()
    for name in names:
        m = _read_model(store, name)
        if m is not None and (best.trained_at is None or (m.trained_at or 0) > best.trained_at):
            best = m
    return best


# -- the distribution ----------------------------------------------------------------------------------


def _new_sketch() -> Any:
    from ddsketch import LogCollapsingLowestDenseDDSketch

    return LogCollapsingLowestDenseDDSketch(relative_accuracy=RELATIVE_ACCURACY, bin_limit=BIN_LIMIT)


SLOT_SHIFT = 1 << 20  # above any key of the mapping (|key| < 36,000 at 1 % relative accuracy)
_mapping: Any = None


def slot(value: float) -> int:
    """The sketch bin of a value as one integer that never decreases as the value grows (negative values
    below zero's slot 0, positive above): the batch job counts datapoints per slot in Flink, and
    `Distribution.from_slots` turns the counts into the sketch the values would have made."""
    global _mapping
    if _mapping is None:
        _mapping = _new_sketch()._mapping
    if value > _mapping.min_possible:
        return _mapping.key(value) + SLOT_SHIFT
    if value < -_mapping.min_possible:
        return -(_mapping.key(-value) + SLOT_SHIFT)
    return 0


class Distribution:
    """Datapoints of one series: a bounded DDSketch plus the exact count, min and max (the sketch's
    serialized form keeps neither min nor max, and the widest band (p0..p100) is exactly min..max)."""

    __slots__ = ("sketch", "count", "min", "max")

    def __init__(self):
        self.sketch = _new_sketch()
        self.count = 0
        self.min = math.inf
        self.max = -math.inf

    def add(self, value: float) -> None:
        self.sketch.add(value)
        self.count += 1
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value

    def merge(self, other: "Distribution") -> None:
        if other.count:
            self.sketch.merge(other.sketch)
            self.count += other.count
            self.min = min(self.min, other.min)
            self.max = max(self.max, other.max)

    def quantile(self, q: float) -> float:
        """The value at percentile q (0..100): exact at 0 and 100, within the relative accuracy between."""
        if q <= 0:
            return self.min
        if q >= 100:
            return self.max
        v = self.sketch.get_quantile_value(q / 100.0)
        return min(max(v, self.min), self.max)

    def add_slot(self, s: int, n: int, lo: float, hi: float) -> None:
        """Add `n` datapoints of slot `s` whose smallest and largest values are lo and hi (the batch job's
        counts): the sketch then holds what adding the values would have made."""
        if n < 1 or abs(s) > 2 * SLOT_SHIFT or 0 < abs(s) < SLOT_SHIFT // 2:
            raise ValueError(f"slot {s} with {n} datapoints is not the batch job's")
        mapping = self.sketch._mapping
        value = 0.0 if s == 0 else math.copysign(mapping.value(abs(s) - SLOT_SHIFT), s)
        self.sketch.add(value, n)
        self.count += n
        self.min = min(self.min, float(lo))
        self.max = max(self.max, float(hi))

    @classmethod
    def from_slots(cls, counts: Iterable[Tuple[int, int]], lo: float, hi: float) -> "Distribution":
        """From (slot, datapoints) pairs and the exact min and max of all of them."""
        d = cls()
        for s, n in counts:
            d.add_slot(s, n, lo, hi)
        if d.count:
            d.min, d.max = float(lo), float(hi)
        return d

    def to_json(self) -> dict:
        # the sketch's bins as sparse [key, count] pairs (ddsketch's protobuf form is dense: a few far-apart
        # keys would make it, and the list it is loaded into, huge)
        sk = self.sketch
        return {"datapoints": self.count, "min": self.min, "max": self.max, "zero": int(sk._zero_count),
                "positive": _bins(sk._store), "negative": _bins(sk._negative_store)}

    @classmethod
    def from_json(cls, data: Any, where: str) -> "Distribution":
        need(data, dict, where)
        d = cls()
        count = _count(data.get("datapoints"), f"{where}.datapoints")
        if not count:
            return d
        d.min = _finite(data.get("min"), f"{where}.min")
        d.max = _finite(data.get("max"), f"{where}.max")
        if d.min > d.max:
            raise ValueError(f"{where}: min {d.min} is above max {d.max}")
        mapping = d.sketch._mapping
        lo, hi = mapping.key(mapping.min_possible), mapping.key(mapping.max_possible)
        zero = _count(data.get("zero"), f"{where}.zero")
        total = zero
        if zero:
            d.sketch.add(0.0, zero)
        for sign, name in ((1.0, "positive"), (-1.0, "negative")):
            pairs = need(data.get(name), list, f"{where}.{name}")
            if len(pairs) > BIN_LIMIT:
                raise ValueError(f"{where}.{name}: more than {BIN_LIMIT} bins")
            for i, pair in enumerate(pairs):
                ok = isinstance(pair, list) and len(pair) == 2 and all(
                    isinstance(x, int) and not isinstance(x, bool) for x in pair)
                if not ok or not lo <= pair[0] <= hi or pair[1] < 1:
                    raise ValueError(f"{where}.{name}[{i}] must be [key {lo}..{hi}, count >= 1]")
                # the mapping's value of a key maps back to that key (exactly: checked over every key)
                d.sketch.add(sign * mapping.value(pair[0]), pair[1])
                total += pair[1]
        if total != count:
            raise ValueError(f"{where}: the bins hold {total} datapoints, not {count}")
        d.count = count
        return d


def _bins(store: Any) -> list:
    return [[i + store.offset, int(c)] for i, c in enumerate(store.bins) if c]


# -- what is learnt: series of the profile's ML behaviors ------------------------------------------------


@dataclass(frozen=True)
class Series:
    """The datapoints of one metric; behaviors on the same metric share their model's data. ML behaviors take
    no durationSeconds (CreateSecurityProfile refuses it), so, as on the device, each report's value is one
    datapoint; the key is the device history's (`History.key`)."""
    key: str
    metric: str


def series_of(profile: Profile) -> Dict[str, Series]:
    out = {}
    for b in profile.behaviors:
        if b.criteria_type == ML:
            k = History.key(b.metric, b.duration)
            out[k] = Series(k, b.metric)
    return out


def custom_types_of(profile: Profile) -> dict:
    """The custom metrics' types as the profile's behaviors declare or imply them (ML implies `number`)."""
    return {b.metric: b.spec.custom_type for b in profile.behaviors if b.spec.side == "custom"}


def day_of(at_ms: int) -> str:
    return dt.datetime.fromtimestamp(at_ms // 1000, dt.timezone.utc).strftime("%Y-%m-%d")


def day_start_ms(day: str) -> int:
    try:
        d = dt.datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        raise ValueError(f"a day must be YYYY-MM-DD, got {day[:40]!r}") from None
    return int(d.timestamp()) * 1000


def add_days(day: str, n: int) -> str:
    return day_of(day_start_ms(day) + n * DAY_MS)


def datapoints(series: Dict[str, Series], metrics: dict) -> Iterable[Tuple[str, float]]:
    """(series key, value) of one report's metrics; a non-numeric value (a malformed custom metric) is none."""
    for s in series.values():
        v = metrics.get(s.metric)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            yield s.key, float(v)


class DayPartial:
    """One day's distributions per series, plus what the input held (for the summary)."""

    def __init__(self, day: str, series: Optional[Dict[str, Distribution]] = None, counts: Optional[dict] = None):
        day_start_ms(day)
        self.day = day
        self.series: Dict[str, Distribution] = series or {}
        self.counts: dict = counts or {}

    def add(self, key: str, value: float) -> None:
        d = self.series.get(key)
        if d is None:
            d = self.series[key] = Distribution()
        d.add(value)

    def to_json(self) -> dict:
        return {"format": DAY_FORMAT, "day": self.day, "relativeAccuracy": RELATIVE_ACCURACY,
                "series": {k: d.to_json() for k, d in sorted(self.series.items())}, "input": self.counts}

    @classmethod
    def from_json(cls, doc: Any) -> "DayPartial":
        need(doc, dict, "the day's partial")
        if doc.get("format") != DAY_FORMAT:
            raise ValueError(f"format must be {DAY_FORMAT!r}, got {str(doc.get('format'))[:60]!r}")
        day = need(doc.get("day"), str, "day")
        series = {k: Distribution.from_json(v, f"series[{k!r}]")
                  for k, v in need(doc.get("series"), dict, "series").items()}
        return cls(day, series, need(doc.get("input", {}), dict, "input"))


def compute_day(day: str, series: Dict[str, Series], reports: Iterable[Any]) -> DayPartial:
    """The pure, in-memory form of the batch job: reports (thing, at_ms, report_id, metrics) -> the day's
    partial. Reports of other days are counted, not used; a report seen twice (thing, id) counts once."""
    start = day_start_ms(day)
    seen = set()
    partial = DayPartial(day)
    counts = {"reports": 0, "otherDays": 0, "duplicates": 0}
    for r in reports:
        if not start <= r.at_ms < start + DAY_MS:
            counts["otherDays"] += 1
            continue
        ident = (r.thing, r.report_id)
        if ident in seen:
            counts["duplicates"] += 1
            continue
        seen.add(ident)
        counts["reports"] += 1
        for key, value in datapoints(series, r.metrics):
            partial.add(key, value)
    partial.counts = counts
    return partial


# -- training: the last 14 daily partials -> the model ----------------------------------------------------


def build_model(profile: Profile, day: str, partials: Dict[str, DayPartial], *,
                min_datapoints: int = MIN_DATAPOINTS, min_days: int = MIN_DAYS) -> dict:
    """The model trained with the partials of the 14 days ending with `day` (others are ignored)."""
    if not 1 <= min_days <= WINDOW_DAYS:
        raise ValueError(f"min_days must be 1..{WINDOW_DAYS}, got {min_days}")
    if min_datapoints < 1:
        raise ValueError(f"min_datapoints must be at least 1, got {min_datapoints}")
    window = [add_days(day, -i) for i in range(WINDOW_DAYS - 1, -1, -1)]
    merged: Dict[str, Tuple[Distribution, int]] = {}
    for key in series_of(profile):
        dist, days = Distribution(), 0
        for d in window:
            part = partials.get(d)
            one = part.series.get(key) if part else None
            if one is not None and one.count:
                dist.merge(one)
                days += 1
        merged[key] = (dist, days)
    behaviors = {}
    for b in profile.behaviors:
        if b.criteria_type != ML:
            continue
        dist, days = merged[History.key(b.metric, b.duration)]
        active = days >= min_days and dist.count >= min_datapoints
        entry: dict = {"metric": b.metric, "durationSeconds": b.duration, "datapoints": dist.count,
                       "days": days, "status": ACTIVE if active else PENDING_BUILD, "bands": None}
        if active:
            entry["bands"] = {level: [dist.quantile(lo), dist.quantile(hi)] for level, (lo, hi) in ML_BANDS.items()}
        behaviors[b.key] = entry
    end = dt.datetime.fromtimestamp(day_start_ms(day) / 1000 + 86400, dt.timezone.utc)
    return {"format": FORMAT, "profile": profile.name, "trainedAt": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "days": [window[0], window[-1]], "minDatapoints": min_datapoints, "minDays": min_days,
            "relativeAccuracy": RELATIVE_ACCURACY, "behaviors": behaviors}


# -- the state directory -------------------------------------------------------------------------------


def partial_name(day: str) -> str:
    return f"days/{day}.json"


def model_name(day: str) -> str:
    return f"baselines-{day}.json"


def partial_path(state: str, day: str) -> str:
    return storage.location(state).where(partial_name(day))


def model_path(state: str, day: str) -> str:
    return storage.location(state).where(model_name(day))


def _read_partial(store: Any, day: str) -> Optional[DayPartial]:
    name = partial_name(day)
    try:
        data = store.read(name, MAX_DAY_BYTES)
        if data is None:
            return None
        part = DayPartial.from_json(json.loads(data))
    except OSError as exc:
        raise BaselinesError(str(exc)) from None
    except ValueError as exc:
        raise BaselinesError(f"{store.where(name)}: not a day's partial: {exc}") from None
    if part.day != day:
        raise BaselinesError(f"{store.where(name)}: holds day {part.day}, not {day}")
    return part


def read_partial(state: str, day: str) -> Optional[DayPartial]:
    """The stored partial of `day`, None if there is none."""
    return _read_partial(storage.location(state), day)


def load_partials(state: str, day: str) -> Dict[str, DayPartial]:
    """The partials of the 14 days ending with `day` that exist in `state`."""
    store = storage.location(state)
    # listed first, so no read asks for a missing object (S3 answers 403, not 404, to a role that may not
    # list the whole bucket)
    present = {m.group(1) for m in map(DAY_NAME_RE.match, store.names("days")) if m}
    out = {}
    for i in range(WINDOW_DAYS):
        d = add_days(day, -i)
        part = _read_partial(store, d) if d in present else None
        if part is not None:
            out[d] = part
    return out


def _json_bytes(doc: dict, indent: Optional[int] = None) -> bytes:
    return json.dumps(doc, indent=indent, separators=None if indent else (",", ":")).encode()


def save_partial(state: str, partial: DayPartial) -> str:
    store = storage.location(state)
    store.write(partial_name(partial.day), _json_bytes(partial.to_json()))
    return store.where(partial_name(partial.day))


def save_model(state: str, day: str, doc: dict) -> str:
    check_model(doc)  # never publish a model the streaming job would refuse
    store = storage.location(state)
    store.write(model_name(day), _json_bytes(doc, indent=1))
    return store.where(model_name(day))


def prune(state: str, day: str) -> List[str]:
    """Remove partials and models more than `KEEP_DAYS` before `day` (bounded storage); what was removed."""
    store = storage.location(state)
    oldest = add_days(day, -KEEP_DAYS)
    removed = []
    for folder, pattern in (("days", DAY_NAME_RE), ("", MODEL_NAME_RE)):
        for name in store.names(folder):
            m = pattern.match(name)
            if m and m.group(1) < oldest:
                full = f"{folder}/{name}" if folder else name
                store.delete(full)
                removed.append(store.where(full))
    return removed


def train(state: str, profile: Profile, partial: DayPartial, *, min_datapoints: int = MIN_DATAPOINTS,
          min_days: int = MIN_DAYS) -> Tuple[str, dict]:
    """Store a day's partial (replacing that day's: a rerun gives the same model), build the model from the
    last 14 partials, store it, prune old files. (model location, model document)."""
    try:
        save_partial(state, partial)
        doc = build_model(profile, partial.day, load_partials(state, partial.day), min_datapoints=min_datapoints,
                          min_days=min_days)
        path = save_model(state, partial.day, doc)
        prune(state, partial.day)
    except OSError as exc:
        raise BaselinesError(str(exc)) from None
    return path, doc
