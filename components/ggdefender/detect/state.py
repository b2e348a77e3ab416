"""Alarm state per (security profile, behavior), persisted so a restart neither loses nor repeats an alarm.

The file `detect-state.json` in the state folder holds every behavior's streak counters, open window,
active violation (id, start, last value, verification state, mitigation actions), the outbox of events and
findings not yet published, and the recent findings (so a later verification state can still update one).
It is written atomically after every observation that changed something.
"""

from __future__ import annotations

import collections
import json
import logging
from typing import Any, Optional

from ggdefender.statefile import atomic_write_json

log = logging.getLogger("ggdefender.detect.state")

STATE_FILE = "detect-state.json"
MAX_OUTBOX = 1000
MAX_FINDINGS = 500


class BehaviorState:
    """Streaks, the open window and the active violation of one behavior on this device."""

    __slots__ = ("fingerprint", "in_alarm", "violation_id", "violation_start", "last_value", "last_violation_time",
                 "vstreak", "cstreak", "last_dp_at", "win_index", "win_value", "verification",
                 "verification_description", "actions", "offending", "behavior", "kind")

    def __init__(self, fingerprint: str = "", behavior: Optional[dict] = None, kind: str = ""):
        self.fingerprint = fingerprint
        self.behavior = behavior  # the behavior JSON, so an alarm can still be invalidated after removal
        self.kind = kind
        self.in_alarm = False
        self.violation_id: Optional[str] = None
        self.violation_start: Optional[float] = None
        self.last_value: Any = None
        self.last_violation_time: Optional[float] = None
        self.vstreak = 0
        self.cstreak = 0
        self.last_dp_at: Optional[float] = None
        self.win_index: Optional[int] = None
        self.win_value: Any = None
        self.verification: Optional[str] = None
        self.verification_description: Optional[str] = None
        self.actions: list = []
        self.offending: Optional[tuple] = None

    def end_alarm(self) -> None:
        self.in_alarm = False
        self.violation_id = None
        self.violation_start = None
        self.last_value = None
        self.last_violation_time = None
        self.verification = None
        self.verification_description = None
        self.actions = []
        self.offending = None

    def to_json(self) -> dict:
        d = {k: getattr(self, k) for k in self.__slots__}
        for k in ("last_value", "win_value", "offending"):
            if isinstance(d[k], tuple):
                d[k] = {"tuple": list(d[k])}
        return d

    @classmethod
    def from_json(cls, d: dict) -> "BehaviorState":
        st = cls()
        for k in cls.__slots__:
            if k in d:
                v = d[k]
                if isinstance(v, dict) and set(v) == {"tuple"}:
                    v = tuple(v["tuple"])
                setattr(st, k, v)
        st.actions = list(st.actions or [])
        return st

    def active_violation(self, thing: str, behavior) -> dict:
        """AWS's ActiveViolation shape for this alarm."""
        from .violations import metric_value
        return {"violationId": self.violation_id, "thingName": thing, "securityProfileName": behavior.profile,
                "behavior": behavior.source, "lastViolationValue": metric_value(behavior.spec.kind, self.last_value),
                "lastViolationTime": self.last_violation_time, "violationStartTime": self.violation_start,
                "verificationState": self.verification or "UNKNOWN"}


class AlarmStore:
    """The persisted part of detect: behavior states, outbox, recent findings."""

    def __init__(self, path: Optional[str]):
        self.path = path
        self.states: dict = {}
        self.outbox: collections.deque = collections.deque(maxlen=MAX_OUTBOX)  # (kind, payload)
        self.findings: "collections.OrderedDict[str, dict]" = collections.OrderedDict()
        self.extra: dict = {}  # small state of other detect parts (e.g. the mitigation rate limiter)
        if path:
            self.load()

    def load(self) -> None:
        try:
            with open(self.path, encoding="utf-8") as fh:
                data = json.load(fh)
            states = {key: BehaviorState.from_json(d) for key, d in (data.get("states") or {}).items()
                      if isinstance(d, dict)}
            outbox = [tuple(item) for item in data.get("outbox") or [] if isinstance(item, list) and len(item) == 2]
            findings = dict(data.get("findings") or {})
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            # a corrupt file (unreadable, not JSON, or JSON of the wrong shape) must not stop detection;
            # alarms restart from scratch and say so
            log.error("alarm state %s unreadable (%s); starting without active alarms", self.path, exc)
            return
        self.states.update(states)
        self.outbox.extend(outbox)
        self.findings.update(findings)
        if isinstance(data.get("extra"), dict):
            self.extra = data["extra"]

    def remember_finding(self, violation_id: str, finding: dict) -> None:
        self.findings[violation_id] = finding
        self.findings.move_to_end(violation_id)
        while len(self.findings) > MAX_FINDINGS:
            self.findings.popitem(last=False)

    def save(self) -> None:
        if not self.path:
            return
        atomic_write_json(self.path, {
            "version": 1,
            "states": {k: s.to_json() for k, s in self.states.items()},
            "outbox": [list(x) for x in self.outbox],
            "findings": dict(self.findings),
            "extra": self.extra,
        })
