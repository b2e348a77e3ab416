"""Out-of-process plugins: samples other Greengrass components publish on local topic `ggdefender/custom-metrics`.

Payload (JSON), one sample or a batch:

    {"metric": "open_fds", "type": "number", "value": 42, "timestamp": 1767225600.5, "source": "my.Component"}
    {"source": "my.Component", "samples": [{"metric": ..., "type": ..., "value": ...}, ...]}

`type` is a report key (`number`, `number_list`, `string_list`, `ip_list`) or the AWS API name
(`number-list`, `string-list`, `ip-address-list`); `timestamp` (optional) is Unix epoch seconds, or
milliseconds when above 1e11; `source` (optional) names the publisher in our logs. Values are validated
exactly like in-process samples. The newest sample per metric is kept until it is older than the
configured max age; at most `MaxMetrics` distinct metrics are kept (a new one beyond that is rejected).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Optional, Tuple

from ggdefender import topics

from .contract import SampleError, ValueType, check_metric_name, validate_value

log = logging.getLogger("ggdefender.plugins")

TOPIC = topics.CUSTOM_METRICS
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_BATCH = 100
MAX_FUTURE_SKEW = 60.0  # seconds a publisher's clock may run ahead of ours
_SAMPLE_KEYS = {"metric", "type", "value", "timestamp", "source"}
_BATCH_KEYS = {"samples", "source"}


@dataclass(frozen=True)
class ExternalSettings:
    enabled: bool = True
    max_metrics: int = 50
    max_age: float = 900.0


@dataclass(frozen=True)
class ExternalSample:
    value_type: ValueType
    value: Any
    source: str
    expires_at: float  # on the monotonic clock


class _WarningLimiter:
    """At most `burst` warnings per `window` seconds, so a misbehaving publisher cannot flood the log."""

    def __init__(self, burst: int = 20, window: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.burst, self.window, self._clock = burst, window, clock
        self._start: Optional[float] = None
        self._count, self._suppressed = 0, 0

    def warn(self, message: str, *args: Any) -> None:
        now = self._clock()
        if self._start is None or now - self._start >= self.window:
            if self._suppressed:
                log.warning("external custom metrics: %d further rejections were not logged", self._suppressed)
            self._start, self._count, self._suppressed = now, 0, 0
        if self._count < self.burst:
            self._count += 1
            log.warning(message, *args)
        else:
            self._suppressed += 1


class ExternalMetrics:
    """Validated, bounded, expiring store of the newest external sample per metric. Thread-safe."""

    def __init__(self, settings: ExternalSettings = ExternalSettings(), *,
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time):
        self.settings = settings
        self._clock = clock
        self._wall = wall_clock
        self._lock = threading.Lock()
        self._samples: Dict[str, ExternalSample] = {}
        self._limiter = _WarningLimiter(clock=clock)

    def configure(self, settings: ExternalSettings) -> None:
        with self._lock:
            self.settings = settings
            if not settings.enabled:
                self._samples.clear()

    # -- ingestion --------------------------------------------------------------------------------
    def ingest(self, topic: str, payload: Any, reserved: Iterable[str] = ()) -> Tuple[int, int]:
        """Validate and store the samples of one message; returns (accepted, rejected)."""
        if not self.settings.enabled:
            return 0, 0
        try:
            samples, batch_source = self._unpack(payload)
        except SampleError as exc:
            self._limiter.warn("external custom metrics on %s: message rejected: %s", topic, exc)
            return 0, 1
        reserved = set(reserved)
        accepted = rejected = 0
        for index, raw in enumerate(samples):
            where = f"sample {index}" if len(samples) > 1 else "sample"
            source = batch_source
            try:
                if not isinstance(raw, dict):
                    raise SampleError(f"expected an object, got {type(raw).__name__}")
                source = _source(raw.get("source", batch_source))
                name, sample = self._check(raw, source, reserved)
                self._store(name, sample)
                accepted += 1
            except SampleError as exc:
                rejected += 1
                metric = raw.get("metric") if isinstance(raw, dict) else None
                label = f"metric {metric!r}" if isinstance(metric, str) else where
                self._limiter.warn("external custom metrics on %s from %s: %s rejected: %s",
                                   topic, source or "an unnamed publisher", label, exc)
        return accepted, rejected

    def _unpack(self, payload: Any) -> Tuple[list, str]:
        if isinstance(payload, (bytes, bytearray)):
            if len(payload) > MAX_PAYLOAD_BYTES:
                raise SampleError(f"{len(payload)} bytes, more than the limit of {MAX_PAYLOAD_BYTES}")
            try:
                payload = json.loads(bytes(payload).decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as exc:
                raise SampleError(f"not a JSON document: {exc}") from None
        if not isinstance(payload, dict):
            raise SampleError(f"expected a JSON object, got {type(payload).__name__}")
        if "samples" in payload:
            unknown = set(payload) - _BATCH_KEYS
            if unknown:
                raise SampleError(f"unknown keys in a batch: {', '.join(sorted(map(str, unknown)))}")
            samples = payload["samples"]
            if not isinstance(samples, list):
                raise SampleError(f"'samples' must be a list, got {type(samples).__name__}")
            if len(samples) > MAX_BATCH:
                raise SampleError(f"batch of {len(samples)} samples, more than the limit of {MAX_BATCH}")
            return samples, _source(payload.get("source", ""))
        return [payload], ""

    def _check(self, raw: dict, source: str, reserved: set) -> Tuple[str, ExternalSample]:
        unknown = set(raw) - _SAMPLE_KEYS
        if unknown:
            raise SampleError(f"unknown keys: {', '.join(sorted(map(str, unknown)))}")
        for key in ("metric", "type", "value"):
            if key not in raw:
                raise SampleError(f"missing '{key}'")
        name = check_metric_name(raw["metric"])
        if name in reserved:
            raise SampleError(f"{name!r} is produced by an in-process plugin; external samples may not replace it")
        value_type = ValueType.parse(raw["type"])
        value = validate_value(value_type, raw["value"])
        age = self._age(raw.get("timestamp"))
        if age > self.settings.max_age:
            raise SampleError(f"sample is {age:.0f} s old, older than the max age of {self.settings.max_age:g} s")
        expires_at = self._clock() + self.settings.max_age - age
        return name, ExternalSample(value_type, value, source, expires_at)

    def _age(self, timestamp: Any) -> float:
        if timestamp is None:
            return 0.0
        if isinstance(timestamp, bool) or not isinstance(timestamp, (int, float)) or timestamp != timestamp:
            raise SampleError(f"timestamp must be a number of epoch seconds, got {timestamp!r}")
        seconds = timestamp / 1000.0 if timestamp > 1e11 else float(timestamp)
        age = self._wall() - seconds
        if age < -MAX_FUTURE_SKEW:
            raise SampleError(f"timestamp is {-age:.0f} s in the future (publisher clock wrong?)")
        return max(0.0, age)

    def _store(self, name: str, sample: ExternalSample) -> None:
        with self._lock:
            self._purge()
            if name not in self._samples and len(self._samples) >= self.settings.max_metrics:
                raise SampleError(f"already holding {len(self._samples)} external metrics, "
                                  f"the limit (Plugins.External.MaxMetrics)")
            self._samples[name] = sample

    # -- reporting --------------------------------------------------------------------------------
    def _purge(self) -> None:
        now = self._clock()
        for name in [n for n, s in self._samples.items() if s.expires_at <= now]:
            log.info("external custom metric %r from %s expired (no sample for %g s); dropped from reports",
                     name, self._samples[name].source or "an unnamed publisher", self.settings.max_age)
            del self._samples[name]

    def current(self, exclude: Iterable[str] = ()) -> Dict[str, ExternalSample]:
        """Unexpired samples by metric name, without the names in `exclude` (in-process metrics win)."""
        excluded = set(exclude)
        with self._lock:
            self._purge()
            return {n: s for n, s in self._samples.items() if n not in excluded}

    def forget(self, names: Iterable[str]) -> None:
        with self._lock:
            for name in names:
                self._samples.pop(name, None)


def _source(value: Any) -> str:
    if value in (None, ""):
        return ""
    if not isinstance(value, str) or len(value) > 128 or not value.isprintable():
        raise SampleError("'source' must be a printable string of at most 128 characters")
    return value
