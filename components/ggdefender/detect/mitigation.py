"""Local mitigation policy: behavior -> remediation operation, rate-limited (off by default).

On `in-alarm` of a behavior that has a rule, detect (process B) asks process A for one action per target over
the private relay (`RelayClient.mitigate`, never over local pub/sub): a typed request
{"requestId", "operation", "target", "profile", "behavior", "violationId"}. Only `stop-listener` (target
{"port", "protocol"}: each offending port, protocol from the metric) and `block-ip` (target {"address"}:
each offending address) can be mitigations, because A can check those targets against what it observes
itself. Process A's gate (remediation/mitigation_gate.py) re-reads this same configuration with
`parse_config`, finds the same rule with `find_rule`, builds the arguments with `arguments_for` and applies
its own rate limits before the request takes the jobs' path (allow-list, safety checks); results come back
over the relay and are recorded on the violation and finding (`apply_result`).

Rate limits, so a flapping alarm cannot loop: at most `MaxActionsPerHour` requests in any hour, and the
same operation on the same target not again within `CooldownSeconds`. A limited action is still recorded
(status `rate-limited`) on the violation and finding. The limiter's memory is persisted with the alarm state.
"""

from __future__ import annotations

import ipaddress
import json
import uuid
from dataclasses import dataclass, field
from typing import Any, List, Optional

# the remediation part's own list (a small module: process B does not load the listener)
from ggdefender.remediation.config import MITIGATION_OPERATIONS as OPERATIONS
from ggdefender.remediation.config import REQUEST_ID
from ggdefender.settings import ConfigError, as_bool, as_int, as_section, as_str, reject_unknown

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


def parse_config(section: Any) -> MitigationConfig:
    """The `Mitigation` object of the Detect section."""
    section = as_section(section, "Mitigation")
    reject_unknown(section, ("Enabled", "Actions", "MaxActionsPerHour", "CooldownSeconds", "MaxTargetsPerViolation"),
                   "Mitigation")
    rules = {}
    for key, raw in as_section(section.get("Actions"), "Mitigation.Actions").items():
        where = f"Mitigation.Actions.{key}"
        if isinstance(raw, str):
            raw = {"Operation": raw}
        raw = as_section(raw, where)
        op = as_str(raw.get("Operation"), f"{where}.Operation", max_length=64) if raw.get("Operation") else None
        if op not in OPERATIONS:
            raise ConfigError(f"{where}.Operation: expected one of {', '.join(OPERATIONS)}, got {op!r} (other "
                              "operations take targets the remediation part cannot observe: use IoT Jobs)")
        args = as_section(raw.get("Arguments"), f"{where}.Arguments")
        if len(json.dumps(args)) > 4096:
            raise ConfigError(f"{where}.Arguments: larger than 4096 bytes")
        for name in TARGET_KEYS[op] & set(args):  # a fixed target must be one the remediation part can observe
            try:
                check_target_value(name, args[name], f"{where}.Arguments")
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        rules[key] = Rule(op, dict(args))
    return MitigationConfig(
        enabled=as_bool(section.get("Enabled", False), "Mitigation.Enabled"),
        rules=rules,
        max_per_hour=as_int(section.get("MaxActionsPerHour", 6), "Mitigation.MaxActionsPerHour", 0, 1000),
        cooldown_seconds=float(as_int(section.get("CooldownSeconds", 600), "Mitigation.CooldownSeconds", 0, 86400)),
        max_targets=as_int(section.get("MaxTargetsPerViolation", 5), "Mitigation.MaxTargetsPerViolation", 1, 25),
    )


def targets_of(rule: Rule, metric: str, offending: Any) -> list:
    """What `rule` acts on for a violation of `metric`: the port/address fixed in the rule, else each offending
    value of the right type (the device's and the fleet handler's one rule)."""
    if rule.operation == "stop-listener":
        proto = rule.arguments.get("protocol") or ("udp" if "udp" in metric else "tcp")
        if "port" in rule.arguments:  # a fixed port in the rule wins
            return [{"port": rule.arguments["port"], "protocol": proto}]
        ports = [p for p in (offending or ()) if isinstance(p, int) and not isinstance(p, bool)]
        return [{"port": p, "protocol": proto} for p in ports]
    if rule.operation == "block-ip":
        if "address" in rule.arguments:
            return [{"address": rule.arguments["address"]}]
        return [{"address": ip} for ip in (offending or ()) if isinstance(ip, str)]
    return []


class Mitigator:
    """Turns an in-alarm violation into remediation requests under the rate limits."""

    def __init__(self, cfg: MitigationConfig = MitigationConfig(), memory: Optional[dict] = None):
        self.cfg = cfg
        # persisted by the owner: {"sent": [times], "last": {"op target": time}}
        self.memory = memory if memory is not None else {}
        self.memory.setdefault("sent", [])
        self.memory.setdefault("last", {})

    def rule_for(self, profile: str, behavior: str) -> Optional[Rule]:
        return find_rule(self.cfg, profile, behavior)

    def plan(self, event: dict, behavior: Any, now: float) -> tuple:
        """(actions to record, requests to send) for one in-alarm event; both empty without a rule."""
        if not self.cfg.enabled or event.get("suppressAlerts"):
            return [], []
        rule = self.rule_for(behavior.profile, behavior.name)
        if rule is None:
            return [], []
        actions: List[dict] = []
        requests: List[dict] = []
        targets = targets_of(rule, behavior.metric, event.get("offendingValues"))
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
                    "requestId": rid, "operation": rule.operation, "target": args,
                    "profile": behavior.profile, "behavior": behavior.name, "violationId": event["violationId"],
                })
            actions.append(action)
        return actions, requests


def find_rule(cfg: MitigationConfig, profile: str, behavior: str) -> Optional[Rule]:
    """The rule for a behavior: "Profile/Behavior" first, then "Behavior" (one lookup for B and A)."""
    return cfg.rules.get(f"{profile}/{behavior}") or cfg.rules.get(behavior)


# -- the typed request (process B asks, process A checks) -------------------------------------------------
REQUEST_KEYS = frozenset({"requestId", "operation", "target", "profile", "behavior", "violationId"})
TARGET_KEYS = {"stop-listener": frozenset({"port", "protocol"}), "block-ip": frozenset({"address"})}
MAX_NAME = 128


def check_request(request: Any) -> dict:
    """A mitigation request's shape, or ValueError naming the problem. Nothing beyond the typed target is
    accepted: pid, signal, grace period, configuration keys are never taken from the asking process."""
    if not isinstance(request, dict):
        raise ValueError("request must be an object")
    unknown = sorted(set(request) - REQUEST_KEYS)
    missing = sorted(REQUEST_KEYS - set(request))
    if unknown or missing:
        raise ValueError("request: " + "; ".join(filter(None, [
            f"unknown field(s) {', '.join(map(str, unknown))[:200]}" if unknown else None,
            f"missing field(s) {', '.join(missing)}" if missing else None])))
    rid = request["requestId"]
    if not isinstance(rid, str) or not REQUEST_ID.match(rid):
        raise ValueError("requestId must be 1-64 of [A-Za-z0-9_.:-]")
    for key in ("profile", "behavior", "violationId"):
        if not isinstance(request[key], str) or not 0 < len(request[key]) <= MAX_NAME:
            raise ValueError(f"{key} must be a string of 1-{MAX_NAME} characters")
    op = request["operation"]
    if op not in TARGET_KEYS:
        raise ValueError(f"operation {str(op)[:64]!r} cannot be a mitigation (only {', '.join(TARGET_KEYS)})")
    target = request["target"]
    if not isinstance(target, dict) or set(target) != TARGET_KEYS[op]:
        raise ValueError(f"{op} target must be exactly {{{', '.join(sorted(TARGET_KEYS[op]))}}}")
    for key, value in target.items():
        check_target_value(key, value, "target")
    return request


def check_target_value(key: str, value: Any, where: str) -> None:
    """One target field (a request's, or one the rule fixes), or ValueError."""
    if key == "port":
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
            raise ValueError(f"{where}.port must be an integer 1-65535")
    elif key == "protocol":
        if value not in ("tcp", "udp"):
            raise ValueError(f"{where}.protocol must be tcp or udp")
    elif key == "address":
        try:
            if not isinstance(value, str) or len(value) > 64:
                raise ValueError
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"{where}.address must be one IPv4 or IPv6 address") from None


def arguments_for(rule: Rule, target: dict) -> dict:
    """The operation's arguments: the rule's (the operator's) plus the target; a target that contradicts a
    fixed port, protocol or address in the rule is refused (ValueError)."""
    for key, value in target.items():
        fixed = rule.arguments.get(key)
        if fixed is not None and fixed != value:
            raise ValueError(f"target {key} {value!r} differs from the rule's fixed {key} {fixed!r}")
    return {**rule.arguments, **target}


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
