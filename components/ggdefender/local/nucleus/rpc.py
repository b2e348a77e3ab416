"""Server side of eventstream-RPC for one connection, sans-IO: bytes in, events out; calls in, bytes out.

It enforces what the aws-c-event-stream server and the nucleus enforce: CONNECT first (``:version``
"0.1.0", ``{"authToken": SVCUID}`` looked up by the caller's `authenticate`), the three int32 headers on
every frame, message types legal per stream id, new stream ids strictly increasing and carrying an
``operation`` header, TERMINATE handling both ways, and PING echo. A violation queues PROTOCOL_ERROR and
marks the connection for closing; nothing else is ever affected.

The owner (`server.py`) calls `receive_data()` and acts on the returned events, queues replies with the
``send_*`` methods and writes `data_to_send()` to the socket.
"""

from __future__ import annotations

import json
from typing import Callable, NamedTuple, Optional, Union

from ggdefender.eventstream import (MAX_MESSAGE_BYTES, Decoder, Frame, HeaderType, ProtocolError, encode_headers,
                                    encode_raw)
from ggdefender.eventstream_rpc import (CT_JSON, FLAG_CONNECTION_ACCEPTED, FLAG_TERMINATE_STREAM, I32, PREFIX, VERSION,
                                        MessageType, frame_bytes, shape_block)

# A CONNECT is about 120 bytes. Until a connection has authenticated, a bigger frame is refused at its prelude,
# so anyone who can open the (mode 0666) socket cannot make the server buffer 24 MiB per connection.
MAX_CONNECT_BYTES = 64 * 1024


# -- events returned by receive_data -----------------------------------------------------------------------

class Connected(NamedTuple):
    principal: str


class Rejected(NamedTuple):
    reason: str  # CONNECT_ACK without the accept flag was queued; wait for the client to hang up


class Request(NamedTuple):
    stream_id: int
    operation: str
    model_type: Optional[str]
    payload: bytes


class StreamClosed(NamedTuple):
    stream_id: int  # the client sent TERMINATE_STREAM on an open stream


class Close(NamedTuple):
    reason: str  # an error frame (if any) was queued; flush and close the socket


Event = Union[Connected, Rejected, Request, StreamClosed, Close]


def _error_payload(message: str) -> bytes:
    return json.dumps({"message": message}).encode()


class RpcConnection:
    """One client connection's RPC state. Not thread-safe: drive it from one thread (the event loop)."""

    def __init__(self, authenticate: Callable[[str], Optional[str]], *,
                 max_message_bytes: int = MAX_MESSAGE_BYTES, max_open_streams: int = 10000):
        self._authenticate = authenticate
        self._max_message_bytes = max_message_bytes
        self._decoder = Decoder(min(max_message_bytes, MAX_CONNECT_BYTES))
        self._out: list[bytes] = []
        self.state = "awaiting-connect"  # -> "connected" | "rejected" | "closed"
        self.principal: Optional[str] = None
        self.last_stream_id = 0
        self.open_streams: set[int] = set()
        self.max_open_streams = max_open_streams
        self.frames_received = 0

    # -- output ----------------------------------------------------------------------------------------
    def data_to_send(self) -> bytes:
        out = self._out
        if not out:
            return b""
        self._out = []
        return out[0] if len(out) == 1 else b"".join(out)

    @property
    def has_output(self) -> bool:
        return bool(self._out)

    def _queue(self, data: bytes) -> None:
        self._out.append(data)

    # -- input -----------------------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> list[Event]:
        if self.state in ("closed", "rejected"):
            return []  # after a rejection or an error we only wait for the client to go away
        try:
            frames = self._decoder.feed(data)
        except ProtocolError as exc:
            events = self._handle_frames(exc.frames)
            if self.state == "closed":
                return events
            return events + [self._protocol_error(f"malformed message: {exc}")]
        return self._handle_frames(frames)

    def _handle_frames(self, frames: list[Frame]) -> list[Event]:
        events: list[Event] = []
        for frame in frames:
            self.frames_received += 1
            ev = self._handle(frame)
            if ev is not None:
                events.append(ev)
                if isinstance(ev, (Close, Rejected)):
                    break
        return events

    def _handle(self, frame: Frame) -> Optional[Event]:
        index = frame.index()
        mt = index.get(":message-type")
        mf = index.get(":message-flags")
        sid = index.get(":stream-id")
        if (mt is None or mf is None or sid is None or mt.type != HeaderType.INT32
                or mf.type != HeaderType.INT32 or sid.type != HeaderType.INT32):
            return self._protocol_error("A message was received with missing required fields: :message-type, "
                                        ":message-flags and :stream-id must be int32 headers")
        msg_type, flags, stream_id = mt.value, mf.value, sid.value
        if msg_type < 0 or msg_type > MessageType.INTERNAL_ERROR:
            return self._protocol_error(f"unknown message type {msg_type}")
        if msg_type <= MessageType.APPLICATION_ERROR:
            if stream_id < 1:
                return self._protocol_error(f"message type {msg_type} needs a stream id >= 1, got {stream_id}")
        elif stream_id != 0:
            return self._protocol_error(f"message type {msg_type} needs stream id 0, got {stream_id}")

        if self.state == "awaiting-connect":
            if msg_type != MessageType.CONNECT:
                return self._protocol_error("the first message must be CONNECT")
            return self._connect(frame)
        if msg_type == MessageType.CONNECT:
            return self._protocol_error("CONNECT received on an established connection")
        if msg_type == MessageType.PING:
            echo = [h for h in frame.headers if not h.name.startswith(":")]
            self._queue(frame_bytes(MessageType.PING_RESPONSE, 0, 0, encode_headers(echo), frame.payload))
            return None
        if msg_type == MessageType.PING_RESPONSE:
            return None
        if msg_type in (MessageType.PROTOCOL_ERROR, MessageType.INTERNAL_ERROR):
            self.state = "closed"
            return Close(f"client sent {MessageType(msg_type).name}")
        if msg_type == MessageType.CONNECT_ACK:
            return self._protocol_error("CONNECT_ACK is not a client message")
        return self._stream_message(frame, msg_type, flags, stream_id)

    def _connect(self, frame: Frame) -> Event:
        version = frame.header(":version")
        if version is None or version.type != HeaderType.STRING or version.value != VERSION:
            got = None if version is None else version.value
            return self._reject(f"unsupported or missing :version {got!r} (server speaks {VERSION})")
        try:
            body = json.loads(frame.payload) if frame.payload else None
        except (ValueError, UnicodeDecodeError):
            body = None
        token = body.get("authToken") if isinstance(body, dict) else None
        principal = self._authenticate(token) if isinstance(token, str) and token else None
        if principal is None:
            return self._reject("missing or unknown authToken" if body is not None else "CONNECT payload is not JSON")
        self.state = "connected"
        self.principal = principal
        self._decoder.max_message_bytes = self._max_message_bytes  # the real client waits for the ACK first
        self._queue(frame_bytes(MessageType.CONNECT_ACK, FLAG_CONNECTION_ACCEPTED, 0))
        return Connected(principal)

    def _reject(self, reason: str) -> Event:
        self.state = "rejected"
        self._queue(frame_bytes(MessageType.CONNECT_ACK, 0, 0))
        return Rejected(reason)

    def _stream_message(self, frame: Frame, msg_type: int, flags: int, stream_id: int) -> Optional[Event]:
        terminate = bool(flags & FLAG_TERMINATE_STREAM)
        if stream_id > self.last_stream_id:
            index = frame.index()
            op = index.get("operation")
            if op is None or op.type != HeaderType.STRING or not op.value:
                return self._protocol_error(f"stream {stream_id}: the first message of a stream needs an "
                                            f"'operation' string header")
            self.last_stream_id = stream_id
            if terminate or msg_type != MessageType.APPLICATION_MESSAGE:
                return None  # the nucleus runs no handler for a request that closes itself
            if len(self.open_streams) >= self.max_open_streams:
                return self._protocol_error(f"more than {self.max_open_streams} open streams")
            self.open_streams.add(stream_id)
            mst = index.get("service-model-type")
            model_type = mst.value if mst is not None and mst.type == HeaderType.STRING else None
            return Request(stream_id, op.value, model_type, frame.payload)
        if stream_id in self.open_streams:
            if terminate:
                self.open_streams.discard(stream_id)
                return StreamClosed(stream_id)
            return None  # IPC operations take no further client messages; the nucleus ignores them
        return None  # a stale stream (simultaneous close): tolerated like the reference C server

    def _protocol_error(self, message: str) -> Event:
        if self.state != "closed":
            self._queue(frame_bytes(MessageType.PROTOCOL_ERROR, 0, 0, CT_JSON, _error_payload(message)))
        self.state = "closed"
        return Close(message)

    # -- replies -----------------------------------------------------------------------------------------
    def send_message(self, stream_id: int, model_type: str, payload: bytes, *, terminate: bool = False) -> bool:
        """A response or stream event (APPLICATION_MESSAGE with content type and shape headers).

        False (and nothing sent) when the stream is no longer open."""
        if stream_id not in self.open_streams or self.state != "connected":
            return False
        flags = FLAG_TERMINATE_STREAM if terminate else 0
        if terminate:
            self.open_streams.discard(stream_id)
        self._queue(encode_raw(PREFIX[(0, flags)] + I32.pack(stream_id) + shape_block(model_type), payload))
        return True

    def send_error(self, stream_id: int, model_type: str, payload: bytes) -> bool:
        """A modeled error: APPLICATION_ERROR + TERMINATE_STREAM with the error shape."""
        if stream_id not in self.open_streams or self.state != "connected":
            return False
        self.open_streams.discard(stream_id)
        self._queue(encode_raw(PREFIX[(1, FLAG_TERMINATE_STREAM)] + I32.pack(stream_id)
                               + shape_block(model_type), payload))
        return True

    def close_stream(self, stream_id: int) -> bool:
        """Server-initiated close: an empty APPLICATION_MESSAGE with TERMINATE_STREAM."""
        if stream_id not in self.open_streams or self.state != "connected":
            return False
        self.open_streams.discard(stream_id)
        self._queue(frame_bytes(MessageType.APPLICATION_MESSAGE, FLAG_TERMINATE_STREAM, stream_id))
        return True

    def connection_lost(self) -> list[int]:
        """The socket closed: returns the streams that were still open (their subscriptions must go)."""
        streams = sorted(self.open_streams)
        self.open_streams.clear()
        self.state = "closed"
        self._out = []
        return streams
