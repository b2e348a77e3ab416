"""Greengrass IPC authorization: `accessControl` policies parsed and matched the way the nucleus does.

A component's configuration carries ``accessControl: {service: {policyId: {operations, resources}}}``.
The principal is always the component that owns the policy. A request (principal, service, operation,
resource) is allowed when one of the principal's policies for that service lists the operation (or ``*``)
and has a resource pattern matching the resource (nucleus lookup order (P,O,R), (P,*,R), (*,O,R), (*,*,R);
a policy can only name its own component, so the principal-``*`` steps never add anything here).

Resource patterns (nucleus >= 2.6 ``WildcardTrie``):
  * ``*`` matches any run of characters, ``/`` included; ``${*}``, ``${$}``, ``${?}`` are a literal
    ``*``, ``$``, ``?``; a bare ``?`` is rejected when the policy is loaded;
  * only for ``aws.greengrass.ipc.mqttproxy`` (MQTT-style lookup): ``+`` as a whole level matches one
    level, ``#`` as the last level matches any remainder (``a/#`` also matches ``a``; lone ``#`` matches all).
    Elsewhere ``+`` and ``#`` are literal characters.
The requested resource is compared as a plain string, so a subscription filter ``a/+`` is allowed by a
policy resource ``a/+`` (and, for mqttproxy, by ``a/#`` too).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Iterable

log = logging.getLogger("ggdefender.local.nucleus.authz")

MQTTPROXY = "aws.greengrass.ipc.mqttproxy"
PUBSUB = "aws.greengrass.ipc.pubsub"
CLI = "aws.greengrass.Cli"

# Operations each service accepts in a policy (besides "*"); other services are kept but not validated.
SERVICE_OPERATIONS: dict[str, frozenset[str]] = {
    MQTTPROXY: frozenset({"aws.greengrass#PublishToIoTCore", "aws.greengrass#SubscribeToIoTCore"}),
    PUBSUB: frozenset({"aws.greengrass#PublishToTopic", "aws.greengrass#SubscribeToTopic"}),
    CLI: frozenset({
        f"aws.greengrass#{op}" for op in (
            "GetComponentDetails", "ListComponents", "RestartComponent", "StopComponent",
            "CreateLocalDeployment", "GetLocalDeploymentStatus", "ListLocalDeployments", "CreateDebugPassword",
            "CancelLocalDeployment")
    }),
}
MQTT_STYLE_SERVICES = frozenset({MQTTPROXY})

MAX_RESOURCE_CHARS = 65536  # bound the work a pathological policy can cause


class PolicyError(ValueError):
    """An accessControl policy is invalid; the message names the component, policy and problem."""


@dataclass(frozen=True)
class Policy:
    component: str
    service: str
    policy_id: str
    operations: frozenset[str]
    resources: tuple[str, ...]
    matcher: "re.Pattern[str]"

    def allows(self, operation: str, resource: str) -> bool:
        if operation not in self.operations and "*" not in self.operations:
            return False
        return self.matcher.fullmatch(resource) is not None


def _tokens(pattern: str, where: str) -> list[tuple[str, bool]]:
    """(char, escaped) pairs: `${c}` is the literal character c (any c, as the nucleus's WildcardTrie reads
    it); a bare `?` is an error."""
    out: list[tuple[str, bool]] = []
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == "$" and i + 3 < n and pattern[i + 1] == "{" and pattern[i + 3] == "}":
            out.append((pattern[i + 2], True))
            i += 4
            continue
        if c == "?":
            raise PolicyError(f"{where}: '?' is not allowed in a resource (write ${{?}} for a literal '?')")
        out.append((c, False))
        i += 1
    return out


def _glob(tokens: list[tuple[str, bool]]) -> str:
    """Regex for a run of tokens where only an unescaped `*` is a wildcard."""
    return "".join(".*" if (c == "*" and not esc) else re.escape(c) for c, esc in tokens)


def compile_resource(pattern: str, mqtt_style: bool, where: str = "resource") -> str:
    """Regex source (for fullmatch) of one policy resource pattern."""
    if not isinstance(pattern, str):
        raise PolicyError(f"{where}: resource must be a string, got {type(pattern).__name__}")
    if len(pattern) > MAX_RESOURCE_CHARS:
        raise PolicyError(f"{where}: resource longer than {MAX_RESOURCE_CHARS} characters")
    tokens = _tokens(pattern, where)
    if not mqtt_style:
        return _glob(tokens)
    if tokens == [("#", False)]:
        return "(?s:.*)"
    # split into levels on unescaped '/'; '+' and '#' are wildcards only as a whole level
    levels: list[list[tuple[str, bool]]] = [[]]
    for tok in tokens:
        if tok == ("/", False):
            levels.append([])
        else:
            levels[-1].append(tok)
    parts: list[str] = []
    for idx, level in enumerate(levels):
        if level == [("#", False)] and idx == len(levels) - 1 and idx > 0:
            # `a/#` matches `a`, `a/`, `a/b/c`: the separator before `#` is optional
            return "/".join(parts) + "(?:/.*)?"
        parts.append("[^/]*" if level == [("+", False)] else _glob(level))
    return "/".join(parts)


def _ci_get(mapping: dict, key: str) -> Any:
    """Case-insensitive key lookup, as the nucleus's policy parser does."""
    for k, v in mapping.items():
        if isinstance(k, str) and k.lower() == key.lower():
            return v
    return None


def _as_list(value: Any, what: str, where: str) -> list:
    if isinstance(value, str):
        return [value]  # a single string is accepted the way YAML scalars often arrive
    if not isinstance(value, list) or not value:
        raise PolicyError(f"{where}: {what} must be a non-empty list")
    return value


def parse_policy(component: str, service: str, policy_id: str, body: Any) -> tuple[Policy, list[str]]:
    """One policy and the problems found in it.

    Like the nucleus's AuthorizationHandler: a malformed policy (not an object, no operations, no
    resources) raises PolicyError and grants nothing; operations the service does not have are reported
    but the policy is still loaded (those operations can never match a request); a resource that does not
    compile (a bare `?`) is reported and only that resource is left out.
    """
    where = f"component {component}: accessControl.{service}.{policy_id}"
    if not isinstance(body, dict):
        raise PolicyError(f"{where}: policy must be an object with operations and resources")
    ops = _as_list(_ci_get(body, "operations"), "operations", where)
    for op in ops:
        if not isinstance(op, str) or not op:
            raise PolicyError(f"{where}: operation {op!r} is not a string")
    errors: list[str] = []
    known = SERVICE_OPERATIONS.get(service)
    if known is not None:
        bad = [op for op in ops if op != "*" and op not in known]
        if bad:
            errors.append(f"{where}: operation(s) {', '.join(bad)} not supported by {service}")
    resources = _as_list(_ci_get(body, "resources"), "resources", where)
    mqtt = service in MQTT_STYLE_SERVICES
    sources = []
    kept = []
    for r in resources:
        try:
            sources.append(compile_resource(r, mqtt, f"{where}: resource {r!r}"))
            kept.append(r)
        except PolicyError as exc:
            errors.append(str(exc))
    # an empty alternation would match only ""; (?!) matches nothing when every resource was rejected
    matcher = re.compile("|".join(f"(?:{s})" for s in sources) if sources else "(?!)", re.DOTALL)
    return Policy(component, service, policy_id, frozenset(ops), tuple(kept), matcher), errors


def parse_access_control(component: str, access_control: Any) -> tuple[list[Policy], list[str]]:
    """All loadable policies of a component, plus a text for each problem (reported, never fatal)."""
    policies: list[Policy] = []
    errors: list[str] = []
    if access_control is None:
        return policies, errors
    if not isinstance(access_control, dict):
        return policies, [f"component {component}: accessControl must be an object"]
    for service, by_id in access_control.items():
        if not isinstance(by_id, dict):
            errors.append(f"component {component}: accessControl.{service} must be an object of policies")
            continue
        for policy_id, body in by_id.items():
            try:
                policy, problems = parse_policy(component, str(service), str(policy_id), body)
            except PolicyError as exc:
                errors.append(str(exc))
                continue
            policies.append(policy)
            errors.extend(problems)
    return policies, errors


class Authorizer:
    """Policies of every registered component; answers is_authorized. Not thread-safe for writes by itself
    (the core serialises register/unregister under its lock); reads use an immutable snapshot per component."""

    def __init__(self) -> None:
        self._by_component: dict[str, dict[str, tuple[Policy, ...]]] = {}
        self._cache: dict[tuple[str, str, str, str], bool] = {}

    def load(self, component: str, configuration: Any) -> list[str]:
        """(Re)load a component's policies from its configuration; returns the errors of skipped policies."""
        access = _ci_get(configuration, "accessControl") if isinstance(configuration, dict) else None
        policies, errors = parse_access_control(component, access)
        by_service: dict[str, list[Policy]] = {}
        for p in policies:
            by_service.setdefault(p.service, []).append(p)
        self._by_component[component] = {s: tuple(ps) for s, ps in by_service.items()}
        self._cache = {}
        for e in errors:
            log.warning("invalid authorization policy skipped: %s", e)
        return errors

    def remove(self, component: str) -> None:
        self._by_component.pop(component, None)
        self._cache = {}

    def is_authorized(self, principal: str, service: str, operation: str, resource: str) -> bool:
        key = (principal, service, operation, resource)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        allowed = any(p.allows(operation, resource)
                      for p in self._by_component.get(principal, {}).get(service, ()))
        if len(self._cache) > 4096:  # bounded: resources come from clients
            self._cache = {}
        self._cache[key] = allowed
        return allowed

    def policies(self, principal: str) -> Iterable[Policy]:
        for ps in self._by_component.get(principal, {}).values():
            yield from ps


def denial_message(principal: str, service: str, operation: str, resource: str) -> str:
    """The nucleus's AuthorizationException text."""
    return f"Principal {principal} is not authorized to perform {service}:{operation} on resource {resource}"
