"""Process B's side of the private relay: `RelayClient`, what B uses instead of `ggdefender.ipc.Ipc`.

Process B holds no IPC token and loads no awsiotsdk/awscrt; every call goes over the socketpair it inherits
(relay_wire.FD_ENV) to process A's RelayServer (supervisor/relay_server.py), which allows only B's own topics
and calls. The wire format is relay_wire.py; docs/architecture.md, docs/security.md.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import threading
from typing import TYPE_CHECKING, Any, Callable, Dict, Mapping, Optional

from ggdefender import health
from ggdefender.ipc import IOT_CORE_MAX_PAYLOAD, MAX_IOT_PAYLOAD_ENV, Ipc, IpcUnavailable
from ggdefender.ipc_port import CollectNowHandler, ConfigHandler, IotHandler, IpcPort, LocalHandler, \
    MitigationHandler
from ggdefender.relay_wire import FD_ENV, MAX_PENDING_EVENTS, MAX_REPLY_LINE, MAX_REQUEST_LINE, \
    MitigationRefused, RelayDenied, RelayError, RelayPublishRefused, RelayTimeout, b64, encode, read_line, unb64

log = logging.getLogger("ggdefender.collector.relay_client")

REPLY_TIMEOUT = 120.0  # A's own IPC calls retry with backoff before they give up


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
        self._request({"op": "publish_iot", "topic": topic, "b64": b64(data), "qos": 1 if qos else 0})

    def subscribe_iot(self, topic_filter: str, handler: IotHandler, qos: int = 1) -> RelaySubscription:
        return self._subscribe("iot", topic_filter, handler, {"op": "subscribe_iot", "topic": topic_filter,
                                                              "qos": 1 if qos else 0})

    def publish_local(self, topic: str, message: Any) -> None:
        if isinstance(message, (bytes, bytearray)):
            self._request({"op": "publish_local", "topic": topic, "b64": b64(bytes(message))})
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
            data = encode(dict(req, id=rid))
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
                    line = read_line(stream, MAX_REPLY_LINE)
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
                args = (str(msg.get("topic") or sub.topic), unb64(msg["b64"]) if "b64" in msg else msg.get("json"))
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


health.RELAYED_PORTS.append(RelayClient)  # its health() goes to process A (health.report)


def client_for_part() -> "Optional[IpcPort]":
    """The IPC object for process B: the relay when started by `ggdefender run`, else a direct `Ipc` (a developer
    running the part alone under a core); None when neither is available."""
    if RelayClient.available():
        return RelayClient.from_env()
    return Ipc() if Ipc.available() else None


if TYPE_CHECKING:  # checked by mypy (tests/unit/test_typecheck.py): RelayClient is process B's port
    from ggdefender.ipc_port import CollectorPort

    _port: CollectorPort = RelayClient(socket.socket())
