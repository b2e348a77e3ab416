"""`DetectService`: on-device Detect wired into the collector process (process B).

Process B's host (collector/process.py) calls `reconfigure(section)` with the `Detect` configuration section;
the collector, its peer, calls `observe(report, at)` after each report. Detect evaluates every behavior, persists alarm state and history in the state folder,
and publishes through `ggdefender.ipc.Ipc`:

| what | IoT Core | local |
|---|---|---|
| violation events | `ggdefender/things/{thing}/violations` | `ggdefender/violations` |
| ASFF findings | `ggdefender/things/{thing}/findings` | `ggdefender/findings` |
| mitigation requests | | none: the private relay to process A (`RelayClient.mitigate`; results come back on it) |

Everything to publish goes through a persisted outbox first, so a failed publish is retried on the next
observation and a restart replays what was not yet sent (at-least-once; consumers dedupe on violationId +
violationEventType, or on the finding's Id + UpdatedAt). An item that is refused (not merely undeliverable
right now) is dropped after a few tries so it cannot hold back later ones; drops are counted (detect/outbox.py).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from ggdefender import health, ratelog, topics
from ggdefender.ipc import IOT_CORE_MAX_PAYLOAD
from ggdefender.relay_wire import MitigationRefused

from . import config as C
from . import findings as F
from . import metrics as M
from . import mitigation as MIT
from .evaluator import Evaluator
from .profile import load_profile, make_check
from .state import STATE_FILE, AlarmStore
from .statistics import History
from .threatintel import THREAT_PROFILE, refresh
from .violations import CLEARED, IN_ALARM, INVALIDATED

if TYPE_CHECKING:
    from ggdefender.ipc_port import CollectorPort

log = logging.getLogger("ggdefender.detect")
_local_copies = ratelog.RateLimitedLog(log)  # a refused local copy of a violation or finding: said once per topic

STATS_FILE = "detect-statistics.json"
LOCAL_VIOLATIONS = topics.LOCAL_VIOLATIONS
LOCAL_FINDINGS = topics.LOCAL_FINDINGS
HISTORY_SAVE_SECONDS = 60.0
MAX_ACTION_RECORDS = 200  # violations whose mitigation actions are remembered for late results


violations_topic = topics.violations
findings_topic = topics.findings


class _LiveCidrs:
    """Membership in a threat list's current content (the list may be re-read without recompiling)."""

    __slots__ = ("tl",)

    def __init__(self, tl: Any):
        self.tl = tl

    def __contains__(self, ip: Any) -> bool:
        return self.tl.cidrs.contains(ip)


def threat_behaviors(lists: Sequence[Any]) -> list:
    """One synthetic `not-in-cidr-set` behavior per threat list, in profile `ggdefender-threat-intel`."""
    if not lists:
        return []
    doc = {"securityProfileName": THREAT_PROFILE,
           "securityProfileDescription": "Destination addresses checked against configured threat lists",
           "behaviors": [tl.behavior_json() for tl in lists]}
    prof = load_profile(doc)
    out = []
    for beh, tl in zip(prof.behaviors, lists):
        beh.check = make_check("not-in-cidr-set", _LiveCidrs(tl))
        beh.source = dict(beh.source, threatList={"name": tl.name, "source": tl.source, "entries": len(tl.cidrs)})
        out.append(beh)
    return out


class DetectService:
    """The `Detect` part (part.Part) of process B, a peer of the collector: it observes each built report."""

    section = "Detect"

    def __init__(self, ipc: CollectorPort, thing: str, state_dir: str, *, clock: Callable[[], float] = time.time):
        self.ipc = ipc
        self.thing = thing
        self.state_dir = state_dir
        self.clock = clock
        self.config = C.DetectConfig(enabled=False)
        self._lock = threading.RLock()
        self.store = AlarmStore(os.path.join(state_dir, STATE_FILE))
        self.history = History(path=os.path.join(state_dir, STATS_FILE))
        self.evaluator = Evaluator(thing, history=self.history, states=self.store.states)
        self.mitigator = MIT.Mitigator(memory=self.store.extra.setdefault("mitigation", {}))
        self._results_sub = None
        self._configured = False
        self._history_saved = float("-inf")
        self._outbox_reported: Optional[dict] = None

    # -- configuration ---------------------------------------------------------------------------------
    def reconfigure(self, section: Optional[dict]) -> None:
        """Validate and apply the `Detect` section; raises ConfigError and keeps the old one when invalid."""
        cfg = C.parse(section)
        behaviors = [b for p in cfg.profiles for b in p.behaviors] + threat_behaviors(cfg.threat_lists)
        with self._lock:
            now = self.clock()
            self.config = cfg
            self.history.cfg = cfg.stats
            self.mitigator.cfg = cfg.mitigation
            events = self.evaluator.set_behaviors(behaviors, now)
            self._configured = True
            self._handle(events, now)
            self._apply_verification(now)
            self._persist()
            subscribe = getattr(self.ipc, "subscribe_mitigation", None)  # only the relay to process A has it
            if cfg.mitigation.enabled and subscribe is not None and self._results_sub is None:
                try:
                    self._results_sub = subscribe(self._on_result)
                except Exception as exc:  # mitigation still works; results are then not recorded
                    log.warning("cannot subscribe to mitigation results: %s", exc)
            self._flush()
        log.info("detect configured: %d profile(s), %d behavior(s), %d threat list(s), mitigation %s",
                 len(cfg.profiles), len(behaviors), len(cfg.threat_lists), "on" if cfg.mitigation.enabled else "off")

    def start(self) -> None:
        """Nothing to begin: detect works on each observed report; its subscription follows its section."""

    # -- evaluation -----------------------------------------------------------------------------------------
    def observe(self, report: dict, at: float) -> list:
        """Evaluate one report (long-name form) received/built at `at`; returns the violation events."""
        with self._lock:
            if not self.config.enabled:
                return []
            if self.config.threat_lists:
                refresh(self.config.threat_lists)
            metrics = M.extract(report, self.config.custom_types)
            events = self.evaluator.observe(metrics, at)
            now = self.clock()
            if events:
                self._handle(events, now)
            if events or self.store.outbox or self.evaluator.behaviors:
                self._persist()
            self._flush()
            return events

    def _handle(self, events: list, now: float) -> None:
        fcfg = self.config.findings
        for ev in events:
            key = f"{ev['securityProfileName']}/{ev['behavior'].get('name')}"
            vid = ev["violationId"]
            requests = []
            finding = None
            if ev["violationEventType"] == IN_ALARM:
                beh = self.evaluator.behaviors.get(key)
                st = self.evaluator.states.get(key)
                if beh is not None and st is not None:
                    actions, requests = self.mitigator.plan(ev, beh, now)
                    if actions:
                        st.actions = actions
                        ev["mitigationActions"] = [dict(a) for a in actions]
                        records = self.store.extra.setdefault("actions", {})
                        records[vid] = [dict(a) for a in actions]
                        while len(records) > MAX_ACTION_RECORDS:
                            records.pop(next(iter(records)))
                if fcfg.enabled and not ev.get("suppressAlerts"):
                    finding = F.new_finding(ev, fcfg, now)
            elif ev["violationEventType"] in (CLEARED, INVALIDATED):
                old = self.store.findings.get(vid)
                if old is not None:
                    finding = F.close_finding(old, ev, now)
            if finding is not None and ev.get("mitigationActions"):
                finding = F.record_actions(finding, ev["mitigationActions"], now, bump=False)
            self.store.outbox.append(("violation", ev))
            for r in requests:
                self.store.outbox.append(("request", r))
            if finding is not None:
                self.store.remember_finding(vid, finding)
                self.store.outbox.append(("finding", finding))
            log.info("violation %s %s %s", ev["violationEventType"], key, vid)

    def _apply_verification(self, now: float) -> None:
        """Verification states from configuration onto active alarms and remembered findings."""
        for vid, (state, desc) in self.config.verification.items():
            _, st = self.evaluator.state_of(vid)
            if st is not None:
                st.verification, st.verification_description = state, desc or None
            old = self.store.findings.get(vid)
            if old is None:
                continue
            pf = old.get("ProductFields", {})
            if pf.get("ggdefender/verificationState") == state and \
                    pf.get("ggdefender/verificationStateDescription", "") == (desc or ""):
                continue
            f = F.set_verification(old, state, desc, now)
            self.store.remember_finding(vid, f)
            self.store.outbox.append(("finding", f))

    # -- mitigation requests and results ---------------------------------------------------------------------
    def _request_mitigation(self, request: dict) -> None:
        """Ask process A over the private relay; A's refusal is this action's final result (no retry)."""
        mitigate = getattr(self.ipc, "mitigate", None)
        if mitigate is None:
            self._record_result({"requestId": request.get("requestId"), "status": "REJECTED",
                                 "detail": "no private channel to the remediation part (the collector was not "
                                           "started by `ggdefender run`)"}, flush=False)
            return
        try:
            mitigate(request)
        except MitigationRefused as exc:
            log.warning("mitigation %s refused by the remediation part: %s", request.get("requestId"), exc)
            self._record_result({"requestId": request.get("requestId"), "status": "REJECTED",
                                 "detail": str(exc)}, flush=False)

    def _on_result(self, payload: Any) -> None:
        """A result from process A (relay callback thread)."""
        self._record_result(payload)

    def _record_result(self, payload: Any, flush: bool = True) -> None:
        if not isinstance(payload, dict) or not isinstance(payload.get("requestId"), str):
            return
        with self._lock:
            now = self.clock()
            rid = payload["requestId"]
            records = self.store.extra.setdefault("actions", {})
            vid = next((v for v, acts in records.items() if any(a.get("requestId") == rid for a in acts)), None)
            if vid is None or not MIT.apply_result(records[vid], payload, now):
                return
            for st in self.evaluator.states.values():
                if st.in_alarm and st.violation_id == vid:
                    st.actions = [dict(a) for a in records[vid]]
            old = self.store.findings.get(vid)
            if old is not None:
                f = F.record_actions(old, records[vid], now)
                self.store.remember_finding(vid, f)
                self.store.outbox.append(("finding", f))
            self._persist()
            if flush:  # not from inside a flush (the finding then goes out with the next one)
                self._flush()

    # -- output -----------------------------------------------------------------------------------------
    def _persist(self, force_history: bool = False) -> None:
        try:
            self.store.save()
            # the history can hold 20,000 values per series: written at most once a minute (and on close);
            # a crash loses at most a minute of baseline, never an alarm
            now = time.monotonic()
            if force_history or now - self._history_saved >= HISTORY_SAVE_SECONDS:
                self.history.save()
                self._history_saved = now
        except OSError as exc:
            log.error("cannot persist detect state in %s: %s", self.state_dir, exc)

    def _flush(self) -> None:
        """Publish the outbox (detect/outbox.py: per-item failures, bounded tries, counted drops)."""
        if self.ipc is None:
            return
        if self.store.outbox:
            _, changed = self.store.outbox.flush(self._publish)
            if changed:
                self._persist()
        self._report_outbox()

    def _report_outbox(self) -> None:
        """The outbox in the health document, sent only when it changed (one relay call, not one per report)."""
        value = self.store.outbox.status()
        if value != self._outbox_reported:
            self._outbox_reported = value
            health.report(self.ipc, "outbox", value)

    def _publish(self, kind: str, payload: dict) -> None:
        data = json.dumps(payload, separators=(",", ":")).encode()
        if kind != "request" and len(data) >= IOT_CORE_MAX_PAYLOAD:
            # refused by every core: an item error, not a reason to stop the outbox
            raise ValueError(f"{len(data)} bytes, over the IoT Core limit of {IOT_CORE_MAX_PAYLOAD - 1}")
        if kind == "violation":
            self.ipc.publish_iot(violations_topic(self.thing), data)
            self._publish_local_copy(LOCAL_VIOLATIONS, payload)
        elif kind == "finding":
            self.ipc.publish_iot(findings_topic(self.thing), data)
            self._publish_local_copy(LOCAL_FINDINGS, payload)
        elif kind == "request":
            self._request_mitigation(payload)

    def _publish_local_copy(self, topic: str, payload: dict) -> None:
        """The local copy, after the IoT Core one went out: its failure must not make the outbox send the item to
        IoT Core again. (Nucleus lite refuses a local JSON message of more than 255 values, e.g. a violation
        listing hundreds of ports: ServiceError.)"""
        try:
            self.ipc.publish_local(topic, payload)
            _local_copies.recovered(topic, "local copies on %s are published again", topic)
        except Exception as exc:
            _local_copies.failed(topic, "local copy on %s not published (the IoT Core one was): %s", topic, exc)

    # -- views ------------------------------------------------------------------------------------------------
    def active_violations(self) -> list:
        with self._lock:
            return self.evaluator.active_violations()

    def status(self) -> dict:
        with self._lock:
            ml = {}
            for b in self.evaluator.behaviors.values():
                if b.criteria_type != "STATIC":
                    ml[b.key] = self.history.model_status(b.metric, b.duration)
            return {"enabled": self.config.enabled, "profiles": [p.name for p in self.config.profiles],
                    "behaviors": sorted(self.evaluator.behaviors), "activeViolations": self.active_violations(),
                    "models": ml, "outbox": self.store.outbox.status()}

    def close(self) -> None:
        with self._lock:
            if self._results_sub is not None:
                try:
                    self._results_sub.close()
                except Exception:
                    pass
                self._results_sub = None
            self._persist(force_history=True)

