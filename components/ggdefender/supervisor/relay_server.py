"""Process A's side of the private relay: it serves an allow-listed subset of Greengrass IPC calls for process B.

Process B does not hold the component's IPC token and does not load awsiotsdk/awscrt (~13 MiB RSS). Process A,
which owns the one Greengrass IPC connection, serves an allow-listed subset of IPC calls for B over a socketpair
that B inherits (fd number in `GGDEFENDER_RELAY_FD`). A compromised collector can therefore publish only its
own report/violation/finding topics and cannot UpdateConfiguration (e.g. widen the Remediation allow-list that
the possibly-root process A executes); what it publishes there is checked too (relay_guard.py, beside this
module), and it can ask for remediation only through the typed `mitigate` call that A's MitigationGate checks
against A's own policy and observations (remediation/mitigation_gate.py). See docs/security.md.

The wire format is relay_wire.py; B's side is collector/relay_client.py.
"""

from __future__ import annotations

import json
import logging
import queue
import socket
import threading
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional

from ggdefender import health, topics
from ggdefender.ipc import IpcUnavailable, PublishRefused
from ggdefender.collector import export as export_config
from ggdefender.ipc_port import SupervisorPort
from ggdefender.relay_wire import COLLECT_EVENTS, MAX_PENDING_EVENTS, MAX_REPLY_LINE, MAX_REQUEST_LINE, \
    MitigationRefused, RelayDenied, b64, encode, read_line, unb64
from ggdefender.supervisor.relay_guard import ContentDenied, ContentGuard, ContentInvalid

log = logging.getLogger("ggdefender.supervisor.relay_server")

MAX_SUBSCRIPTIONS = 32  # B uses 8
# IoT Core's 256 bytes do not count a Basic Ingest prefix `$aws/rules/<rule>/` (Collector.Export's topic)
MAX_TOPIC = 256 + len(topics.BASIC_INGEST_PREFIX) + topics.RULE_NAME_MAX + 1
MAX_KEY_PATH = 32
MAX_COLLECT_CALLS = 16  # collect-now calls of A waiting on B at once (the listener runs one job at a time)

# Never relayed, named so a denial can say why (the rest are simply "not allowed").
PRIVILEGED_OPS = ("update_config", "update_state", "restart_component", "component_details")


# -- policy ----------------------------------------------------------------------------------------------------
class Policy:
    """What process B may do through the relay (docs/architecture.md, "One component, two processes")."""

    # no remediation topic: B asks for remediation only with the typed `mitigate` call, checked by A
    LOCAL_PUBLISH = frozenset({topics.COLLECTOR_EVENTS, topics.LOCAL_VIOLATIONS, topics.LOCAL_FINDINGS})
    LOCAL_SUBSCRIBE = frozenset({topics.CUSTOM_METRICS, topics.COLLECTOR_COMMANDS})
    # not scoped by topic: health paths are checked in _dispatch, mitigate requests by the MitigationGate
    UNSCOPED = ("get_config", "subscribe_config", "unsubscribe", "health", "mitigate", "subscribe_mitigation",
                "subscribe_collect_now", "collect_result")  # B answers only calls A is waiting on

    def __init__(self, thing: str, export: Optional[Callable[[], export_config.ExportSettings]] = None):
        """`export`: process A's own current view of Collector.Export (None: exporting is never allowed). B may
        publish to exactly the topics it names, under `$aws/rules/` nothing else: B cannot choose the rule."""
        if not thing:
            raise ValueError("relay policy: no thing name")
        self.thing = thing
        self.export = export
        self.iot_publish = frozenset({*(topics.metrics(thing, fmt) for fmt in topics.REPORT_FORMATS),
                                      topics.violations(thing), topics.findings(thing)})
        self.iot_subscribe = frozenset(f"{topics.metrics(thing, fmt)}/{outcome}" for fmt in topics.REPORT_FORMATS
                                       for outcome in topics.REPORT_OUTCOMES)

    def check(self, op: str, topic: Optional[str] = None) -> None:
        """Raise RelayDenied unless B may do `op` (on `topic`)."""
        allowed = {"publish_iot": self.iot_publish, "subscribe_iot": self.iot_subscribe,
                   "publish_local": self.LOCAL_PUBLISH, "subscribe_local": self.LOCAL_SUBSCRIBE}.get(op)
        if op in self.UNSCOPED:
            return
        if allowed is None:
            why = " (privileged: only process A may do this)" if op in PRIVILEGED_OPS else ""
            raise RelayDenied(f"relay policy: operation {op!r} is not allowed{why}")
        if op == "publish_iot" and topic is not None and topic.startswith(topics.BASIC_INGEST_PREFIX):
            self._check_export(topic)
            return
        if topic not in allowed:
            raise RelayDenied(f"relay policy: {op} on topic {topic!r} is not allowed "
                              f"(allowed: {', '.join(sorted(allowed))})")

    def _check_export(self, topic: str) -> None:
        try:
            settings = self.export() if self.export is not None else export_config.ExportSettings()
        except Exception as exc:  # A cannot tell what is configured: refuse rather than trust B
            raise RelayDenied(f"relay policy: {topic!r} refused: Collector.Export could not be read ({exc})")
        allowed = settings.topics(self.thing)
        if topic not in allowed:
            raise RelayDenied(f"relay policy: publish_iot on topic {topic!r} is not allowed (Collector.Export is "
                              + (f"{', '.join(allowed)})" if allowed else "off)"))


def export_view(ipc: SupervisorPort) -> Callable[[], export_config.ExportSettings]:
    """Process A's view of Collector.Export, read from its own IPC at each export publish (one local call every
    report interval): B never says which rule it may use. Only a deployment changes the section (it is not a
    set-config key, docs/fleet.md); an invalid section allows nothing until it is fixed."""
    def read() -> export_config.ExportSettings:
        return export_config.parse(ipc.get_config(["Collector", "Export"]), "Collector.Export")
    return read



# -- the server -----------------------------------------------------------------------------------------------
class RelayServer:
    """Serves one child incarnation over its socket end: a reader thread (requests, in order) and a writer
    thread (replies and events). All of the child's subscriptions are closed when its socket closes."""

    def __init__(self, sock: socket.socket, ipc: SupervisorPort, thing: str, *, name: str = "collector",
                 mitigation: Any = None,
                 guard: Optional[ContentGuard] = None):
        """`mitigation`: the supervisor's MitigationGate (None: B may not ask for remediation); `guard`: the
        supervisor's ContentGuard, shared by every incarnation of B (a new one when None)."""
        self.sock = sock
        self.ipc = ipc
        self.policy = Policy(thing, export_view(ipc))
        self.mitigation = mitigation
        self.guard = guard or ContentGuard(thing)
        self.name = name
        self._warned = 0
        self._subs: Dict[Any, Any] = {}  # keyed by B's subscription ids: what B sent, checked on use
        self._lock = threading.Lock()
        self._out: "queue.Queue[Optional[tuple]]" = queue.Queue()  # (is_event, line); None ends the writer
        self._events_pending = 0
        self._dropped = 0
        self._closed = threading.Event()
        self._collect_sid: Optional[int] = None  # B's subscription serving collect_now calls
        self._collect_waiting: Dict[Any, list] = {}  # requestId -> [Event, answer or None]
        self._reader = threading.Thread(target=self._read_loop, name=f"relay-{name}-in", daemon=True)
        self._writer = threading.Thread(target=self._write_loop, name=f"relay-{name}-out", daemon=True)

    def start(self) -> "RelayServer":
        self._writer.start()
        self._reader.start()
        return self

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def subscription_count(self) -> int:
        with self._lock:
            return len(self._subs)

    def close(self) -> None:
        """Close every subscription of this child and its socket (idempotent, from any thread)."""
        if self._closed.is_set():
            return
        self._closed.set()
        with self._lock:
            subs, self._subs = list(self._subs.values()), {}
        for sub in subs:
            try:
                sub.close()
            except Exception:
                pass
        self._out.put(None)  # the writer sends what is queued (e.g. the reason for closing), then stops
        try:
            self.sock.shutdown(socket.SHUT_RD)  # wakes the reader; it closes the socket after the writer
        except OSError:
            pass
        if subs:
            log.info("relay: %d subscription(s) of the %s process closed", len(subs), self.name)

    def collect_now(self, request_id: str, timeout: float) -> dict:
        """A's typed collect-now call to B's collector (ipc_port.SupervisorPort.collect_now)."""
        if not isinstance(request_id, str) or not request_id:
            raise ValueError("collect_now: requestId must be a non-empty string")
        slot: list = [threading.Event(), None]
        with self._lock:
            sid = self._collect_sid
            if sid is None or self._closed.is_set():
                raise IpcUnavailable(f"the {self.name} process does not serve collect-now calls")
            if len(self._collect_waiting) >= MAX_COLLECT_CALLS or request_id in self._collect_waiting:
                raise ValueError(f"collect_now: over {MAX_COLLECT_CALLS} calls pending or requestId in use")
            self._collect_waiting[request_id] = slot
        try:
            self._push({"ev": sid, "collect": request_id})
            if not slot[0].wait(timeout):
                raise TimeoutError(f"the {self.name} process did not answer collect-now within {timeout:g}s")
        finally:
            with self._lock:
                self._collect_waiting.pop(request_id, None)
        if slot[1] is None:
            raise IpcUnavailable(f"the {self.name} process went away before answering collect-now")
        return slot[1]

    def _stop_serving_collect(self, sid: int) -> None:
        with self._lock:
            if self._collect_sid != sid:
                return
            self._collect_sid = None
            waiting, self._collect_waiting = list(self._collect_waiting.values()), {}
        self.ipc.detach_collector(self)
        for slot in waiting:  # answer None: the caller raises IpcUnavailable at once rather than time out
            slot[0].set()

    def _collect_result(self, answer: Any) -> None:
        if not isinstance(answer, dict) or answer.get("event") not in COLLECT_EVENTS:
            raise ValueError(f"'result' must be an object with 'event' one of {', '.join(COLLECT_EVENTS)}")
        with self._lock:
            slot = self._collect_waiting.get(answer.get("requestId"))
        if slot is None:
            raise RelayDenied("relay policy: collect_result answers no collect-now call of process A")
        slot[1] = dict(answer)
        slot[0].set()

    def join(self, timeout: Optional[float] = None) -> None:
        for t in (self._reader, self._writer):
            if t.is_alive() and t is not threading.current_thread():
                t.join(timeout)

    # -- I/O threads ---------------------------------------------------------------------------------------------
    def _read_loop(self) -> None:
        stream = self.sock.makefile("rb")
        try:
            while not self._closed.is_set():
                try:
                    line = read_line(stream, MAX_REQUEST_LINE)
                except ValueError as exc:
                    log.warning("relay: %s from the %s process; closing its relay", exc, self.name)
                    self._reply(None, error=f"request {exc}; relay closed", kind="invalid")
                    break
                except OSError:
                    break
                if line is None:
                    break
                self._handle_line(line)
        finally:
            stream.close()
            self.close()
            self._writer.join(5)
            try:
                self.sock.close()
            except OSError:
                pass

    def _write_loop(self) -> None:
        while True:
            item = self._out.get()
            if item is None:
                return
            is_event, data = item
            if is_event:
                with self._lock:
                    self._events_pending -= 1
            try:
                self.sock.sendall(data)
            except OSError:
                self.close()
                return

    def _reply(self, rid: Any, result: Any = None, *, error: Optional[str] = None, kind: str = "error") -> None:
        msg = {"id": rid, "ok": True, "result": result} if error is None else \
            {"id": rid, "ok": False, "kind": kind, "error": error}
        data = encode(msg)
        if len(data) > MAX_REPLY_LINE:
            data = encode({"id": rid, "ok": False, "kind": "error",
                            "error": f"reply over {MAX_REPLY_LINE} bytes, not relayed"})
        self._out.put((False, data))

    def _push(self, event: dict) -> None:
        """Queue an event for B; drop it (with a warning now and then) when B has fallen far behind."""
        if self._closed.is_set():
            return
        data = encode(event)
        with self._lock:
            if self._events_pending >= MAX_PENDING_EVENTS or len(data) > MAX_REPLY_LINE:
                self._dropped += 1
                dropped = self._dropped
            else:
                self._events_pending += 1
                dropped = 0
        if dropped:
            if dropped == 1 or dropped % 100 == 0:
                log.warning("relay: the %s process is not reading; %d event(s) dropped", self.name, dropped)
            return
        self._out.put((True, data))

    # -- requests ---------------------------------------------------------------------------------------------------
    def _handle_line(self, line: bytes) -> None:
        try:
            req = json.loads(line)
        except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
            self._reply(None, error=f"malformed request (not JSON: {exc or 'nested too deeply'})", kind="invalid")
            return
        rid = req.get("id") if isinstance(req, dict) else None
        if not isinstance(rid, int) or isinstance(rid, bool):
            self._reply(None, error="malformed request: expected an object with an integer 'id'", kind="invalid")
            return
        op = req.get("op")
        try:
            if not isinstance(op, str):
                raise ValueError("'op' must be a string")
            self._reply(rid, self._dispatch(op, req))
        except MitigationRefused as exc:  # the gate logged it with the request id
            self._reply(rid, error=str(exc), kind="denied")
        except (RelayDenied, ContentDenied) as exc:
            self._warn("denied to the %s process: %s", exc)
            self._reply(rid, error=str(exc), kind="denied")
        except ContentInvalid as exc:
            self._warn("invalid content from the %s process refused: %s", exc)
            self._reply(rid, error=f"invalid {op!r} request: {exc}", kind="invalid")
        except (ValueError, TypeError) as exc:
            self._reply(rid, error=f"invalid {op!r} request: {exc}", kind="invalid")
        except IpcUnavailable as exc:
            self._reply(rid, error=str(exc), kind="unavailable")
        except PublishRefused as exc:
            self._reply(rid, error=str(exc), kind="refused")
        except Exception as exc:  # the IPC call failed in A: B gets the message
            self._reply(rid, error=f"{type(exc).__name__}: {exc}", kind="error")

    def _warn(self, fmt: str, exc: Exception) -> None:
        """A warning per refusal, thinned out when B keeps trying (a log is not a place to flood)."""
        self._warned += 1
        if self._warned <= 20 or self._warned % 100 == 0:
            log.warning("relay: " + fmt + ("" if self._warned <= 20 else " (%d refusals so far)"),
                        self.name, str(exc)[:500], *(() if self._warned <= 20 else (self._warned,)))

    def _mitigate(self, req: dict) -> Any:
        if self.mitigation is None:
            raise RelayDenied("relay policy: mitigation requests are not served here")
        from ggdefender.remediation.mitigation_gate import Refused

        try:
            return self.mitigation.submit(req.get("request"))
        except Refused as exc:  # the gate has logged the reason; B gets it
            raise MitigationRefused(str(exc)) from None

    def _dispatch(self, op: str, req: dict) -> Any:
        topic = ""
        if op in ("publish_iot", "subscribe_iot", "publish_local", "subscribe_local"):
            topic = req.get("topic")  # type: ignore[assignment]  # checked on the next line
            if not isinstance(topic, str) or not 0 < len(topic) <= MAX_TOPIC:
                raise ValueError(f"'topic' must be a string of 1-{MAX_TOPIC} characters")
        self.policy.check(op, topic)
        if op == "publish_iot":
            data = unb64(req.get("b64"))
            qos = _qos(req)
            report_id = self.guard.check_iot(topic, data)
            self.ipc.publish_iot(topic, data, qos=qos)
            if report_id is not None:
                self.guard.relayed_report(topic, report_id)
            return None
        if op == "publish_local":
            if "b64" in req:
                message = unb64(req["b64"])
            elif "json" in req:
                message = req["json"]
            else:
                raise ValueError("needs 'json' or 'b64'")
            self.guard.check_local(topic, message)
            self.ipc.publish_local(topic, message)
            return None
        if op == "mitigate":
            return self._mitigate(req)
        if op == "collect_result":
            return self._collect_result(req.get("result"))
        if op == "health":
            path: Any = req.get("path")  # checked by check_from_part
            value = req.get("value")
            try:
                health.check_from_part(path, value)
            except PermissionError as exc:
                raise RelayDenied(f"relay policy: {exc}") from None
            health.report(self.ipc, path, value)
            return None
        if op == "get_config":
            key_path = req.get("keyPath") or []
            if not isinstance(key_path, list) or len(key_path) > MAX_KEY_PATH or \
                    not all(isinstance(k, str) and len(k) <= MAX_TOPIC for k in key_path):
                raise ValueError(f"'keyPath' must be a list of at most {MAX_KEY_PATH} strings")
            return self.ipc.get_config(key_path)  # own component only: no component name is relayed
        if op == "unsubscribe":
            with self._lock:
                sub = self._subs.pop(req.get("sub"), None)
            if sub is not None:
                sub.close()
            return None
        sid = req.get("sub")
        if not isinstance(sid, int) or isinstance(sid, bool):
            raise ValueError("'sub' must be an integer")
        with self._lock:
            if sid in self._subs:
                raise ValueError(f"subscription {sid} already exists")
            if len(self._subs) >= MAX_SUBSCRIPTIONS:
                raise ValueError(f"over {MAX_SUBSCRIPTIONS} subscriptions")
            self._subs[sid] = None  # reserved while A subscribes
        try:
            if op == "subscribe_iot":
                sub = self.ipc.subscribe_iot(topic, lambda t, p: self._push({"ev": sid, "topic": t, "b64": b64(p)}),
                                             qos=_qos(req))
            elif op == "subscribe_local":
                sub = self.ipc.subscribe_local(topic, lambda t, m: self._deliver_local(sid, t, m))
            elif op == "subscribe_mitigation":
                if self.mitigation is None:
                    raise RelayDenied("relay policy: mitigation results are not served here")
                sub = self.mitigation.subscribe(lambda result: self._push({"ev": sid, "result": result}))
            elif op == "subscribe_collect_now":
                sub = self._serve_collect(sid)
            else:
                sub = self.ipc.subscribe_config(lambda path: self._push({"ev": sid, "path": list(path)}))
        except BaseException:
            with self._lock:
                self._subs.pop(sid, None)
            raise
        with self._lock:
            keep = not self._closed.is_set() and sid in self._subs
            if keep:
                self._subs[sid] = sub
        if not keep:  # the child went away while A subscribed
            sub.close()
        return None


    def _serve_collect(self, sid: int) -> "_Closer":
        with self._lock:
            if self._collect_sid is not None:
                raise ValueError("collect-now calls are already served")
            self._collect_sid = sid
        self.ipc.attach_collector(self)
        return _Closer(lambda: self._stop_serving_collect(sid))

    def _deliver_local(self, sid: int, topic: str, message: Any) -> None:
        self.guard.delivered(topic, message)  # B may answer what it was given, and nothing else
        self._push(_local_event(sid, topic, message))


class _Closer:
    """A relayed subscription served by A itself (no IPC stream behind it)."""

    def __init__(self, on_close: Callable[[], None]):
        self._on_close: Optional[Callable[[], None]] = on_close

    def close(self) -> None:
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()


def _qos(req: dict) -> int:
    qos = req.get("qos", 1)
    if qos not in (0, 1) or isinstance(qos, bool):
        raise ValueError("'qos' must be 0 or 1")
    return qos


def _local_event(sid: int, topic: str, message: Any) -> dict:
    if isinstance(message, (bytes, bytearray)):
        return {"ev": sid, "topic": topic, "b64": b64(bytes(message))}
    return {"ev": sid, "topic": topic, "json": message}



if TYPE_CHECKING:  # checked by mypy (tests/unit/test_typecheck.py): RelayServer is process A's channel to B
    from ggdefender.ipc import Ipc
    from ggdefender.ipc_port import CollectorChannel

    _channel: CollectorChannel = RelayServer(socket.socket(), Ipc(), "thing")
