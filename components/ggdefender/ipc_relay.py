"""The IPC relay between process A (`ggdefender run`) and process B (`ggdefender part collector`).

Process B does not hold the component's IPC token and does not load awsiotsdk/awscrt (~13 MiB RSS). Process A,
which owns the one Greengrass IPC connection, serves an allow-listed subset of IPC calls for B over a socketpair
that B inherits (fd number in `GGDEFENDER_RELAY_FD`). A compromised collector can therefore publish only its
own report/violation/finding topics and cannot UpdateConfiguration (e.g. widen the Remediation allow-list that
the possibly-root process A executes); what it publishes there is checked too (relay_guard.py), and it can ask
for remediation only through the typed `mitigate` call that A's MitigationGate checks against A's own policy
and observations (remediation/mitigation_gate.py). See docs/security.md.

Wire format: one JSON object per line (UTF-8), at most `MAX_REQUEST_LINE` bytes from B and `MAX_REPLY_LINE`
from A; binary payloads are base64.
  B -> A  {"id": n, "op": "publish_iot", "topic": t, "b64": ..., "qos": 0|1}
          {"id": n, "op": "subscribe_iot", "sub": s, "topic": t, "qos": 0|1}
          {"id": n, "op": "publish_local", "topic": t, "json": value} | {..., "b64": ...}
          {"id": n, "op": "subscribe_local", "sub": s, "topic": t}
          {"id": n, "op": "get_config", "keyPath": [...]}
          {"id": n, "op": "subscribe_config", "sub": s}
          {"id": n, "op": "unsubscribe", "sub": s}
          {"id": n, "op": "health", "path": p, "value": object|null}   (only B's own paths: health.check_from_part)
          {"id": n, "op": "mitigate", "request": {"requestId", "operation", "target", "profile", "behavior",
                                                  "violationId"}}   (detect.mitigation.check_request)
          {"id": n, "op": "subscribe_mitigation", "sub": s}          results of accepted mitigate calls
          {"id": n, "op": "subscribe_collect_now", "sub": s}         B's collector serves A's collect-now calls
          {"id": n, "op": "collect_result", "result": {"requestId", "event": "report-published", "reportId",
                                                       "topic"} | {"requestId", "event": "report-failed", "reason"}}
  A -> B  {"id": n, "ok": true, "result": value} | {"id": n, "ok": false, "kind": k, "error": message}
          {"ev": s, "topic": t, "json": value} | {"ev": s, "topic": t, "b64": ...} | {"ev": s, "path": [...]}
          {"ev": s, "result": {"requestId", "operation", "status", "statusDetails", "violationId"}}
          {"ev": s, "collect": requestId}                           a collect-now call of A (Ipc.collect_now)
The subscription id `s` is chosen by B, so an event can never arrive before B knows where it goes.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import queue
import socket
import threading
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Dict, Mapping, Optional

from ggdefender import health, topics
from ggdefender.ipc import IOT_CORE_MAX_PAYLOAD, MAX_IOT_PAYLOAD_ENV, Ipc, IpcUnavailable, PublishRefused
from ggdefender.ipc_port import CollectNowHandler, ConfigHandler, IotHandler, IpcPort, LocalHandler, \
    MitigationHandler, SupervisorPort
from ggdefender.relay_guard import ContentDenied, ContentGuard, ContentInvalid

log = logging.getLogger("ggdefender.ipc_relay")

FD_ENV = "GGDEFENDER_RELAY_FD"
MAX_REQUEST_LINE = 1 << 20  # reports are <= 128 KiB (base64: ~171 KiB); anything larger from B is hostile
MAX_REPLY_LINE = 16 << 20  # A is trusted, but a configuration reply is still bounded
MAX_SUBSCRIPTIONS = 32  # B uses 8
MAX_PENDING_EVENTS = 1000  # per child: A's IPC callback thread must never block on a slow B
MAX_TOPIC = 256
MAX_KEY_PATH = 32
REPLY_TIMEOUT = 120.0  # A's own IPC calls retry with backoff before they give up
MAX_COLLECT_CALLS = 16  # collect-now calls of A waiting on B at once (the listener runs one job at a time)
COLLECT_EVENTS = ("report-published", "report-failed")

# Never relayed, named so a denial can say why (the rest are simply "not allowed").
PRIVILEGED_OPS = ("update_config", "update_state", "restart_component", "component_details")


class RelayError(RuntimeError):
    """A relayed call failed in process A; the message is A's."""


class RelayTimeout(RelayError, TimeoutError):
    """Process A did not answer in time: says nothing about the request itself (callers may retry it)."""


class RelayPublishRefused(RelayError, PublishRefused):
    """The nucleus refused process A's PublishToIoTCore for B (e.g. nucleus lite with no IoT Core connection):
    B's callers tell it from a refusal of the item itself by type (ipc.PublishRefused)."""


class RelayDenied(RelayError, PermissionError):
    """Process A's relay policy does not allow this call for process B."""


class MitigationRefused(RelayDenied):
    """Process A's MitigationGate refused a mitigation request; the message is the reason."""


# -- policy ----------------------------------------------------------------------------------------------------
class Policy:
    """What process B may do through the relay (docs/architecture.md, "One component, two processes")."""

    # no remediation topic: B asks for remediation only with the typed `mitigate` call, checked by A
    LOCAL_PUBLISH = frozenset({topics.COLLECTOR_EVENTS, topics.LOCAL_VIOLATIONS, topics.LOCAL_FINDINGS})
    LOCAL_SUBSCRIBE = frozenset({topics.CUSTOM_METRICS, topics.COLLECTOR_COMMANDS})
    # not scoped by topic: health paths are checked in _dispatch, mitigate requests by the MitigationGate
    UNSCOPED = ("get_config", "subscribe_config", "unsubscribe", "health", "mitigate", "subscribe_mitigation",
                "subscribe_collect_now", "collect_result")  # B answers only calls A is waiting on

    def __init__(self, thing: str):
        if not thing:
            raise ValueError("relay policy: no thing name")
        self.iot_publish = frozenset({topics.metrics(thing, "json"), topics.metrics(thing, "cbor"),
                                      topics.violations(thing), topics.findings(thing)})
        self.iot_subscribe = frozenset(f"{topics.metrics(thing, fmt)}/{outcome}" for fmt in ("json", "cbor")
                                       for outcome in ("accepted", "rejected"))

    def check(self, op: str, topic: Optional[str] = None) -> None:
        """Raise RelayDenied unless B may do `op` (on `topic`)."""
        allowed = {"publish_iot": self.iot_publish, "subscribe_iot": self.iot_subscribe,
                   "publish_local": self.LOCAL_PUBLISH, "subscribe_local": self.LOCAL_SUBSCRIBE}.get(op)
        if op in self.UNSCOPED:
            return
        if allowed is None:
            why = " (privileged: only process A may do this)" if op in PRIVILEGED_OPS else ""
            raise RelayDenied(f"relay policy: operation {op!r} is not allowed{why}")
        if topic not in allowed:
            raise RelayDenied(f"relay policy: {op} on topic {topic!r} is not allowed "
                              f"(allowed: {', '.join(sorted(allowed))})")


# -- framing ---------------------------------------------------------------------------------------------------
def _encode(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def _read_line(stream: BinaryIO, limit: int) -> Optional[bytes]:
    """One line without its newline; None at EOF; ValueError when the line is over `limit` bytes."""
    line = stream.readline(limit + 1)
    if not line:
        return None
    if not line.endswith(b"\n"):
        if len(line) > limit:
            raise ValueError(f"line over {limit} bytes")
        return None  # EOF in the middle of a line: the peer is gone
    return line[:-1]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise ValueError("'b64' must be a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("'b64' is not valid base64") from None


# -- process A -------------------------------------------------------------------------------------------------
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
        self.policy = Policy(thing)
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
                    line = _read_line(stream, MAX_REQUEST_LINE)
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
        data = _encode(msg)
        if len(data) > MAX_REPLY_LINE:
            data = _encode({"id": rid, "ok": False, "kind": "error",
                            "error": f"reply over {MAX_REPLY_LINE} bytes, not relayed"})
        self._out.put((False, data))

    def _push(self, event: dict) -> None:
        """Queue an event for B; drop it (with a warning now and then) when B has fallen far behind."""
        if self._closed.is_set():
            return
        data = _encode(event)
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
            data = _unb64(req.get("b64"))
            qos = _qos(req)
            report_id = self.guard.check_iot(topic, data)
            self.ipc.publish_iot(topic, data, qos=qos)
            if report_id is not None:
                self.guard.relayed_report(topic, report_id)
            return None
        if op == "publish_local":
            if "b64" in req:
                message = _unb64(req["b64"])
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
                sub = self.ipc.subscribe_iot(topic, lambda t, p: self._push({"ev": sid, "topic": t, "b64": _b64(p)}),
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
        return {"ev": sid, "topic": topic, "b64": _b64(bytes(message))}
    return {"ev": sid, "topic": topic, "json": message}


def socket_pair():
    """(A's end, B's end): a connected stream socketpair; B's end is meant for `pass_fds`."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)


# -- process B -------------------------------------------------------------------------------------------------
class RelaySubscription:
    def __init__(self, client: "RelayClient", sid: int, kind: str, topic: str, handler: Callable):
        self._client = client
        self.sid = sid
        self.kind = kind
        self.topic = topic
        self.handler = handler
        self.closed = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._client._forget(self.sid)
        try:
            self._client._request({"op": "unsubscribe", "sub": self.sid})
        except Exception:  # the relay is gone: A closed the subscription with it
            pass


class RelayClient:
    """What process B uses instead of `ggdefender.ipc.Ipc`: the same methods B calls, served by process A.

    Thread-safe. Handlers run on one callback thread, in arrival order (never on the socket reader, so a
    handler may itself make relayed calls)."""

    def __init__(self, sock: socket.socket, *, timeout: float = REPLY_TIMEOUT):
        self.sock = sock
        self.timeout = timeout
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._next_id = 1
        self._waiting: Dict[Any, list] = {}  # id -> [Event, reply]; looked up with the id A sent
        self._subs: Dict[Any, RelaySubscription] = {}
        self._events: "queue.Queue[Optional[tuple]]" = queue.Queue(MAX_PENDING_EVENTS)
        self._gone: Optional[str] = None
        self._gone_listeners: list = []
        self._closed = False
        self._reader: Optional[threading.Thread] = None
        self._callbacks: Optional[threading.Thread] = None

    @classmethod
    def from_env(cls, env: Optional[Mapping[str, str]] = None) -> "RelayClient":
        env = os.environ if env is None else env
        raw = env.get(FD_ENV, "")
        if not raw.isdigit():
            raise IpcUnavailable(f"{FD_ENV}={raw!r} is not a file descriptor number")
        fd = int(raw)
        try:
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            raise IpcUnavailable(f"{FD_ENV}={fd}: not a usable socket ({exc})") from None
        if sock.family != socket.AF_UNIX:
            sock.detach()
            raise IpcUnavailable(f"{FD_ENV}={fd}: not a Unix socket")
        sock.set_inheritable(False)  # plugins' subprocesses must not get the relay
        return cls(sock)

    # -- the Ipc surface B uses ----------------------------------------------------------------------------------
    @property
    def thing_name(self) -> str:
        return os.environ.get("AWS_IOT_THING_NAME", "")

    @staticmethod
    def available() -> bool:
        """True when this process was started by `ggdefender run` with a relay socket."""
        return os.environ.get(FD_ENV, "").isdigit()

    def connect(self) -> "RelayClient":
        with self._lock:
            if self._closed:
                raise IpcUnavailable("relay client closed")
            if self._reader is None:
                self._reader = threading.Thread(target=self._read_loop, name="relay-in", daemon=True)
                self._callbacks = threading.Thread(target=self._callback_loop, name="relay-callbacks", daemon=True)
                self._reader.start()
                self._callbacks.start()
        return self

    def on_gone(self, listener: Callable[[str], None]) -> None:
        """Call listener(reason) once when the supervisor's end closes (process A gone), not after close()."""
        with self._lock:
            if self._gone is None:
                self._gone_listeners.append(listener)
                return
            closed = self._closed
        if not closed:
            listener(self._gone)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._fail_all("relay client closed")
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        try:
            self._events.put_nowait(None)
        except queue.Full:
            pass

    @staticmethod
    def max_iot_payload() -> int:
        """What process A found the nucleus takes (Ipc.max_iot_payload), passed in B's environment."""
        try:
            return max(1024, min(int(os.environ.get(MAX_IOT_PAYLOAD_ENV, "")), IOT_CORE_MAX_PAYLOAD - 1))
        except ValueError:
            return IOT_CORE_MAX_PAYLOAD - 1

    def publish_iot(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        self._request({"op": "publish_iot", "topic": topic, "b64": _b64(data), "qos": 1 if qos else 0})

    def subscribe_iot(self, topic_filter: str, handler: IotHandler, qos: int = 1) -> RelaySubscription:
        return self._subscribe("iot", topic_filter, handler, {"op": "subscribe_iot", "topic": topic_filter,
                                                              "qos": 1 if qos else 0})

    def publish_local(self, topic: str, message: Any) -> None:
        if isinstance(message, (bytes, bytearray)):
            self._request({"op": "publish_local", "topic": topic, "b64": _b64(bytes(message))})
        else:
            self._request({"op": "publish_local", "topic": topic, "json": message})

    def subscribe_local(self, topic: str, handler: LocalHandler) -> RelaySubscription:
        return self._subscribe("local", topic, handler, {"op": "subscribe_local", "topic": topic})

    def get_config(self, key_path: Optional[list] = None, component: Optional[str] = None) -> Any:
        if component:
            raise RelayDenied("relay policy: only this component's own configuration can be read")
        return self._request({"op": "get_config", "keyPath": list(key_path or [])})

    def health(self, path: str, value: Optional[dict]) -> None:
        """Set `path` of process A's health document (use `ggdefender.health.report`, which never raises)."""
        self._request({"op": "health", "path": path, "value": value})

    def subscribe_config(self, handler: ConfigHandler, component: Optional[str] = None) -> RelaySubscription:
        if component:
            raise RelayDenied("relay policy: only this component's own configuration can be watched")
        return self._subscribe("config", "", handler, {"op": "subscribe_config"})

    # -- process B only: Detect's mitigation (not an Ipc method: there is no public door for it) ---------------
    def mitigate(self, request: dict) -> dict:
        """Ask process A for one mitigation action ({"requestId", "operation", "target", "profile", "behavior",
        "violationId"}); returns {"requestId", "status": "accepted"}, raises MitigationRefused with A's reason.
        The outcome arrives later on `subscribe_mitigation`'s handler."""
        try:
            return self._request({"op": "mitigate", "request": request})
        except RelayDenied as exc:
            raise MitigationRefused(str(exc)) from None

    def subscribe_mitigation(self, handler: MitigationHandler) -> RelaySubscription:
        """handler(result) for each accepted request's outcome: {"requestId", "operation", "status",
        "statusDetails", "violationId"}."""
        return self._subscribe("mitigation", "", handler, {"op": "subscribe_mitigation"})

    # -- process B only: process A's collect-now calls (its remediation's collect-now operation) ----------------
    def subscribe_collect_now(self, handler: CollectNowHandler) -> RelaySubscription:
        """handler(requestId) for each collect-now call of process A; answer each with `collect_result`."""
        return self._subscribe("collect", "", handler, {"op": "subscribe_collect_now"})

    def collect_result(self, answer: dict) -> None:
        self._request({"op": "collect_result", "result": answer})

    # -- internals -------------------------------------------------------------------------------------------------
    def _subscribe(self, kind: str, topic: str, handler: Callable[..., None], req: dict) -> RelaySubscription:
        with self._lock:
            sid = self._next_id
            self._next_id += 1
            sub = RelaySubscription(self, sid, kind, topic, handler)
            self._subs[sid] = sub
        try:
            self._request(dict(req, sub=sid))
        except BaseException:
            self._forget(sid)
            raise
        return sub

    def _forget(self, sid: int) -> None:
        with self._lock:
            self._subs.pop(sid, None)

    def _request(self, req: dict) -> Any:
        self.connect()
        done = threading.Event()
        slot: list = [done, None]
        with self._lock:
            if self._gone:
                raise IpcUnavailable(self._gone)
            rid = self._next_id
            self._next_id += 1
            self._waiting[rid] = slot
        try:
            data = _encode(dict(req, id=rid))
            if len(data) > MAX_REQUEST_LINE:
                raise RelayError(f"request over {MAX_REQUEST_LINE} bytes, not sent")
            try:
                with self._send_lock:
                    self.sock.sendall(data)
            except OSError as exc:
                self._fail_all(f"relay to the supervisor lost: {exc}")
                raise IpcUnavailable(f"relay to the supervisor lost: {exc}") from None
            if not done.wait(self.timeout):
                raise RelayTimeout(f"no reply from the supervisor within {self.timeout:g}s ({req.get('op')})")
        finally:
            with self._lock:
                self._waiting.pop(rid, None)
        reply = slot[1]
        if reply is None or "gone" in reply:
            raise IpcUnavailable(reply["gone"] if reply else "relay closed")
        if reply.get("ok"):
            return reply.get("result")
        message = str(reply.get("error") or "relayed call failed")
        kind = reply.get("kind")
        if kind == "denied":
            raise RelayDenied(message)
        if kind == "unavailable":
            raise IpcUnavailable(message)
        if kind == "refused":
            raise RelayPublishRefused(message)
        raise RelayError(message)

    def _fail_all(self, why: str) -> None:
        with self._lock:
            if self._gone is None:
                self._gone = why
            waiting = list(self._waiting.values())
        for slot in waiting:
            slot[1] = {"gone": why}
            slot[0].set()

    def _read_loop(self) -> None:
        stream = self.sock.makefile("rb")
        why = "relay to the supervisor closed"
        try:
            while True:
                try:
                    line = _read_line(stream, MAX_REPLY_LINE)
                except ValueError as exc:
                    why = f"relay: {exc} from the supervisor"
                    log.error("%s; closing", why)
                    break
                except OSError as exc:
                    why = f"relay to the supervisor lost: {exc}"
                    break
                if line is None:
                    break
                try:
                    msg = json.loads(line)
                    if not isinstance(msg, dict):
                        raise ValueError("not an object")
                except (ValueError, RecursionError) as exc:
                    log.warning("relay: unreadable message from the supervisor ignored: %s", exc)
                    continue
                if "ev" in msg:
                    self._enqueue_event(msg)
                    continue
                with self._lock:
                    slot = self._waiting.get(msg.get("id"))
                if slot is not None:
                    slot[1] = msg
                    slot[0].set()
                elif not msg.get("ok", True):
                    log.warning("relay: the supervisor reported: %s", msg.get("error"))
        finally:
            stream.close()
            self._fail_all(why)
            with self._lock:
                listeners = [] if self._closed else self._gone_listeners
                self._gone_listeners = []
            for listener in listeners:
                try:
                    listener(self._gone or why)
                except Exception:
                    log.exception("relay: gone listener failed")
            try:
                self._events.put_nowait(None)
            except queue.Full:
                pass

    def _enqueue_event(self, msg: dict) -> None:
        with self._lock:
            sub = self._subs.get(msg.get("ev"))
        if sub is None:
            return  # closed meanwhile
        args: tuple
        try:
            if sub.kind == "config":
                args = (list(msg.get("path") or []),)
            elif sub.kind == "mitigation":
                if not isinstance(msg.get("result"), dict):
                    raise ValueError("no result object")
                args = (msg["result"],)
            elif sub.kind == "collect":
                if not isinstance(msg.get("collect"), str):
                    raise ValueError("no requestId")
                args = (msg["collect"],)
            else:
                args = (str(msg.get("topic") or sub.topic), _unb64(msg["b64"]) if "b64" in msg else msg.get("json"))
        except (ValueError, KeyError) as exc:
            log.warning("relay: malformed event for %s %r ignored: %s", sub.kind, sub.topic, exc)
            return
        try:
            self._events.put_nowait((sub, args))
        except queue.Full:
            log.warning("relay: callbacks behind; event on %r dropped", sub.topic)

    def _callback_loop(self) -> None:
        while True:
            item = self._events.get()
            if item is None:
                return
            sub, args = item
            if sub.closed:
                continue
            try:
                sub.handler(*args)
            except Exception:  # a handler bug must never kill the callback thread
                log.exception("handler for %s subscription %r failed", sub.kind, sub.topic)


def client_for_part() -> "Optional[IpcPort]":
    """The IPC object for process B: the relay when started by `ggdefender run`, else a direct `Ipc` (a developer
    running the part alone under a core); None when neither is available."""
    if RelayClient.available():
        return RelayClient.from_env()
    return Ipc() if Ipc.available() else None


if TYPE_CHECKING:  # checked by mypy (tests/unit/test_typecheck.py): RelayClient is process B's port
    from ggdefender.ipc_port import CollectorChannel, CollectorPort

    _port: CollectorPort = RelayClient(socket.socket())
    _channel: CollectorChannel = RelayServer(socket.socket(), Ipc(), "thing")
