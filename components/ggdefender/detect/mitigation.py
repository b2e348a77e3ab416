"""Local mitigation policy: behavior -> remediation operation, rate-limited (off by default).

On `in-alarm` of a behavior that has a rule, detect sends one request per target to the remediation part
on local topic `ggdefender/remediation/requests` ({"requestId", "operation", "arguments", "reason",
"violationId"}); the remediation part runs it through the same allow-list and safety checks as a job and
answers on `ggdefender/remediation/results`. Targets come from the violation's offending values:
`stop-listener` gets each offending port (protocol from the metric), `block-ip` each offending address;
other operations take only the rule's static `Arguments`.

Rate limits, so a flapping alarm cannot loop: at most `MaxActionsPerHour` requests in any hour, and the
same operation on the same target not again within `CooldownSeconds`. A limited action is still recorded
(status `rate-limited`) on the violation and finding. The limiter's memory is persisted with the alarm state.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Optional

# the listener's own operation list (a small module: process B does not load the listener)
from ggdefender.remediation.config import ALL_OPERATIONS as OPERATIONS
from ggdefender.settings import ConfigError, as_bool, as_int, as_section, as_str

HOUR = 3600.0


@dataclass(frozen=True)
class Rule:
    operation: str
    arguments: dict = field(default_factory=dict)


@dataclass(frozen=True)
class MitigationConfig:
    enabled: bool = False
    rules: dict = field(default_factory=dict)   # "Profile/Behavior" or "Behavior" -> Rule
    max_per_hour: int = 6
    cooldown_seconds: float = 600.0
    max_targets: int = 5                          # requests per violation


def parse_config(section) -> MitigationConfig:
    """The `Mitigation` object of the Detect section."""
    section = as_section(section, "Mitigation")
    unknown = set(section) - {"Enabled", "Actions", "MaxActionsPerHour", "CooldownSeconds", "MaxTargetsPerViolation"}
    if unknown:
        raise ConfigError(f"Mitigation: unknown key(s) {', '.join(sorted(unknown))}")
    rules = {}
    for key, raw in as_section(section.get("Actions"), "Mitigation.Actions").items():
        where = f"Mitigation.Actions.{key}"
        if isinstance(raw, str):
            raw = {"Operation": raw}
        raw = as_section(raw, where)
        op = as_str(raw.get("Operation"), f"{where}.Operation", max_length=64) if raw.get("Operation") else None
        if op not in OPERATIONS:
            raise ConfigError(f"{where}.Operation: expected one of {', '.join(OPERATIONS)}, got {op!r}")
        args = as_section(raw.get("Arguments"), f"{where}.Arguments")
        if len(json.dumps(args)) > 4096:
            raise ConfigError(f"{where}.Arguments: larger than 4096 bytes")
        rules[key] = Rule(op, dict(args))
    return MitigationConfig(
        enabled=as_bool(section.get("Enabled", False), "Mitigation.Enabled"),
        rules=rules,
        max_per_hour=as_int(section.get("MaxActionsPerHour", 6), "Mitigation.MaxActionsPerHour", 0, 1000),
        cooldown_seconds=float(as_int(section.get("CooldownSeconds", 600), "Mitigation.CooldownSeconds", 0, 86400)),
        max_targets=as_int(section.get("MaxTargetsPerViolation", 5), "Mitigation.MaxTargetsPerViolation", 1, 25),
    )


class Mitigator:
    """Turns an in-alarm violation into remediation requests under the rate limits."""

    def __init__(self, cfg: MitigationConfig = MitigationConfig(), memory: Optional[dict] = None):
        self.cfg = cfg
        # persisted by the owner: {"sent": [times], "last": {"op target": time}}
        self.memory = memory if memory is not None else {}
        self.memory.setdefault("sent", [])
        self.memory.setdefault("last", {})

    def rule_for(self, profile: str, behavior: str) -> Optional[Rule]:
        return self.cfg.rules.get(f"{profile}/{behavior}") or self.cfg.rules.get(behavior)

    def _targets(self, rule: Rule, metric: str, offending) -> list:
        if rule.operation == "stop-listener":
            if "port" in rule.arguments:  # a fixed port in the rule wins
                return [dict(rule.arguments)]
            proto = "udp" if "udp" in metric else "tcp"
            ports = [p for p in (offending or ()) if isinstance(p, int)]
            return [{**rule.arguments, "port": p, "protocol": proto} for p in ports]
        if rule.operation == "block-ip":
            if "address" in rule.arguments:
                return [dict(rule.arguments)]
            return [{**rule.arguments, "address": ip} for ip in (offending or ()) if isinstance(ip, str)]
        return [dict(rule.arguments)]

    def plan(self, event: dict, behavior, now: float) -> tuple:
        """(actions to record, requests to send) for one in-alarm event; both empty without a rule."""
        if not self.cfg.enabled or event.get("suppressAlerts"):
            return [], []
        rule = self.rule_for(behavior.profile, behavior.name)
        if rule is None:
            return [], []
        actions, requests = [], []
        targets = self._targets(rule, behavior.metric, event.get("offendingValues"))
        if not targets:
            actions.append({"requestId": None, "operation": rule.operation, "arguments": {},
                            "status": "skipped", "detail": "the violation names no target for this operation",
                            "requestedAt": round(now, 3)})
            return actions, requests
        sent = [t for t in self.memory["sent"] if now - t < HOUR]
        self.memory["sent"] = sent
        last = self.memory["last"]
        for stale in [k for k, t in last.items() if now - t >= max(self.cfg.cooldown_seconds, HOUR)]:
            del last[stale]
        for args in targets[: self.cfg.max_targets]:
            tkey = f"{rule.operation} {json.dumps(args, sort_keys=True)}"
            action = {"requestId": None, "operation": rule.operation, "arguments": args,
                      "requestedAt": round(now, 3)}
            if tkey in last and now - last[tkey] < self.cfg.cooldown_seconds:
                action.update(status="rate-limited", detail=f"same action within {self.cfg.cooldown_seconds:g} s")
            elif len(sent) >= self.cfg.max_per_hour:
                action.update(status="rate-limited", detail=f"more than {self.cfg.max_per_hour} actions in an hour")
            else:
                rid = f"detect-{uuid.uuid4()}"
                action.update(requestId=rid, status="requested")
                sent.append(now)
                last[tkey] = now
                requests.append({
                    "requestId": rid, "operation": rule.operation, "arguments": args,
                    "reason": f"{behavior.profile}/{behavior.name} in alarm on {event.get('thingName')}",
                    "violationId": event["violationId"],
                })
            actions.append(action)
        return actions, requests


def apply_result(actions: list, result: dict, now: float) -> bool:
    """Record a remediation result on the matching action; True when one matched."""
    rid = result.get("requestId")
    for a in actions:
        if rid and a.get("requestId") == rid:
            status = result.get("status") or result.get("result") or "UNKNOWN"
            a["status"] = str(status)[:32]
            detail = result.get("detail") or result.get("reason") or result.get("statusDetails") or result.get("message")
            if detail:
                a["detail"] = detail if isinstance(detail, str) else json.dumps(detail, sort_keys=True)
                a["detail"] = a["detail"][:500]
            a["completedAt"] = round(now, 3)
            return True
    return False
