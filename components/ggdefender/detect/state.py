"""Alarm state per (security profile, behavior), persisted so a restart neither loses nor repeats an alarm.

The file `detect-state.json` in the state folder holds every behavior's streak counters, open window,
active violation (id, start, last value, verification state, mitigation actions), the outbox of events and
findings not yet published, and the recent findings (so a later verification state can still update one).
It is written atomically after every observation that changed something.
"""

from __future__ import annotations

import collections
import logging
from typing import Any, Dict, Optional, Tuple, Union

from ggdefender.statefile import atomic_write_json, need, read_json

from .outbox import MAX_OUTBOX, Outbox
from .outbox import check_json as check_outbox

log = logging.getLogger("ggdefender.detect.state")

STATE_FILE = "detect-state.json"
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

    def active_violation(self, thing: str, behavior: Any) -> dict:
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
        self.outbox = Outbox(MAX_OUTBOX)
        self.findings: "collections.OrderedDict[str, dict]" = collections.OrderedDict()
        self.extra: dict = {}  # small state of other detect parts (e.g. the mitigation rate limiter)
        if path:
            self.load()

    def load(self) -> None:
        # a file of the wrong shape is moved aside: alarms restart from scratch and say so, detection goes on
        assert self.path is not None  # loaded only with a path (__init__)
        data = read_json(self.path, check_state, lambda: None, what="detect alarm state", log=log)
        if data is None:
            return
        self.states.update((k, BehaviorState.from_json(d)) for k, d in data["states"].items())
        self.outbox.load_json(data["outbox"])
        self.findings.update(data["findings"])
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
            "version": 2,
            "states": {k: s.to_json() for k, s in self.states.items()},
            "outbox": self.outbox.to_json(),
            "findings": dict(self.findings),
            "extra": self.extra,
        })


# -- shape of detect-state.json ----------------------------------------------------------------------------
_NUM = (int, float)
_OPT_NUM = (int, float, type(None))
_OPT_STR = (str, type(None))
# BehaviorState field -> allowed JSON types ("last_value", "win_value" hold any metric value)
_FIELDS: Dict[str, Union[type, Tuple[type, ...]]] = {"fingerprint": str, "behavior": (dict, type(None)), "kind": str, "in_alarm": bool,
           "violation_id": _OPT_STR, "violation_start": _OPT_NUM, "last_violation_time": _OPT_NUM,
           "vstreak": int, "cstreak": int, "last_dp_at": _OPT_NUM, "win_index": (int, type(None)),
           "verification": _OPT_STR, "verification_description": _OPT_STR, "actions": (list, type(None)),
           "offending": (dict, type(None))}


def _check_behavior_state(key: str, d: Any) -> dict:
    where = f"states[{key!r}]"
    need(d, dict, where)
    for name, kinds in _FIELDS.items():
        if name in d:
            need(d[name], kinds, f"{where}.{name}")
    for name in ("last_value", "win_value", "offending"):
        v = d.get(name)
        if isinstance(v, dict) and set(v) == {"tuple"}:
            need(v["tuple"], list, f"{where}.{name}.tuple")
        elif name == "offending" and v is not None:
            raise ValueError(f"{where}.offending must be {{\"tuple\": [...]}} or null")
    for i, a in enumerate(d.get("actions") or []):
        need(a, dict, f"{where}.actions[{i}]")
    if d.get("in_alarm") and not isinstance(d.get("violation_id"), str):
        raise ValueError(f"{where} is in alarm without a violation_id")
    return d


def check_state(data: Any) -> dict:
    """detect-state.json checked field by field (ValueError names the first wrong one)."""
    need(data, dict, "the alarm state")
    states = need(data.get("states", {}), dict, "states")
    for key, d in states.items():
        _check_behavior_state(key, d)
    findings = need(data.get("findings", {}), dict, "findings")
    for vid, f in findings.items():
        need(f, dict, f"findings[{vid!r}]")
    extra = need(data.get("extra", {}), dict, "extra")
    outbox = check_outbox(data.get("outbox", []), "outbox")
    return {"states": states, "findings": findings, "extra": extra, "outbox": outbox}
