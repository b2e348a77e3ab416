"""The live view of `ggdefender local run`: one readable line per thing that happens, plus a state table.

Everything the core, the lifecycle runner, the cloud side and the bridge report comes here. The view keeps
the last events in memory (tests and `local status` read them) and, when given a stream, prints them.
Busy topics are folded: at most one line per topic per second, with a count of what was folded.
`HealthBoard` keeps each component's latest health document (docs/configuration.md, "Health") for `local
status` and `local config update`; the view prints a line when a component's health status or problems change.
"""

from __future__ import annotations

import collections
import datetime
import json
import threading
import time
from typing import Any, Iterable, Optional, TextIO

from ggdefender.health import problems as health_problems

_STATE_MARK = {"RUNNING": "+", "FINISHED": ".", "ERRORED": "!", "BROKEN": "X", "STOPPING": "-"}
MAX_FOLD_KEYS = 10_000  # topics remembered for folding; components may publish on ever-new topics
MAX_HEALTH_BYTES = 512 * 1024  # one health document (the component bounds it far below this)
MAX_HEALTH_COMPONENTS = 100
# Topics and messages come from components and the broker: control characters (ANSI escapes, newlines) are
# shown escaped so they can neither fake a line of the view nor drive the terminal.
_UNPRINTABLE = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7f, 0xa0))}


def _size(n: Optional[int]) -> str:
    if n is None:
        return "json"
    if n < 1024:
        return f"{n} B"
    return f"{n / 1024:.1f} KiB"


class View:
    def __init__(self, out: Optional[TextIO] = None, *, max_events: int = 5000, fold_seconds: float = 1.0):
        self.out = out
        self.events: collections.deque = collections.deque(maxlen=max_events)
        self.states: dict[str, str] = {}
        self.counters: collections.Counter = collections.Counter()
        self.fold_seconds = fold_seconds
        self._lock = threading.Lock()
        self._last_line: dict[str, float] = {}
        self._folded: collections.Counter = collections.Counter()
        self._started = time.time()
        self.health = HealthBoard()

    # -- sinks ---------------------------------------------------------------------------------------
    def _emit(self, event: dict, line: Optional[str], fold_key: Optional[str] = None) -> None:
        event.setdefault("at", time.time())
        with self._lock:
            self.events.append(event)
            if line is None or self.out is None:
                return
            if fold_key is not None:
                now = time.monotonic()
                if now - self._last_line.get(fold_key, -1e9) < self.fold_seconds:
                    self._folded[fold_key] += 1
                    return
                if len(self._last_line) >= MAX_FOLD_KEYS:
                    # forget topics whose fold window has passed (they would print anyway)
                    self._last_line = {k: t for k, t in self._last_line.items() if now - t < self.fold_seconds}
                    if len(self._last_line) >= MAX_FOLD_KEYS:
                        self._last_line = {}
                    self._folded = collections.Counter({k: n for k, n in self._folded.items() if k in self._last_line})
                self._last_line[fold_key] = now
                if self._folded.get(fold_key):
                    line += f"  (+{self._folded.pop(fold_key)} more since last shown)"
            stamp = time.strftime("%H:%M:%S", time.localtime(event["at"]))
            try:
                self.out.write(f"{stamp}  {line.translate(_UNPRINTABLE)}\n")
                self.out.flush()
            except (OSError, ValueError):
                pass

    def note(self, component: str, text: str, *, level: str = "info") -> None:
        tag = {"error": "ERROR ", "warning": "WARN  "}.get(level, "")
        self._emit({"kind": "note", "component": component, "text": text, "level": level},
                   f"{tag}{component}: {text}")

    def report(self, *, thing: str, fmt: str, accepted: bool, report_id: Any, size: int, detail: str = "") -> None:
        self.counters["accepted" if accepted else "rejected"] += 1
        verdict = "ACCEPTED" if accepted else "REJECTED"
        rid = f" report_id={report_id}" if report_id is not None else ""
        line = f"defender: {thing} {fmt} report{rid} ({_size(size)}) {verdict}"
        if detail:
            line += f": {detail}"
        self._emit({"kind": "report", "thing": thing, "format": fmt, "accepted": accepted, "reportId": report_id,
                    "bytes": size, "detail": detail}, line)

    def core_event(self, event: dict) -> None:
        """Core.on_event hook."""
        kind = event.get("kind")
        event = dict(event)
        if kind == "state":
            self.states[event["component"]] = event["state"]
            mark = _STATE_MARK.get(event["state"], " ")
            self._emit(event, f"[{mark}] {event['component']} is {event['state']}")
        elif kind == "denied":
            self.counters["denied"] += 1
            self._emit(event, f"DENIED {event.get('component')}: {event.get('message')}")
        elif kind == "policy-error":
            self._emit(event, f"WARN  {event.get('component')}: accessControl: {event.get('message')}")
        elif kind in ("iot-publish", "local-publish"):
            where = "IoT Core" if kind == "iot-publish" else "local"
            self.counters[kind] += 1
            line = (f"{event.get('component')} -> {where} {event.get('topic')} ({_size(event.get('bytes'))}, "
                    f"{event.get('subscribers', 0)} subscriber(s))")
            self._emit(event, line, fold_key=f"{kind}:{event.get('component')}:{event.get('topic')}")
        elif kind == "iot-subscribe":
            self._emit(event, f"{event.get('component')} subscribed to IoT Core {event.get('topic')}")
        elif kind == "config-update":
            paths = ", ".join("/" + p for p in event.get("paths", [])[:5])
            self._emit(event, f"{event.get('component')}: configuration updated ({paths})")
        elif kind == "restart-request":
            self._emit(event, f"{event.get('component')}: RestartComponent requested")
        else:
            self._emit(event, None)

    def health_document(self, component: str, payload: bytes) -> None:
        """A health document published by `component` (the core's name for the publisher, not the payload's)."""
        change = self.health.update(component, payload)
        if change is None:
            return
        status, problems = change
        self.counters["health"] += 1
        line = f"health {component}: {status}" + (f": {'; '.join(problems)}" if problems else "")
        self._emit({"kind": "health", "component": component, "status": status, "problems": problems},
                   line)

    # -- summaries -------------------------------------------------------------------------------------
    def table(self, components: dict) -> str:
        """A state table: name, version, state (components as Core.components() returns them)."""
        rows = [("COMPONENT", "VERSION", "STATE")]
        for name in sorted(components):
            rec = components[name]
            rows.append((name, getattr(rec, "version", ""), getattr(rec, "state", "")))
        widths = [max(len(str(r[i])) for r in rows) for i in range(3)]
        return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)

    def counts(self) -> dict:
        """The totals as numbers (`local status --json`)."""
        c = self.counters
        return {"reportsAccepted": c["accepted"], "reportsRejected": c["rejected"],
                "iotCoreMessages": c["iot-publish"], "localMessages": c["local-publish"], "denials": c["denied"]}

    def totals(self) -> str:
        return totals_text(self.counts())

    def print(self, text: str) -> None:
        if self.out is not None:
            with self._lock:
                self.out.write(text + "\n")
                self.out.flush()


def totals_text(counts: dict) -> str:
    """`View.counts()` for people (the live view's last line, `local status`)."""
    return (f"reports accepted {counts['reportsAccepted']}, rejected {counts['reportsRejected']}; IoT Core messages "
            f"{counts['iotCoreMessages']}, local messages {counts['localMessages']}; denials {counts['denials']}")


def _epoch(iso: Any) -> Optional[float]:
    if not isinstance(iso, str):
        return None
    try:
        return datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class HealthBoard:
    """The latest health document of each component, and a wait for a component's verdict on its sections."""

    def __init__(self) -> None:
        self._docs: dict[str, dict] = {}
        self._cond = threading.Condition()

    def update(self, component: str, payload: bytes) -> Optional[tuple]:
        """Record a document; (status, problems) when they changed (for the live view), else None."""
        if len(payload) > MAX_HEALTH_BYTES:
            return None
        try:
            doc = json.loads(payload)
        except (ValueError, RecursionError):
            return None
        if not isinstance(doc, dict):
            return None
        status = doc.get("status") if doc.get("status") in ("ok", "degraded") else "unknown"
        problems = health_problems(doc)
        with self._cond:
            if component not in self._docs and len(self._docs) >= MAX_HEALTH_COMPONENTS:
                return None
            old = self._docs.get(component)
            self._docs[component] = doc
            self._cond.notify_all()
        if old is not None and old.get("status") == doc.get("status") and health_problems(old) == problems:
            return None
        return status, problems

    def documents(self) -> dict:
        with self._cond:
            return json.loads(json.dumps(self._docs))

    def has(self, component: str) -> bool:
        with self._cond:
            return component in self._docs

    def sections(self, component: str) -> list:
        """The configuration sections `component` has given a verdict on."""
        with self._cond:
            conf = (self._docs.get(component) or {}).get("configuration")
            return sorted(conf) if isinstance(conf, dict) else []

    def wait_verdicts(self, component: str, sections: Iterable[str], since: float, timeout: float) -> dict:
        """{section: verdict} for each section whose `configuration.<section>` verdict is dated at or after
        `since` (epoch seconds), waiting at most `timeout` seconds; a section without one maps to None."""
        sections = list(sections)
        since_ms = int(since * 1000) / 1000.0  # the component dates verdicts to the millisecond

        def fresh() -> dict:
            conf = (self._docs.get(component) or {}).get("configuration")
            conf = conf if isinstance(conf, dict) else {}
            out = {}
            for section in sections:
                verdict = conf.get(section)
                at = _epoch(verdict.get("at")) if isinstance(verdict, dict) else None
                out[section] = verdict if at is not None and at >= since_ms else None
            return out

        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            while True:
                found = fresh()
                left = deadline - time.monotonic()
                if all(v is not None for v in found.values()) or left <= 0:
                    return found
                self._cond.wait(min(left, 1.0))
