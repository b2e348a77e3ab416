"""The control channel of a running `ggdefender local run`: `<root>/control.sock`, JSON lines.

One request per line, `{"command": NAME, "args": {...}}`, answered by one line `{"ok": true, "result": ...}` or
`{"ok": false, "error": "..."}`. The socket is mode 0600 (only the user running the core may use it), lines are
bounded, and only registered commands run: the runtime's own (`status`, `config-update`) and those the cloud
services offer (`control_commands()`). Other CLI commands use `control_request(root, command, args)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Optional

from ..nucleus.server import SUN_PATH_MAX

log = logging.getLogger("ggdefender.local.ui.control")

SOCKET_NAME = "control.sock"
MAX_LINE = 1024 * 1024
COMMAND_TIMEOUT = 60.0


class ControlError(RuntimeError):
    """The running core refused a control request, or there is no running core."""


@contextlib.contextmanager
def short_socket_path(path: Path | str) -> Iterator[str]:
    """A path under sun_path's 108-byte limit naming the same socket: a short symlink to its folder."""
    path = Path(path)
    if len(str(path).encode()) < SUN_PATH_MAX:  # sun_path counts bytes
        yield str(path)
        return
    alias_dir = tempfile.mkdtemp(prefix="ggd-")
    link = os.path.join(alias_dir, "d")
    os.symlink(path.parent, link)
    try:
        yield os.path.join(link, path.name)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(link)
        with contextlib.suppress(OSError):
            os.rmdir(alias_dir)


class ControlServer:
    """Serves control requests on the runtime's loop; handlers run in a worker thread."""

    def __init__(self, root: Path | str, commands: dict):
        self.path = Path(root) / SOCKET_NAME
        self.commands: dict[str, Callable[[dict], dict]] = dict(commands)
        self._server: Optional[asyncio.AbstractServer] = None

    async def start(self) -> None:
        if self.path.exists() or self.path.is_symlink():
            if _alive(self.path):
                raise ControlError(f"another ggdefender local is already running with root {self.path.parent}")
            self.path.unlink()
        with short_socket_path(self.path) as bind_path:
            old = os.umask(0o177)
            try:
                self._server = await asyncio.start_unix_server(self._handle, path=bind_path, limit=MAX_LINE)
            finally:
                os.umask(old)
        os.chmod(self.path, 0o600)

    async def stop(self) -> None:
        if self._server is None:
            return  # never started (e.g. another core owns this root): its socket is not ours to remove
        self._server.close()
        await self._server.wait_closed()
        self._server = None
        with contextlib.suppress(OSError):
            self.path.unlink()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    line = await reader.readline()
                except (asyncio.LimitOverrunError, ValueError):
                    await self._reply(writer, {"ok": False, "error": f"request longer than {MAX_LINE} bytes"})
                    return
                if not line:
                    return
                await self._reply(writer, await self._dispatch(line))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _dispatch(self, line: bytes) -> dict:
        try:
            request = json.loads(line)
        except ValueError as exc:
            return {"ok": False, "error": f"request is not JSON: {exc}"}
        if not isinstance(request, dict) or not isinstance(request.get("command"), str):
            return {"ok": False, "error": "request must be an object with a string 'command'"}
        args = request.get("args") or {}
        if not isinstance(args, dict):
            return {"ok": False, "error": "'args' must be an object"}
        handler = self.commands.get(request["command"])
        if handler is None:
            return {"ok": False, "error": f"unknown command {request['command']!r}; available: "
                                          f"{', '.join(sorted(self.commands))}"}
        loop = asyncio.get_running_loop()
        try:
            result = await asyncio.wait_for(loop.run_in_executor(None, handler, args), COMMAND_TIMEOUT)
        except asyncio.TimeoutError:
            return {"ok": False, "error": f"{request['command']} did not finish within {COMMAND_TIMEOUT:g} s"}
        except (ValueError, KeyError, TypeError) as exc:
            return {"ok": False, "error": str(exc) if not isinstance(exc, KeyError) else f"not found: {exc}"}
        except Exception as exc:
            log.exception("control command %s failed", request["command"])
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        return {"ok": True, "result": result}

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, response: dict) -> None:
        data = json.dumps(response, default=str).encode()
        if len(data) > MAX_LINE:
            data = json.dumps({"ok": False, "error": f"response larger than {MAX_LINE} bytes"}).encode()
        writer.write(data + b"\n")
        await writer.drain()


def _alive(path: Path) -> bool:
    try:
        with short_socket_path(path) as p, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            s.connect(p)
            return True
    except OSError:
        return False


def control_request(root: Path | str, command: str, args: Optional[dict] = None, *, timeout: float = 70.0) -> dict:
    """Send one command to the core running with this root; returns its result or raises ControlError."""
    path = Path(root).resolve() / SOCKET_NAME
    if not path.exists():
        raise ControlError(f"no running ggdefender local with root {Path(root)} (no {SOCKET_NAME}); "
                           f"start one with `ggdefender local run --root {root} ...`")
    request = json.dumps({"command": command, "args": args or {}}).encode() + b"\n"
    if len(request) > MAX_LINE:
        raise ControlError(f"request larger than {MAX_LINE} bytes")
    with short_socket_path(path) as p, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(p)
            s.sendall(request)
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
                if len(buf) > MAX_LINE + 1:
                    raise ControlError("response too large")
        except (ConnectionRefusedError, FileNotFoundError):
            raise ControlError(f"ggdefender local with root {Path(root)} is not running (stale {SOCKET_NAME})") from None
        except socket.timeout:
            raise ControlError(f"no answer to {command!r} within {timeout:g} s") from None
    try:
        response = json.loads(buf)
    except ValueError:
        raise ControlError(f"unreadable answer to {command!r}") from None
    if not response.get("ok"):
        raise ControlError(response.get("error") or "request failed")
    return response.get("result")
