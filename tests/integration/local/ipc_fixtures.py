"""Start a `Core` + `IpcServer` on a background asyncio thread, and run awsiotsdk clients in child processes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from typing import Optional

from ggdefender.local.nucleus.core import Core
from ggdefender.local.nucleus.server import IpcServer


class RunningCore:
    """A Core served over a real Unix socket from a daemon thread's event loop."""

    def __init__(self, thing_name: str = "test-thing", *, max_frame_bytes: Optional[int] = None, **server_options):
        self.core = Core(thing_name=thing_name)
        self._dir = tempfile.TemporaryDirectory(prefix="ggd-ipc-")
        self.socket_path = os.path.join(self._dir.name, "ipc.socket")
        kwargs = dict(server_options)
        if max_frame_bytes is not None:
            kwargs["max_frame_bytes"] = max_frame_bytes
        self.server = IpcServer(self.core, self.socket_path, **kwargs)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="ipc-server", daemon=True)

    def __enter__(self) -> "RunningCore":
        self._thread.start()
        self.call(self.server.start())
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.call(self.server.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()
            self._dir.cleanup()

    def call(self, coro, timeout: float = 30):
        """Run a coroutine on the server loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def on_loop(self, fn, *args, timeout: float = 30):
        """Run fn on the server loop (after everything queued before) and return its result."""
        async def run():
            return fn(*args)
        return self.call(run(), timeout)

    def wait_until(self, predicate, timeout: float = 20) -> bool:
        """Poll predicate on the server loop until it is true (a wait with a generous bound, not a timing test)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.on_loop(predicate):
                return True
            time.sleep(0.02)
        return False

    def wait_disconnected(self, timeout: float = 20) -> bool:
        """Wait until every client connection has been closed and cleaned up."""
        return self.wait_until(lambda: not self.server.connections, timeout)

    def register(self, name: str, configuration: Optional[dict] = None, version: str = "1.0.0") -> dict:
        """Register a component; returns the environment its process would get from a nucleus."""
        token = self.core.register_component(name, version, configuration or {})
        return self.env(token)

    def env(self, token: str) -> dict:
        env = dict(os.environ)
        env.update({
            "SVCUID": token,
            "AWS_CONTAINER_AUTHORIZATION_TOKEN": token,
            "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH": self.socket_path,
            "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT": self.socket_path,
            "AWS_IOT_THING_NAME": self.core.thing_name,
            "AWS_REGION": self.core.region,
        })
        return env


def run_client(script: str, env: dict, *args: str, timeout: float = 60) -> dict:
    """Run a client script (Python source) in a child process; it prints one JSON object as its last line."""
    proc = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"client failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if not lines:
        raise AssertionError(f"client printed nothing:\n{proc.stderr}")
    return json.loads(lines[-1])


def start_client(script: str, env: dict, *args: str) -> subprocess.Popen:
    """Start a client script that keeps running (e.g. a subscriber); read its stdout line by line."""
    return subprocess.Popen([sys.executable, "-u", "-c", script, *args], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
