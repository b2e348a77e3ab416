"""The IPC server: an asyncio Unix socket, one protocol object per connection, operations on the `Core`.

Each connection owns an `RpcConnection` (sans-IO) and its subscriptions; a client that sends garbage gets
PROTOCOL_ERROR and loses only its own connection. Replies and deliveries are queued on the connection and
written in one batch per loop turn. On EOF (the client's `close()` sends nothing) every subscription of
the connection is dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import threading
from typing import Any, Callable, Optional

from .core import Core
from ggdefender.eventstream import MAX_MESSAGE_BYTES
from .ipc_operations import OPERATIONS
from .ipc_operations.base import OperationError, internal_error, parse_request, unsupported
from .rpc import Close, Connected, Rejected, Request, RpcConnection, StreamClosed

log = logging.getLogger("ggdefender.local.nucleus.server")

SUN_PATH_MAX = 108  # bytes in sockaddr_un.sun_path on Linux, the terminating NUL included

REJECT_GRACE_SECONDS = 2.0  # after a rejecting CONNECT_ACK, let the client hang up first (deterministic error)
MAX_WRITE_BUFFER = 64 * 1024 * 1024  # a subscriber this far behind is disconnected rather than buffered forever
CONNECT_TIMEOUT_SECONDS = 30.0  # a socket that never sends CONNECT does not hold a slot forever
MAX_CONNECTIONS = 1024


def _json(body: dict) -> bytes:
    return b"{}" if not body else json.dumps(body).encode()


class _Stream:
    """What a streaming operation's deliveries write to."""

    __slots__ = ("conn", "stream_id")

    def __init__(self, conn: "_Connection", stream_id: int):
        self.conn = conn
        self.stream_id = stream_id

    def send_event(self, shape: str, body: dict) -> bool:
        return self.conn.send_event(self.stream_id, shape, body)

    def close(self) -> None:
        self.conn.close_stream(self.stream_id)


class _Connection(asyncio.Protocol):
    def __init__(self, server: "IpcServer"):
        self.server = server
        self.core = server.core
        self.rpc = RpcConnection(self.core.authenticate, max_message_bytes=server.max_frame_bytes)
        assert server.loop is not None  # connections come only from a started server
        self.loop: asyncio.AbstractEventLoop = server.loop
        # asyncio calls connection_made first, which sets it
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.unsubscribe: dict[int, Callable[[], None]] = {}
        self._flush_scheduled = False
        self._closing = False
        self._connect_timer: Optional[asyncio.TimerHandle] = None

    # -- asyncio callbacks -----------------------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        if len(self.server.connections) >= self.server.max_connections:
            log.warning("refusing IPC connection: %d connections already open", len(self.server.connections))
            self._closing = True
            transport.abort()
            return
        self.server.connections.add(self)
        self._connect_timer = self.loop.call_later(self.server.connect_timeout, self._connect_timeout)

    def _connect_timeout(self) -> None:
        if self.rpc.state == "awaiting-connect" and not self._closing:
            log.info("closing an IPC connection that sent no CONNECT within %.0f s", self.server.connect_timeout)
            self._closing = True
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            events = self.rpc.receive_data(data)
            for ev in events:
                if type(ev) is Request:
                    self._request(ev)
                elif type(ev) is StreamClosed:
                    self._drop_stream(ev.stream_id)
                elif type(ev) is Connected:
                    self.core.emit({"kind": "connect", "component": ev.principal})
                elif type(ev) is Rejected:
                    self.core.emit({"kind": "connect-rejected", "component": None, "message": ev.reason})
                    self._flush()
                    self.loop.call_later(REJECT_GRACE_SECONDS, self._abort)
                    self._closing = True
                    return
                elif type(ev) is Close:
                    log.info("closing IPC connection of %s: %s", self.rpc.principal or "unauthenticated", ev.reason)
                    self.core.emit({"kind": "protocol-error", "component": self.rpc.principal, "message": ev.reason})
                    self._flush()
                    self._closing = True
                    self.transport.close()
                    return
        except Exception:  # a bug here must cost only this connection
            log.exception("IPC connection failed")
            self._closing = True
            self.transport.abort()
            return
        self._flush()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        if self._connect_timer is not None:
            self._connect_timer.cancel()
        self.server.connections.discard(self)
        self.rpc.connection_lost()
        subs, self.unsubscribe = self.unsubscribe, {}
        for unsubscribe in subs.values():
            try:
                unsubscribe()
            except Exception:
                log.exception("unsubscribe failed")
        if self.rpc.principal is not None:
            self.core.emit({"kind": "disconnect", "component": self.rpc.principal})

    def pause_writing(self) -> None:
        # the client does not read its replies: stop reading its requests until it catches up
        if self.transport is not None and not self._closing:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self._closing:
            self.transport.resume_reading()

    # -- output -----------------------------------------------------------------------------------------------
    def _flush(self) -> None:
        self._flush_scheduled = False
        data = self.rpc.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            if self.transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
                log.warning("IPC client %s is not reading; disconnecting it", self.rpc.principal)
                self._closing = True
                self.transport.abort()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def send_event(self, stream_id: int, shape: str, body: dict) -> bool:
        if self._closing:
            return False
        if not self.rpc.send_message(stream_id, shape, json.dumps(body).encode()):
            return False
        self._schedule_flush()
        return True

    def close_stream(self, stream_id: int) -> None:
        self._drop_stream(stream_id)
        if self.rpc.close_stream(stream_id):
            self._schedule_flush()

    def _drop_stream(self, stream_id: int) -> None:
        unsubscribe = self.unsubscribe.pop(stream_id, None)
        if unsubscribe is not None:
            unsubscribe()

    # -- operations ---------------------------------------------------------------------------------------------
    def _request(self, req: Request) -> None:
        spec = OPERATIONS.get(req.operation)
        principal = self.rpc.principal
        assert principal is not None  # requests come only once CONNECT was accepted (rpc.py)
        if spec is None:
            self._error(req.stream_id, unsupported(req.operation))
            return
        try:
            request = parse_request(req.payload)
            if spec.blocking:
                self._run_blocking(spec, principal, req.stream_id, request)
                return
            if spec.streaming:
                stream = _Stream(self, req.stream_id)
                response, start = spec.handler(self.core, principal, request, stream)
                self.rpc.send_message(req.stream_id, spec.response_shape, _json(response))
                # subscribe only now: every event is queued after the initial response
                self.unsubscribe[req.stream_id] = start()
            else:
                response = spec.handler(self.core, principal, request)
                self.rpc.send_message(req.stream_id, spec.response_shape, _json(response),
                                      terminate=True)
        except OperationError as err:
            self._error(req.stream_id, err)
        except Exception as exc:
            log.exception("operation %s failed", req.operation)
            self._error(req.stream_id, internal_error(exc))

    def _error(self, stream_id: int, err: OperationError) -> None:
        self.rpc.send_error(stream_id, err.shape, err.payload())

    def _run_blocking(self, spec: Any, principal: str, stream_id: int, request: dict) -> None:
        loop = self.loop

        def work() -> tuple:
            try:
                return spec.handler(self.core, principal, request), None
            except OperationError as err:
                return None, err
            except Exception as exc:
                log.exception("operation %s failed", spec.name)
                return None, internal_error(exc)

        def done(fut: asyncio.Future) -> None:
            response, err = fut.result()
            if err is not None:
                self._error(stream_id, err)
            else:
                self.rpc.send_message(stream_id, spec.response_shape, _json(response), terminate=True)
            self._schedule_flush()

        loop.run_in_executor(None, work).add_done_callback(done)


class IpcServer:
    """Serves Greengrass IPC for `core` on a Unix socket (mode 0666 like the nucleus)."""

    def __init__(self, core: Core, socket_path: str, *, max_frame_bytes: int = MAX_MESSAGE_BYTES,
                 max_connections: int = MAX_CONNECTIONS, connect_timeout: float = CONNECT_TIMEOUT_SECONDS):
        self.core = core
        self.socket_path = os.path.abspath(socket_path)
        self.max_frame_bytes = max_frame_bytes
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.connections: set[_Connection] = set()
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self._server: Optional[asyncio.AbstractServer] = None

    async def start(self) -> None:
        if len(self.socket_path.encode()) >= SUN_PATH_MAX:
            raise ValueError(f"socket path {self.socket_path!r} is {SUN_PATH_MAX} bytes or longer (the sun_path limit)")
        self.loop = asyncio.get_running_loop()
        try:
            if stat.S_ISSOCK(os.lstat(self.socket_path).st_mode):
                os.unlink(self.socket_path)  # a stale socket from a previous run
        except FileNotFoundError:
            pass
        self._server = await self.loop.create_unix_server(lambda: _Connection(self), self.socket_path)
        os.chmod(self.socket_path, 0o666)
        self.core.attach_loop(self.loop, threading.get_ident())

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        await asyncio.sleep(0)  # let connection_lost drop their subscriptions while deliveries still run here
        await self._server.wait_closed()
        self._server = None
        self.core.detach_loop()
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass

    async def __aenter__(self) -> "IpcServer":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()
