"""The pure evaluator: datapoints in, violation events out.

- Without `durationSeconds` every observation carrying the metric is one datapoint.
- With it, observations fall into tumbling windows aligned to multiples of the duration since the epoch;
  a window's value is the sum of deltas (`aws:all-*`, cloud counters) or the last gauge value; a window
  becomes a datapoint (timed at its end) when an observation at or after its end arrives, or on `tick`. A
  window with no observation of the metric makes no datapoint. An observation older than the open window
  is dropped for that behavior.
- Static criteria compare with the behavior's value; statistical criteria with a percentile of this
  device's own history of the same metric and duration, taken before the datapoint is added; ML criteria
  with a band of that history (`statistics.ML_BANDS`). While the history is warming up a datapoint gives
  no verdict.
- `consecutiveDatapointsToAlarm`/`ToClear` count consecutive violating/compliant datapoints; an alarm with
  no datapoint for more than 172,800 s is invalidated; removing or changing a behavior invalidates its
  active alarm (POLICY).

No I/O happens here: the owner persists `states` (see `state.py`) and the history (`statistics.py`).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional, Tuple

from . import metrics as M
from .profile import STATIC, STATISTICAL
from .state import BehaviorState
from .statistics import History, StatsConfig
from .violations import CLEARED, IN_ALARM, INVALIDATED, make_event, new_violation_id

INVALIDATE_AFTER = 172_800.0  # seconds without a datapoint (AWS: "more than two days")

# recorder(behavior, t, value, threshold, verdict): verdict True=violating, False=compliant, None=no verdict
Recorder = Callable[[object, float, object, object, Optional[bool]], None]


class Evaluator:
    def __init__(self, thing: str, behaviors: Iterable = (), *, history: Optional[History] = None,
                 states: Optional[dict] = None, recorder: Optional[Recorder] = None,
                 id_factory: Callable[[], str] = new_violation_id):
        self.thing = thing
        self.history = history if history is not None else History(StatsConfig())
        self.states: dict = states if states is not None else {}
        self.recorder = recorder
        self.new_id = id_factory
        self.behaviors: dict = {}
        self._entries: list = []
        if behaviors:
            self.set_behaviors(behaviors, None)

    # -- configuration -------------------------------------------------------------------------------
    def set_behaviors(self, behaviors: Iterable, at: Optional[float]) -> list:
        """Swap the behavior set; active alarms of removed or changed behaviors are invalidated."""
        events = []
        new = {b.key: b for b in behaviors}
        for key, st in list(self.states.items()):
            b_new = new.get(key)
            if b_new is not None and st.fingerprint == b_new.fingerprint:
                continue
            old = self.behaviors.get(key) or b_new or _stub(key, st)
            if st.in_alarm:
                reason = "behavior removed" if b_new is None else "behavior changed"
                events.append(self._end(INVALIDATED, old, st, st.last_value, at or st.last_dp_at or 0.0, reason))
            del self.states[key]
        for key, b in new.items():
            if key not in self.states:
                self.states[key] = BehaviorState(b.fingerprint, b.source, b.spec.kind)
        self.behaviors = new
        self._entries = [(b, self.states[k]) for k, b in new.items()]
        return events

    # -- evaluation --------------------------------------------------------------------------------------
    def observe(self, metrics: dict, at: float) -> list:
        """Feed one observation ({metric name: value}, e.g. `metrics.extract(report)`) taken at `at`."""
        events: list = []
        pending: list = []
        get = metrics.get
        for b, st in self._entries:
            d = b.duration
            if d:
                idx = int(at // d)
                wi = st.win_index
                if wi is not None and idx != wi:
                    if idx < wi:
                        continue  # late observation: its window is already closed
                    self._datapoint(b, st, st.win_value, (wi + 1) * d, events, pending)
                    st.win_index = st.win_value = None
                v = get(b.metric)
                if v is not None:
                    if st.win_index is None:
                        st.win_index, st.win_value = idx, v
                    elif b.spec.aggregation == M.SUM:
                        st.win_value += v
                    else:
                        st.win_value = v
            else:
                v = get(b.metric)
                if v is not None:
                    self._datapoint(b, st, v, at, events, pending)
            if st.in_alarm and st.last_dp_at is not None and at - st.last_dp_at > INVALIDATE_AFTER:
                events.append(self._end(INVALIDATED, b, st, st.last_value, at, "no datapoint for more than 2 days"))
        for metric, duration, t, v in pending:
            self.history.add(metric, duration, t, v)
        return events

    def tick(self, at: float) -> list:
        """Close windows that have ended and invalidate stale alarms, without a new observation."""
        return self.observe({}, at)

    def _datapoint(self, b: Any, st: BehaviorState, value: Any, t: float, events: list, pending: list) -> None:
        st.last_dp_at = t
        ctype = b.criteria_type
        threshold = None
        if ctype is STATIC:
            violating, offending = b.check(value)
        else:
            pending.append((b.metric, b.duration, t, value))
            offending = None
            if ctype is STATISTICAL:
                threshold = self.history.threshold(b.metric, b.duration, b.quantile)
                if threshold is None:
                    if self.recorder:
                        self.recorder(b, t, value, None, None)
                    return
                violating = not b.compare(value, threshold)
            else:  # ML
                threshold = self.history.ml_band(b.metric, b.duration, b.confidence)
                if threshold is None:
                    if self.recorder:
                        self.recorder(b, t, value, None, None)
                    return
                violating = value < threshold[0] or value > threshold[1]
        if self.recorder:
            self.recorder(b, t, value, threshold if ctype is not STATIC else b.threshold, violating)
        events.extend(step(self.thing, b, st, value, t, violating, offending,
                           threshold if ctype is not STATIC else None, self.new_id))

    def _end(self, kind: str, b: Any, st: BehaviorState, value: Any, at: float, reason: Optional[str] = None) -> dict:
        return end_alarm(kind, self.thing, b, st, value, at, reason)

    # -- views ---------------------------------------------------------------------------------------------
    def active_violations(self) -> list:
        return [st.active_violation(self.thing, b) for b, st in self._entries if st.in_alarm]

    def state_of(self, violation_id: str) -> Tuple[Any, Optional[BehaviorState]]:
        for b, st in self._entries:
            if st.in_alarm and st.violation_id == violation_id:
                return b, st
        return None, None


def step(thing: str, b: Any, st: BehaviorState, value: Any, t: float, violating: bool, offending: Optional[tuple],
         threshold: Any, new_id: Callable[[], str]) -> list:
    """One verdict through the consecutiveDatapointsToAlarm/ToClear streaks: the events it causes (0 or 1).

    Shared by the device (`Evaluator`) and the fleet tier (`ggdefender.fleet.evaluation`); `threshold` is the
    resolved statistical threshold or ML band (None for static criteria), reported on `in-alarm`.
    """
    if violating:
        st.vstreak += 1
        st.cstreak = 0
        if st.in_alarm:
            st.last_value, st.last_violation_time, st.offending = value, t, offending
        elif st.vstreak >= b.to_alarm:
            st.in_alarm = True
            st.violation_id = new_id()
            st.violation_start = t
            st.last_value, st.last_violation_time, st.offending = value, t, offending
            st.actions = []
            ev = make_event(IN_ALARM, thing=thing, behavior=b, alarm=st, value=value, at=t, offending=offending)
            if threshold is not None:
                ev["thresholdValue"] = list(threshold) if isinstance(threshold, tuple) else threshold
            return [ev]
    else:
        st.cstreak += 1
        st.vstreak = 0
        if st.in_alarm and st.cstreak >= b.to_clear:
            return [end_alarm(CLEARED, thing, b, st, value, t)]
    return []


def end_alarm(kind: str, thing: str, b: Any, st: BehaviorState, value: Any, at: float,
              reason: Optional[str] = None) -> dict:
    """The cleared/invalidated event of an active alarm, which it ends (streaks restart)."""
    event = make_event(kind, thing=thing, behavior=b, alarm=st, value=value, at=at, reason=reason)
    st.end_alarm()
    st.vstreak = st.cstreak = 0
    return event


def _stub(key: str, st: BehaviorState) -> Any:
    """Enough of a removed behavior (known only from persisted state) to write its invalidation event."""
    from types import SimpleNamespace

    profile, _, name = key.partition("/")
    return SimpleNamespace(profile=profile, name=name, source=st.behavior or {"name": name},
                           spec=SimpleNamespace(kind=st.kind or "count"), suppress=False, confidence=None)
