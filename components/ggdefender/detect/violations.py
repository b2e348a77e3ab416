"""Violation events shaped like AWS's `ViolationEvent`, plus two documented extensions.

AWS fields: violationId, thingName, securityProfileName, behavior, metricValue,
violationEventAdditionalInfo.confidenceLevel (ML), violationEventType, verificationState,
verificationStateDescription, violationEventTime (epoch seconds, as the API's timestamps serialise).
Extensions (prefixed nowhere, documented in docs/detect.md): `violationStartTime`, `offendingValues` (the
values that broke a set rule or the threshold that was crossed), `suppressAlerts`, `mitigationActions`
(each local remediation request and its result), `reason` (why an alarm was invalidated).
"""

from __future__ import annotations

import uuid
from typing import Any, Optional

IN_ALARM, CLEARED, INVALIDATED = "in-alarm", "alarm-cleared", "alarm-invalidated"
VERIFICATION_STATES = ("FALSE_POSITIVE", "BENIGN_POSITIVE", "TRUE_POSITIVE", "UNKNOWN")


def new_violation_id() -> str:
    return str(uuid.uuid4())


def metric_value(kind: str, value: Any) -> dict:
    """A datapoint as AWS's MetricValue object."""
    if value is None:
        return {}
    if kind == "count":
        return {"count": int(value)}
    if kind == "number":
        return {"number": float(value)}
    return {kind: list(value)}


def make_event(event_type: str, *, thing: str, behavior: Any, alarm: Any, value: Any, at: float,
               offending: Optional[tuple] = None, reason: Optional[str] = None) -> dict:
    """One event. `alarm` is the behavior's BehaviorState (violation id, start, verification, actions)."""
    event = {
        "violationId": alarm.violation_id,
        "thingName": thing,
        "securityProfileName": behavior.profile,
        "behavior": behavior.source,
        "metricValue": metric_value(behavior.spec.kind, value),
        "violationEventType": event_type,
        "violationEventTime": round(at, 3),
        "violationStartTime": round(alarm.violation_start, 3) if alarm.violation_start is not None else None,
        "verificationState": alarm.verification or "UNKNOWN",
        "suppressAlerts": behavior.suppress,
    }
    if alarm.verification_description:
        event["verificationStateDescription"] = alarm.verification_description
    if behavior.confidence:
        event["violationEventAdditionalInfo"] = {"confidenceLevel": behavior.confidence}
    if offending:
        event["offendingValues"] = list(offending)
    if alarm.actions:
        event["mitigationActions"] = [dict(a) for a in alarm.actions]
    if reason:
        event["reason"] = reason
    return event
