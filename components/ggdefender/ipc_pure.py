"""A pure-Python Greengrass IPC client (`ipc_client.IpcClient`) on our eventstream codec, for where awscrt is not.

The wire protocol is the one awsiotsdk speaks (and `ggdefender local` serves, on the same codec): a Unix socket
(AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT), CONNECT with ``:version`` 0.1.0 and
``{"authToken": SVCUID}``, CONNECT_ACK with the accepted flag; then one stream per operation (ids 1, 2, 3...,
in order on the wire), the first frame carrying ``operation``, ``service-model-type`` and a JSON body (blobs in
base64); the answer is one TERMINATE frame, or for a subscription an initial response, events, and a TERMINATE
from either side; a modeled error is APPLICATION_ERROR with its shape.

Bounded: frames over `max_frame_bytes` end the connection; connect, the CONNECT_ACK and every call wait at most
`timeout`; a write that cannot finish within `timeout` ends the connection (a half-written frame cannot be
taken back). One reader thread per connection decodes frames and hands stream events and closes to the
executor (in arrival order with a one-worker executor), so a slow handler never stalls the reader and a reader
never waits for a caller. A connection that drops fails every pending call with `ConnectionLost`, ends every
stream and calls `on_disconnect` once.
"""

from __future__ import annotations

import base64
import concurrent.futures
import datetime
import json
import logging
import os
import socket
import threading
import time
from typing import Any, Callable, Optional

from ggdefender.eventstream import MAX_MESSAGE_BYTES, Decoder, Frame, Header, HeaderType, ProtocolError, encode_headers
from ggdefender.eventstream_rpc import (CONTENT_TYPE_JSON, FLAG_CONNECTION_ACCEPTED, FLAG_TERMINATE_STREAM,
                                        MAX_STREAM_ID, SHAPE_PREFIX, VERSION, MessageType, frame_bytes, shape_block)
from ggdefender.ipc_client import (AccessDenied, ConnectionLost, MalformedAnswer, OnClosed, OnConfigUpdate,
                                   OnDisconnect, OnIotMessage, OnLocalMessage, modeled_error)

log = logging.getLogger("ggdefender.ipc")

SOCKET_ENV = "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"
TOKEN_ENV = "SVCUID"
READ_CHUNK = 256 * 1024
_VERSION_HEADER = encode_headers([Header.string(":version", VERSION)])


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise MalformedAnswer(f"{what}: expected a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise MalformedAnswer(f"{what}: not valid base64") from None


class _Stream:
    """One operation's stream: the caller waits on `answered`; events and the close go to the executor."""

    def __init__(self, client: "PureClient", stream_id: int, operation: str, streaming: bool,
                 on_event: Optional[Callable[[dict], None]], event_shape: str, on_closed: Optional[OnClosed]):
        self.client, self.stream_id, self.operation = client, stream_id, operation
        self.response_shape = SHAPE_PREFIX + operation + "Response"
        self.streaming, self.on_event, self.event_shape, self.on_closed = streaming, on_event, event_shape, on_closed
        self.answered = threading.Event()
        self.response: Any = None
        self.error: Optional[BaseException] = None
        self.open = True  # guarded by the client's lock

    def answer(self, response: Any = None, error: Optional[BaseException] = None) -> None:
        self.response, self.error = response, error
        self.answered.set()

    def close(self) -> None:
        """Client-side close of a subscription: TERMINATE with no body; the nucleus drops the subscription."""
        if self.client._forget(self):
            try:
                self.client._send(frame_bytes(MessageType.APPLICATION_MESSAGE, FLAG_TERMINATE_STREAM, self.stream_id))
            except (ConnectionLost, OSError):
                pass  # the connection is gone: so is the subscription
            self.client._closed_stream(self)


class PureClient:
    """`ipc_client.IpcClient` in pure Python. Thread-safe."""

    name = "pure"

    def __init__(self, *, on_disconnect: OnDisconnect, executor: concurrent.futures.Executor, timeout: float = 10.0,
                 socket_path: Optional[str] = None, auth_token: Optional[str] = None,
                 max_frame_bytes: int = MAX_MESSAGE_BYTES):
        """Connects (CONNECT / CONNECT_ACK) before returning. Socket path and token default to the environment
        a Greengrass core gives its components; a missing one is a KeyError naming it, as with awsiotsdk."""
        path = socket_path if socket_path is not None else os.environ[SOCKET_ENV]
        token = auth_token if auth_token is not None else os.environ[TOKEN_ENV]
        self.timeout = timeout
        self._on_disconnect = on_disconnect
        self._executor = executor
        self._lock = threading.Lock()  # streams and state; never held while doing I/O
        self._send_lock = threading.Lock()  # one frame on the wire at a time, stream ids in order
        self._streams: dict[int, _Stream] = {}
        self._last_stream_id = 0
        self._lost: Optional[str] = None  # why the connection ended (set once)
        self._closing = False
        self._decoder = Decoder(max_frame_bytes)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.settimeout(timeout)
            self._sock.connect(path)
            self._sock.sendall(frame_bytes(MessageType.CONNECT, 0, 0, _VERSION_HEADER,
                                           json.dumps({"authToken": token}).encode()))
            self._await_connect_ack(time.monotonic() + timeout)
        except BaseException:
            self._sock.close()
            raise
        self._reader = threading.Thread(target=self._read_loop, name="ipc-pure-reader", daemon=True)
        self._reader.start()

    # -- connection --------------------------------------------------------------------------------------------
    def _await_connect_ack(self, deadline: float) -> None:
        pending: list[Frame] = []
        while not pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no CONNECT_ACK from the nucleus within {self.timeout:g}s")
            self._sock.settimeout(left)
            try:
                data = self._sock.recv(READ_CHUNK)
            except socket.timeout:
                continue
            if not data:
                raise ConnectionLost("the nucleus closed the connection before CONNECT_ACK (access denied?)")
            try:
                pending = self._decoder.feed(data)
            except ProtocolError as exc:
                raise ConnectionLost(f"malformed answer to CONNECT: {exc}") from None
        ack = pending[0]
        kind, flags, stream_id = self._rpc_headers(ack)
        if kind != MessageType.CONNECT_ACK or stream_id != 0:
            raise ConnectionLost(f"expected CONNECT_ACK, the nucleus sent message type {kind}")
        if not flags & FLAG_CONNECTION_ACCEPTED:
            raise AccessDenied("Connection access denied to event stream RPC server")
        self._sock.settimeout(self.timeout)  # from now on: reads poll, writes are bounded
        for frame in pending[1:]:
            self._handle(frame)

    @staticmethod
    def _rpc_headers(frame: Frame) -> tuple[int, int, int]:
        index = frame.index()
        values = []
        for name in (":message-type", ":message-flags", ":stream-id"):
            h = index.get(name)
            if h is None or h.type != HeaderType.INT32:
                raise ConnectionLost(f"the nucleus sent a message without the int32 {name} header")
            values.append(h.value)
        return values[0], values[1], values[2]

    def _read_loop(self) -> None:
        while True:
            with self._lock:
                if self._lost is not None:
                    return
            try:
                data = self._sock.recv(READ_CHUNK)
            except socket.timeout:
                continue  # idle: the nucleus never pings
            except OSError as exc:
                self._connection_lost(f"read failed: {exc}")
                return
            if not data:
                self._connection_lost("the nucleus closed the connection")
                return
            try:
                frames = self._decoder.feed(data)
            except ProtocolError as exc:
                for frame in exc.frames:
                    self._handle_safely(frame)
                self._connection_lost(f"malformed message from the nucleus: {exc}")
                return
            for frame in frames:
                if not self._handle_safely(frame):
                    return

    def _handle_safely(self, frame: Frame) -> bool:
        try:
            self._handle(frame)
            return True
        except ConnectionLost as exc:
            self._connection_lost(str(exc))
            return False

    def _handle(self, frame: Frame) -> None:
        kind, flags, stream_id = self._rpc_headers(frame)
        if stream_id == 0:
            if kind in (MessageType.PROTOCOL_ERROR, MessageType.INTERNAL_ERROR):
                raise ConnectionLost(f"the nucleus sent {MessageType(kind).name}: {frame.payload[:500]!r}")
            if kind in (MessageType.PING, MessageType.PING_RESPONSE):
                return  # awsiotsdk does not answer a server ping either (the nucleus sends none)
            raise ConnectionLost(f"unexpected connection-level message type {kind}")
        if kind not in (MessageType.APPLICATION_MESSAGE, MessageType.APPLICATION_ERROR):
            raise ConnectionLost(f"message type {kind} on stream {stream_id}")
        with self._lock:
            if stream_id > self._last_stream_id:
                raise ConnectionLost(f"the nucleus answered on stream {stream_id}, which was never opened")
            stream = self._streams.get(stream_id)
        if stream is None:
            return  # a stream already closed (or a call that timed out): ignored, as the C client does
        terminate = bool(flags & FLAG_TERMINATE_STREAM)
        if kind == MessageType.APPLICATION_ERROR:
            self._forget(stream)
            error = self._error(frame)
            if stream.answered.is_set():  # an error after the initial response ends the subscription
                log.warning("IPC %s stream ended by the nucleus: %s", stream.operation, error)
                self._closed_stream(stream)
            else:
                stream.answer(error=error)
            return
        if not stream.answered.is_set():
            if terminate and frame.value("service-model-type") is None:
                self._forget(stream)  # closed by the nucleus without an answer
                stream.answer(error=ConnectionLost(f"{stream.operation}: stream closed by the nucleus"))
                return
            try:
                body = self._body(frame, stream.response_shape)
            except MalformedAnswer as exc:
                self._forget(stream)
                stream.answer(error=exc)
                return
            if terminate or not stream.streaming:
                self._forget(stream)
            stream.answer(response=body)
            if terminate and stream.streaming:
                self._closed_stream(stream)
            return
        if frame.value("service-model-type") is not None or frame.payload:
            try:
                event = self._body(frame, stream.event_shape)
            except MalformedAnswer as exc:
                log.warning("IPC %s: event dropped: %s", stream.operation, exc)
            else:
                if stream.on_event is not None:
                    self._submit(stream.on_event, event)
        if terminate:
            if self._forget(stream):
                self._closed_stream(stream)

    @staticmethod
    def _body(frame: Frame, shape: str) -> Any:
        got = frame.value("service-model-type")
        if got != shape:
            raise MalformedAnswer(f"unexpected answer type {got!r}, expected {shape!r}")
        if frame.value(":content-type") != CONTENT_TYPE_JSON:
            raise MalformedAnswer(f"{shape}: content type {frame.value(':content-type')!r}, not {CONTENT_TYPE_JSON}")
        try:
            return json.loads(frame.payload) if frame.payload else {}
        except (ValueError, UnicodeDecodeError):
            raise MalformedAnswer(f"{shape}: the body is not JSON") from None

    @staticmethod
    def _error(frame: Frame) -> BaseException:
        shape = frame.value("service-model-type")
        try:
            body = json.loads(frame.payload) if frame.payload else {}
        except (ValueError, UnicodeDecodeError):
            body = {"message": frame.payload[:500].decode("utf-8", "replace")}
        if not isinstance(body, dict):
            body = {}
        message = body.get("message") if isinstance(body.get("message"), str) else ""
        context = body.get("context") if isinstance(body.get("context"), dict) else None
        if not isinstance(shape, str):  # a failure the nucleus did not model (awsiotsdk: a bare StreamClosedError)
            return ConnectionLost(f"the nucleus failed the call without a modeled error: {message or 'no reason'}")
        return modeled_error(shape, message, context)

    def _submit(self, fn: Callable[..., None], *args: Any) -> None:
        def run() -> None:
            try:
                fn(*args)
            except Exception:  # the executor would keep it in a future nobody reads
                log.exception("IPC stream callback failed")

        try:
            self._executor.submit(run)
        except RuntimeError:
            pass  # the executor is shut down: the owner is closing

    def _forget(self, stream: _Stream) -> bool:
        """Drop a stream; False when it was already gone."""
        with self._lock:
            if not stream.open:
                return False
            stream.open = False
            self._streams.pop(stream.stream_id, None)
            return True

    def _closed_stream(self, stream: _Stream) -> None:
        if stream.on_closed is not None:
            self._submit(stream.on_closed)

    def _connection_lost(self, reason: str) -> None:
        with self._lock:
            if self._lost is not None:
                return
            self._lost = reason
            streams, self._streams = list(self._streams.values()), {}
            for stream in streams:
                stream.open = False
            told = not self._closing
        try:
            self._sock.close()
        except OSError:
            pass
        for stream in streams:
            if not stream.answered.is_set():
                stream.answer(error=ConnectionLost(f"{stream.operation}: {reason}"))
            elif stream.streaming:
                self._closed_stream(stream)
        if told:
            try:
                self._on_disconnect(reason)
            except Exception:
                log.exception("IPC on_disconnect failed")

    def close(self) -> None:
        with self._lock:
            self._closing = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the reader at once
        except OSError:
            pass
        self._connection_lost("closed by the component")
        if threading.current_thread() is not self._reader:
            self._reader.join(self.timeout)

    # -- sending and calling -----------------------------------------------------------------------------------
    def _send(self, data: bytes) -> None:
        with self._send_lock:
            self._send_locked(data)

    def _send_locked(self, data: bytes) -> None:
        with self._lock:
            if self._lost is not None:
                raise ConnectionLost(self._lost)
        try:
            self._sock.sendall(data)  # bounded by the socket timeout
        except OSError as exc:  # includes socket.timeout: a half-sent frame leaves the connection unusable
            self._connection_lost(f"write failed: {exc}")
            raise ConnectionLost(f"write failed: {exc}") from None

    def _call(self, operation: str, request: dict, *, on_event: Optional[Callable[[dict], None]] = None,
              event_shape: str = "", on_closed: Optional[OnClosed] = None) -> tuple[Any, _Stream]:
        """Open a stream for `operation`, send the request, wait (bounded) for the answer."""
        headers = shape_block(f"{SHAPE_PREFIX}{operation}Request") + encode_headers(
            [Header.string("operation", SHAPE_PREFIX + operation)])
        payload = json.dumps(request, separators=(",", ":")).encode()
        streaming = on_event is not None
        with self._send_lock:
            with self._lock:
                if self._lost is not None:
                    raise ConnectionLost(self._lost)
                if self._last_stream_id >= MAX_STREAM_ID:
                    raise ConnectionLost("stream ids used up on this connection")
                self._last_stream_id += 1
                stream = _Stream(self, self._last_stream_id, operation, streaming, on_event, event_shape, on_closed)
                self._streams[stream.stream_id] = stream
            try:
                data = frame_bytes(MessageType.APPLICATION_MESSAGE, 0, stream.stream_id, headers, payload)
            except ValueError as exc:  # over the 24 MiB an eventstream message may have
                self._forget(stream)
                raise ValueError(f"{operation}: {exc}") from None
            self._send_locked(data)
        if not stream.answered.wait(self.timeout):
            if self._forget(stream) and streaming:  # a late answer is ignored; a late subscription ended
                try:
                    self._send(frame_bytes(MessageType.APPLICATION_MESSAGE, FLAG_TERMINATE_STREAM, stream.stream_id))
                except ConnectionLost:
                    pass
            raise TimeoutError(f"{operation}: no answer from the nucleus within {self.timeout:g}s")
        if stream.error is not None:
            raise stream.error
        return stream.response, stream

    # -- IoT Core ----------------------------------------------------------------------------------------------
    def publish_to_iot_core(self, topic: str, qos: int, payload: bytes) -> None:
        self._call("PublishToIoTCore", {"topicName": topic, "qos": "1" if qos else "0", "payload": _b64(payload)})

    def subscribe_to_iot_core(self, topic: str, qos: int, on_message: OnIotMessage, on_closed: OnClosed) -> _Stream:
        def on_event(event: dict) -> None:
            msg = event.get("message")
            if not isinstance(msg, dict) or not isinstance(msg.get("topicName"), str):
                log.warning("IPC SubscribeToIoTCore %s: event without a message dropped", topic)
                return
            try:
                payload = _unb64(msg.get("payload", ""), "IoTCoreMessage payload")
            except MalformedAnswer as exc:
                log.warning("IPC SubscribeToIoTCore %s: %s", topic, exc)
                return
            on_message(msg["topicName"], payload)

        _, stream = self._call("SubscribeToIoTCore", {"topicName": topic, "qos": "1" if qos else "0"},
                               on_event=on_event, event_shape=SHAPE_PREFIX + "IoTCoreMessage", on_closed=on_closed)
        return stream

    # -- local pub/sub -----------------------------------------------------------------------------------------
    def publish_to_topic(self, topic: str, message: Any) -> None:
        if isinstance(message, (bytes, bytearray)):
            body = {"binaryMessage": {"message": _b64(bytes(message))}}
        else:
            body = {"jsonMessage": {"message": message}}
        self._call("PublishToTopic", {"topic": topic, "publishMessage": body})

    def subscribe_to_topic(self, topic: str, on_message: OnLocalMessage, on_closed: OnClosed) -> _Stream:
        def on_event(event: dict) -> None:
            for key in ("jsonMessage", "binaryMessage"):
                msg = event.get(key)
                if isinstance(msg, dict):
                    break
            else:
                log.warning("IPC SubscribeToTopic %s: event without a message dropped", topic)
                return
            context = msg.get("context")
            at = topic
            if isinstance(context, dict) and isinstance(context.get("topic"), str):
                at = context["topic"]
            if key == "jsonMessage":
                on_message(at, msg.get("message"))
                return
            try:
                on_message(at, _unb64(msg.get("message", ""), "binary message"))
            except MalformedAnswer as exc:
                log.warning("IPC SubscribeToTopic %s: %s", topic, exc)

        _, stream = self._call("SubscribeToTopic", {"topic": topic}, on_event=on_event,
                               event_shape=SHAPE_PREFIX + "SubscriptionResponseMessage", on_closed=on_closed)
        return stream

    # -- configuration -----------------------------------------------------------------------------------------
    def get_configuration(self, component: Optional[str], key_path: list) -> Any:
        request: dict = {"keyPath": list(key_path)}
        if component is not None:
            request["componentName"] = component
        response, _ = self._call("GetConfiguration", request)
        return response.get("value") if isinstance(response, dict) else None

    def update_configuration(self, key_path: list, value_to_merge: dict, timestamp: datetime.datetime) -> None:
        self._call("UpdateConfiguration", {"keyPath": list(key_path), "timestamp": timestamp.timestamp(),
                                           "valueToMerge": value_to_merge})

    def subscribe_to_configuration_update(self, component: Optional[str], on_update: OnConfigUpdate,
                                          on_closed: OnClosed) -> _Stream:
        def on_event(event: dict) -> None:
            update = event.get("configurationUpdateEvent")
            path = update.get("keyPath") if isinstance(update, dict) else None
            on_update(list(path) if isinstance(path, list) else [])

        request: dict = {"keyPath": []}
        if component is not None:
            request["componentName"] = component
        _, stream = self._call("SubscribeToConfigurationUpdate", request, on_event=on_event,
                               event_shape=SHAPE_PREFIX + "ConfigurationUpdateEvents", on_closed=on_closed)
        return stream

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def update_state(self, state: str) -> None:
        self._call("UpdateState", {"state": state})

    def restart_component(self, component: str) -> str:
        response, _ = self._call("RestartComponent", {"componentName": component})
        return str(response.get("restartStatus")) if isinstance(response, dict) else "None"

    def get_component_details(self, component: str) -> dict:
        response, _ = self._call("GetComponentDetails", {"componentName": component})
        details = response.get("componentDetails") if isinstance(response, dict) else None
        if not isinstance(details, dict):
            raise MalformedAnswer("GetComponentDetailsResponse without componentDetails")
        return {"componentName": details.get("componentName"), "version": details.get("version"),
                "state": details.get("state"), "configuration": details.get("configuration")}
