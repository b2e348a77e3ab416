"""Cloud-side Detect metrics, offline: what AWS IoT Core would measure about the local thing's MQTT traffic.

`ggdefender local` plays AWS IoT Core for its components, so it can measure what only the cloud sees:

| metric | measured as |
|---|---|
| `aws:message-byte-size` | payload bytes of each message a component publishes to IoT Core |
| `aws:num-messages-sent` | 1 per such message (summed over `durationSeconds` windows) |
| `aws:num-authorization-failures` | 1 per IoT Core publish/subscribe the core's authorization denied |

Profiles: every `*.json` CreateSecurityProfile document in `<root>/cloud/detect/profiles/` (re-read when the
folder changes). Only their cloud-side behaviors are evaluated here; device-side behaviors are the
component's own job (`Detect` configuration). `metricDimension` works with topic-filter dimensions defined in
`<root>/cloud/detect/dimensions.json` (`{"dimensionName": ["topic/filter/#", ...]}`, like CreateDimension's
`stringValues`). Violations go to IoT Core topic `ggdefender/things/{thing}/violations` (as the device's
own), to `<root>/cloud/detect/violations.jsonl`, and to the live view. Alarm state and history persist in
`<root>/cloud/detect/state/`. A window with no message makes no datapoint (same POLICY as device metrics).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from ggdefender.detect.evaluator import Evaluator
from ggdefender.detect.profile import ProfileError, read_profile_file
from ggdefender.detect.state import STATE_FILE, AlarmStore
from ggdefender.detect.statistics import History

from ..nucleus.core import topic_matches
from .services import Declaration

log = logging.getLogger("ggdefender.local.cloud.metrics_service")

MEASURED = ("aws:message-byte-size", "aws:num-messages-sent", "aws:num-authorization-failures")
MAX_KEPT_EVENTS = 1000
IOT_SERVICE = "aws.greengrass.ipc.mqttproxy"


def violations_topic(thing: str) -> str:
    return f"ggdefender/things/{thing}/violations"


class CloudMetricsService:
    def __init__(self, core: Any, root_dir: Any, view: Any = None, *, tick_seconds: float = 1.0,
                 clock: Callable[[], float] = time.time):
        self.core = core
        self.view = view
        self.clock = clock
        self.thing = core.thing_name
        self.dir = Path(root_dir) / "cloud" / "detect"
        self.profiles_dir = self.dir / "profiles"
        self.events: list = []
        self._lock = threading.RLock()
        state_dir = self.dir / "state"
        self.store = AlarmStore(str(state_dir / STATE_FILE))
        self.history = History(path=str(state_dir / "statistics.json"))
        self.evaluator = Evaluator(self.thing, history=self.history, states=self.store.states)
        self.dimensions: dict = {}   # behavior metric key -> (filters, operator)
        self._signature = None
        self._dirty = False
        self._reload()
        self._unsubs = [core.subscribe_iot("#", self._on_message), core.subscribe_iot("$aws/#", self._on_message)]
        self._prev_hook = core.on_event
        core.on_event = self._on_core_event  # chained: the previous hook (the live view) still gets every event
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._ticker, args=(tick_seconds,), name="cloud-metrics", daemon=True)
        self._thread.start()

    # -- profiles ------------------------------------------------------------------------------------
    def _folder_signature(self):
        try:
            entries = sorted((p.name, p.stat().st_mtime_ns) for p in self.profiles_dir.glob("*.json"))
        except OSError:
            entries = []
        dims = self.dir / "dimensions.json"
        return tuple(entries), dims.stat().st_mtime_ns if dims.exists() else None

    def _note(self, text: str, level: str = "info") -> None:
        log.log(logging.WARNING if level != "info" else logging.INFO, "%s", text)
        if self.view is not None:
            self.view.note("cloud-detect", text, level=level)

    def _load_dimensions(self) -> dict:
        path = self.dir / "dimensions.json"
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise ValueError("expected an object {dimensionName: [topic filters]}")
            out = {}
            for name, filters in data.items():
                if not isinstance(filters, list) or not 1 <= len(filters) <= 100 or \
                        not all(isinstance(f, str) and 1 <= len(f) <= 256 for f in filters):
                    raise ValueError(f"{name}: expected 1-100 topic filters of 1-256 characters")
                out[name] = list(filters)
            return out
        except (OSError, ValueError) as exc:
            self._note(f"{path}: {exc}; dimensions ignored", "error")
            return {}

    def _reload(self) -> None:
        sig = self._folder_signature()
        if sig == self._signature:
            return
        self._signature = sig
        dims = self._load_dimensions()
        dimension_keys: dict = {}
        behaviors, skipped = [], 0
        for path in sorted(self.profiles_dir.glob("*.json")) if self.profiles_dir.is_dir() else []:
            try:
                prof = read_profile_file(str(path))
            except ProfileError as exc:
                self._note(f"profile rejected: {exc}", "error")
                continue
            for b in prof.behaviors:
                if b.metric not in MEASURED:
                    skipped += 1
                    continue
                if b.dimension:
                    name = b.dimension.get("dimensionName")
                    if name not in dims:
                        self._note(f"{prof.name}/{b.name}: dimension {name!r} is not defined in dimensions.json; "
                                   "behavior skipped", "error")
                        continue
                    op = b.dimension.get("operator", "IN")
                    b.metric = f"{b.metric}|{name}|{op}"  # a metric key of its own: only matching messages count
                    dimension_keys[b.metric] = (dims[name], op)
                behaviors.append(b)
        with self._lock:
            self.dimensions = dimension_keys
            events = self.evaluator.set_behaviors(behaviors, self.clock())
            self._publish(events)
            self._dirty = True
        self._note(f"cloud-side detect: {len(behaviors)} behavior(s) evaluated"
                   + (f", {skipped} device-side behavior(s) left to the device" if skipped else ""))

    # -- measurements ------------------------------------------------------------------------------------
    def _observe(self, base: dict, topic: Optional[str]) -> None:
        metrics = dict(base)
        for key, (filters, op) in self.dimensions.items():
            metric = key.split("|", 1)[0]
            if metric in base and topic is not None:
                inside = any(topic_matches(f, topic) for f in filters)
                if inside == (op == "IN"):
                    metrics[key] = base[metric]
        with self._lock:
            events = self.evaluator.observe(metrics, self.clock())
            self._publish(events)
            self._dirty = True

    def _on_message(self, topic: str, payload: bytes, source: str) -> None:
        if source == "cloud" or not self.evaluator.behaviors:
            return  # cloud -> device traffic, including our own violation messages
        self._observe({"aws:message-byte-size": len(payload), "aws:num-messages-sent": 1}, topic)

    def _on_core_event(self, event: dict) -> None:
        prev = self._prev_hook
        if prev is not None:
            prev(event)
        if event.get("kind") == "denied" and event.get("service") == IOT_SERVICE and self.evaluator.behaviors:
            self._observe({"aws:num-authorization-failures": 1}, event.get("topic"))

    def tick(self) -> None:
        """Re-read changed profiles, close ended windows, persist: once a second from the ticker thread."""
        self._reload()
        with self._lock:
            self._publish(self.evaluator.tick(self.clock()))
            if self._dirty:
                self.store.save()
                self.history.save()
                self._dirty = False

    def _ticker(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                self.tick()
            except Exception:  # the ticker must outlive a bad file or a full disk
                log.exception("cloud-side detect tick failed")

    # -- output -------------------------------------------------------------------------------------------
    def _publish(self, events: list) -> None:
        if not events:
            return
        lines = [json.dumps(e, separators=(",", ":")) for e in events]
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "violations.jsonl", "a", encoding="utf-8") as fh:
            fh.writelines(line + "\n" for line in lines)
        for e, line in zip(events, lines):
            self.events.append(e)
            del self.events[:-MAX_KEPT_EVENTS]
            self.core.publish_iot(violations_topic(self.thing), line.encode(), source="cloud")
            self._note(f"{e['violationEventType']}: {e['securityProfileName']}/{e['behavior'].get('name')} "
                       f"{json.dumps(e.get('metricValue'))}", "warning" if e["violationEventType"] == "in-alarm" else "info")

    def control_commands(self) -> dict:
        return {"detect-violations": self._cmd_violations}

    def _cmd_violations(self, args: dict) -> dict:
        limit = max(1, min(int(args.get("limit", 20)), MAX_KEPT_EVENTS))
        with self._lock:
            return {"active": self.evaluator.active_violations(), "events": self.events[-limit:],
                    "behaviors": sorted(self.evaluator.behaviors)}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for unsub in self._unsubs:
            unsub()
        if self.core.on_event == self._on_core_event:
            self.core.on_event = self._prev_hook
        with self._lock:
            try:
                self.store.save()
                self.history.save()
            except OSError as exc:
                log.error("cannot persist cloud-side detect state: %s", exc)


DECLARATION = Declaration("metrics", CloudMetricsService,
                          "cloud-side Detect: evaluates Security Profiles on the received reports and raises alarms")
