"""Process A's gate for Detect's mitigation requests from process B (the unprivileged collector).

Process B asks over its private relay (`{"op": "mitigate", "request": {...}}`, supervisor/relay_server.py); nothing
B says is trusted. At most MAX_CHECKS_PER_MINUTE requests are looked at; before anything runs, the gate refuses
unless, read by A itself at the time of the request:
- the request has exactly the typed shape (`detect.mitigation.check_request`): an operation that can be a
  mitigation (stop-listener, block-ip) and its target; no pid, signal or configuration key from B;
- `Remediation` is valid and enabled, `Detect` is enabled and its `Mitigation` (parsed with the same
  `detect.mitigation.parse_config`) is enabled and has a rule for that profile/behavior whose operation is
  exactly the requested one, and the operation is in `Remediation.AllowedOperations`;
- the target agrees with the rule's fixed arguments and with what A observes now (/proc/net, read with the
  collector's own parser): the port is listening, or the address is the peer of an established connection;
- A's own rate limits allow it (`MaxActionsPerHour`, `CooldownSeconds` of that configuration);
- the operation's dry run passes (the executor's pre-flight: every owner of the port vetted by safety.py).
Accepted requests then take the jobs' path in the remediation listener (same executor, allow-list and safety
checks again right before acting). Refusals are logged here with the reason and answered to B.

The gate outlives listener and collector restarts (the supervisor owns it), so its rate limits do too.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Optional

from ggdefender.detect import mitigation as M
from ggdefender.ratelog import RateLimitedLog
from ggdefender.settings import ConfigError, as_bool, as_section

from . import config as rconfig

if TYPE_CHECKING:
    from ggdefender.ipc_port import SupervisorPort

    from .listener import RemediationListener

log = logging.getLogger("ggdefender.remediation.gate")

HOUR = 3600.0
# Requests checked per minute, whatever their outcome: each check costs A two configuration reads and a /proc
# scan, so a compromised B spinning on refused requests must not keep A busy.
MAX_CHECKS_PER_MINUTE = 30
MAX_SINKS = 4  # result subscribers (one per collector incarnation; a closed one unsubscribes)


class Refused(Exception):
    """The gate refused a mitigation request; the message is the reason given to process B."""

    def __init__(self, reason: str, *, flood: bool = False):
        super().__init__(reason)
        self.flood = flood  # over the check budget: not audited, warned about once a minute


class _Sink:
    def __init__(self, gate: "MitigationGate", deliver: Callable[[dict], None]):
        self.gate, self.deliver = gate, deliver

    def close(self) -> None:
        self.gate._remove_sink(self)


def observe_target(operation: str, target: dict, source: Any = None) -> Optional[str]:
    """Why the target is not what this host shows right now (None when it is). Reads /proc/net with the
    collector's parser; `source` is a ProcfsSource (tests point one at a fixture tree)."""
    from ggdefender.collector.sources.procfs import ProcfsSource
    from ggdefender.collector.sources.data import InterfaceMap

    src = source or ProcfsSource(interfaces=InterfaceMap())  # interface names are not needed here
    if operation == "stop-listener":
        group = "listening_tcp_ports" if target["protocol"] == "tcp" else "listening_udp_ports"
        sample = src.sample({group})
        listeners = sample.tcp_listeners if target["protocol"] == "tcp" else sample.udp_listeners
        if listeners is None:
            return f"cannot read the {target['protocol']} listeners: {'; '.join(sample.errors) or 'unavailable'}"
        if not any(entry[0] == target["port"] for entry in listeners):
            return f"nothing listens on {target['protocol']} port {target['port']} now"
        return None
    if operation == "block-ip":
        sample = src.sample({"tcp_connections"})
        if sample.connections is None:
            return f"cannot read the TCP connections: {'; '.join(sample.errors) or 'unavailable'}"
        want = ipaddress.ip_address(target["address"])
        want = want.ipv4_mapped or want if want.version == 6 else want
        for conn in sample.connections:
            try:
                if ipaddress.ip_address(conn[0]) == want:
                    return None
            except ValueError:
                continue
        return f"{target['address']} is not the peer of an established connection now"
    return f"operation {operation!r} cannot be a mitigation"


class MitigationGate:
    """One per process A. `submit(request)` from the relay thread; `attach(listener)` by the supervisor."""

    def __init__(self, ipc: SupervisorPort, *, clock: Callable[[], float] = time.time,
                 observe: Callable[[str, dict], Optional[str]] = observe_target,
                 preflight: Optional[Callable] = None):
        self.ipc = ipc
        self.clock = clock
        self.observe = observe
        self.preflight = preflight or _preflight
        self._listener: Optional[RemediationListener] = None
        self._lock = threading.Lock()  # requests are checked one at a time (rate limits are read-modify-write)
        self._sent: deque = deque()  # times of accepted requests in the last hour
        self._last: dict = {}  # "operation target" -> time accepted
        self._checks: deque = deque()  # monotonic times of checked requests, the last minute
        self._flood_log = RateLimitedLog(log, every=60)  # a flood is warned about once a minute
        self._sinks: list = []
        self._sinks_lock = threading.Lock()  # results may be delivered while a request is being checked

    # -- wiring --------------------------------------------------------------------------------------------
    def attach(self, listener: RemediationListener) -> None:
        """The listener instance now running (the supervisor restarts it; the gate stays)."""
        self._listener = listener

    def subscribe(self, deliver: Callable[[dict], None]) -> _Sink:
        """Results of accepted requests go to `deliver` (process B's relay) until the returned sink closes."""
        sink = _Sink(self, deliver)
        with self._sinks_lock:
            if len(self._sinks) >= MAX_SINKS:
                raise ValueError(f"over {MAX_SINKS} mitigation result subscriptions")
            self._sinks.append(sink)
        return sink

    def _remove_sink(self, sink: _Sink) -> None:
        with self._sinks_lock:
            if sink in self._sinks:
                self._sinks.remove(sink)

    def _deliver(self, result: dict) -> None:
        with self._sinks_lock:
            sinks = list(self._sinks)
        for sink in sinks:
            try:
                sink.deliver(result)
            except Exception:  # a closed relay must not break the listener's worker
                log.debug("delivering mitigation result failed", exc_info=True)

    # -- the check -----------------------------------------------------------------------------------------
    def submit(self, request: Any) -> dict:
        """Check and queue one request; {"requestId", "status": "accepted"} or Refused(reason)."""
        rid = request.get("requestId") if isinstance(request, dict) else None
        label = rid if isinstance(rid, str) and rconfig.REQUEST_ID.match(rid) else "?"
        try:
            with self._lock:
                return self._submit(request)
        except Refused as exc:
            if not exc.flood:
                log.warning("mitigation request %s from the collector refused: %s", label, exc)
                _audit_refusal(label, request, str(exc))
            else:
                self._flood_log.failed("flood", "mitigation requests from the collector refused: %s", exc)
            raise

    def _submit(self, request: Any) -> dict:
        mono = time.monotonic()
        while self._checks and mono - self._checks[0] >= 60:
            self._checks.popleft()
        if len(self._checks) >= MAX_CHECKS_PER_MINUTE:
            raise Refused(f"too many mitigation requests: at most {MAX_CHECKS_PER_MINUTE} are checked per minute",
                          flood=True)
        self._checks.append(mono)
        try:
            M.check_request(request)
        except ValueError as exc:
            raise Refused(f"invalid request: {exc}") from None
        op, target = request["operation"], request["target"]
        listener = self._listener
        if listener is None:
            raise Refused("the remediation listener is not running")
        settings = self._remediation_settings()
        policy = self._mitigation_config()
        rule = M.find_rule(policy, request["profile"], request["behavior"])
        if rule is None:
            raise Refused(f"no mitigation rule for {request['profile']}/{request['behavior']}")
        if rule.operation != op:
            raise Refused(f"the rule for {request['profile']}/{request['behavior']} names {rule.operation}, "
                          f"not {op}")
        if op not in settings.allowed_operations:
            raise Refused(f"operation {op!r} is not in Remediation.AllowedOperations")
        try:
            arguments = M.arguments_for(rule, target)
        except ValueError as exc:
            raise Refused(str(exc)) from None
        now = self.clock()
        key = f"{op} {json.dumps(target, sort_keys=True)}"
        self._forget_old(now, policy)
        if key in self._last and now - self._last[key] < policy.cooldown_seconds:
            raise Refused(f"rate limited: the same action within Mitigation.CooldownSeconds "
                          f"({policy.cooldown_seconds:g} s)")
        if len(self._sent) >= policy.max_per_hour:
            raise Refused(f"rate limited: Mitigation.MaxActionsPerHour ({policy.max_per_hour}) actions already "
                          "accepted in the last hour")
        why = self.observe(op, target)
        if why:
            raise Refused(why)
        msg = {"requestId": request["requestId"], "operation": op, "arguments": arguments,
               "reason": f"{request['profile']}/{request['behavior']} in alarm", "violationId": request["violationId"]}
        why = self.preflight(msg, settings)
        if why:
            raise Refused(why)
        why = listener.submit_mitigation(msg, self._deliver)
        if why:
            raise Refused(why)
        self._sent.append(now)
        self._last[key] = now
        log.info("mitigation request %s accepted: %s %s (%s)", msg["requestId"], op,
                 json.dumps(target, sort_keys=True), msg["reason"])
        return {"requestId": msg["requestId"], "status": "accepted"}

    def _forget_old(self, now: float, policy: Any) -> None:
        while self._sent and now - self._sent[0] >= HOUR:
            self._sent.popleft()
        keep = max(policy.cooldown_seconds, HOUR)
        for stale in [k for k, t in self._last.items() if now - t >= keep]:
            del self._last[stale]

    def _remediation_settings(self) -> rconfig.RemediationSettings:
        try:
            settings = rconfig.parse(self.ipc.get_config(["Remediation"]))
        except ConfigError as exc:
            raise Refused(f"the Remediation configuration is invalid: {exc}") from None
        if not settings.enabled:
            raise Refused("remediation is disabled (Remediation.Enabled)")
        return settings

    def _mitigation_config(self) -> M.MitigationConfig:
        try:
            section = as_section(self.ipc.get_config(["Detect"]), "Detect")
            if not as_bool(section.get("Enabled", True), "Detect.Enabled"):
                raise Refused("detect is disabled (Detect.Enabled)")
            policy = M.parse_config(section.get("Mitigation"))
        except ConfigError as exc:
            raise Refused(f"the Detect.Mitigation configuration is invalid: {exc}") from None
        if not policy.enabled:
            raise Refused("mitigation is disabled (Detect.Mitigation.Enabled)")
        return policy


def _audit_refusal(label: str, request: Any, reason: str) -> None:
    """Someone asked for an action: the refusal is an audit line too, as for a job refused before any step."""
    from .operations.base import Context

    op, target = "?", "-"
    if isinstance(request, dict):
        op = str(request.get("operation"))[:64]
        target = json.dumps(request.get("target"), sort_keys=True, default=str)[:200]
    Context(settings=None, safety=None, job=f"collector:{label}").audit(op, target, "REJECTED", reason)


def _preflight(msg: dict, settings: rconfig.RemediationSettings) -> Optional[str]:
    """The executor's dry run of the request (the same checks a job gets), or why it would be refused."""
    from . import documents
    from .executor import Executor
    from .operations.base import OperationError
    from .safety import SafetyPolicy

    try:
        plan = documents.parse(documents.request_to_document(msg), settings)
    except documents.DocumentError as exc:
        return str(exc)
    try:
        Executor(settings, SafetyPolicy(settings)).preflight(plan, f"gate:{msg['requestId']}", plan.all_steps())
    except OperationError as exc:
        return exc.reason
    return None
