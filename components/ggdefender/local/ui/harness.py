"""An in-process `ggdefender local` core for tests (ours and other engineers').

`LocalCore` runs the full runtime (Core, the real IPC server on a Unix socket, the cloud services, the lifecycle
runner, the control channel, optionally the mosquitto bridge) on an asyncio loop in a background thread, so a
test drives it with plain blocking calls while real child processes talk to it with the unmodified awsiotsdk
client::

    from ggdefender.local.ui.harness import LocalCore

    with LocalCore(root=tmp_path, thing="testThing") as core:
        # a bare principal: its SVCUID and socket in an env for a child process you start yourself
        env = core.add_component("test.Client", configuration={"accessControl": {...}})
        proc = core.spawn("test.Client", [sys.executable, "client.py"])      # killed at teardown
        # or a real deployment, exactly like `ggdefender local run`
        core.deploy(recipe_dir, artifact_dir, {"ggdefender.Defender": "1.0.0"},
                    update_config={"ggdefender.Defender": {"MERGE": {"Collector": {...}}}})
        core.wait_for_state("ggdefender.Defender", "RUNNING", timeout=60)
        cap = core.capture_iot("$aws/things/+/defender/metrics/#")           # fills with (topic, payload)
        cap.wait_for(lambda msgs: len(msgs) >= 2, timeout=30)
        core.publish_iot("$aws/things/testThing/jobs/notify", b"{}")          # cloud -> device
        core.service("DefenderService").accepted                              # what the offline cloud accepted
        core.update_config("ggdefender.Defender", {"MERGE": {"Collector": {"SampleIntervalSeconds": 5}}})
        core.log_text("ggdefender.Defender")                                  # <root>/logs/<Name>.log

Teardown (leaving the `with` block, also when the test fails) stops every component (Shutdown step, SIGTERM,
SIGKILL after `grace_seconds`), kills processes started with `spawn`, closes the services, the server and the
loop thread. `wait_for*` raise `TimeoutError` with what was seen, so a failing test says why.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from ..nucleus.config_updates import validate_update_config
from ..nucleus.recipe import parse_merge
from ..nucleus.recipe_variables import VariableContext, interpolate_configuration
from .control import control_request
from ..nucleus.lifecycle import component_env
from ..nucleus.runtime import Runtime
from .view import View


class Capture(list):
    """A list of (topic, payload[, source]) that fills as messages arrive; wait_for() blocks on a predicate."""

    def __init__(self, description: str):
        super().__init__()
        self.description = description
        self._cond = threading.Condition()
        self.unsubscribe: Callable[[], None] = lambda: None

    def _add(self, item: tuple) -> None:
        with self._cond:
            self.append(item)
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[list], bool], timeout: float = 30.0) -> "Capture":
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(list(self)):
                left = deadline - time.monotonic()
                if left <= 0:
                    shown = [(t, p[:200] if isinstance(p, bytes) else p) for t, p, *_ in list(self)[-5:]]
                    raise TimeoutError(f"{self.description}: condition not met within {timeout:g} s; "
                                       f"{len(self)} message(s), last: {shown}")
                self._cond.wait(min(left, 0.5))
        return self

    def close(self) -> None:
        self.unsubscribe()


class LocalCore:
    def __init__(self, root: Path | str, thing: str = "testThing", *, region: str = "us-east-1",
                 interpolate_config: bool = True, broker: Optional[str] = None,
                 services: Optional[Iterable] = None, grace_seconds: float = 3.0, retry_delay: float = 0.2,
                 view_out: Any = None, control: bool = True):
        self.root = Path(root).resolve()
        self.view = View(view_out)
        self.runtime = Runtime(self.root, thing=thing, region=region, view=self.view,
                               interpolate_config=interpolate_config, broker=broker, services=services,
                               grace_seconds=grace_seconds, retry_delay=retry_delay, control=control)
        self.core = self.runtime.core
        self.thing = thing
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._children: list = []
        self._captures: list = []
        self._started = False

    # -- loop thread --------------------------------------------------------------------------------
    def start(self) -> "LocalCore":
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="ggdefender-local", daemon=True)
        self._thread.start()
        ready.wait()
        try:
            self._run(self.runtime.start(), 30)
        except BaseException:
            self.close()
            raise
        self._started = True
        return self

    def _run(self, coro: Any, timeout: Optional[float]) -> Any:
        assert self._loop is not None, "the core is not running (use the harness as a context manager)"
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def close(self) -> None:
        for cap in self._captures:
            cap.close()
        for proc in self._children:
            _kill_group(proc)
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            try:
                if self._started:
                    self._run(self.runtime.stop(), 60)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(30)
        self._started = False

    def __enter__(self) -> "LocalCore":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- components --------------------------------------------------------------------------------
    def add_component(self, name: str, configuration: Optional[dict] = None, version: str = "1.0.0") -> dict:
        """Register a bare principal (no lifecycle); returns the environment for a child process."""
        config = configuration or {}
        if self.runtime.interpolate_config:
            ctx = VariableContext(name=name, configuration=config, artifacts_path="", decompressed_path="",
                                  work_path=str(self.work_dir(name)), root_path=str(self.root),
                                  thing_name=self.thing)
            config = interpolate_configuration(config, ctx)
        token = self.core.register_component(name, version, config)
        self.core.set_state(name, "RUNNING")
        self.work_dir(name).mkdir(parents=True, exist_ok=True)
        return component_env(dict(os.environ), svcuid=token, socket_path=self.runtime.socket_path,
                             thing_name=self.thing, region=self.core.region)

    def work_dir(self, name: str) -> Path:
        return self.root / "work" / name

    def spawn(self, name: str, argv: list, *, env: Optional[dict] = None, **popen: Any) -> subprocess.Popen:
        """Start a child as component `name` (registered with add_component first if needed); output goes to
        <root>/logs/<name>.log; it is killed at teardown."""
        if env is None:
            env = self.add_component(name) if name not in self.core.components() else None
            if env is None:
                raise ValueError(f"{name} is already registered: pass the env add_component returned")
        log_path = self.root / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        popen.setdefault("cwd", str(self.work_dir(name)))
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, **popen)
        self._children.append(proc)
        return proc

    def deploy(self, recipe_dir: Path | str, artifact_dir: Optional[Path | str], merges: Any, *,
               update_config: Optional[dict] = None, timeout: float = 120.0) -> list:
        """Deploy like `local run --merge`: merges is {name: version} or ["name=version", ...]."""
        if not isinstance(merges, dict):
            merges = dict(parse_merge(m) for m in merges)
        if update_config is not None:
            update_config = validate_update_config(update_config)
        return self._run(self.runtime.deploy(recipe_dir, artifact_dir, merges, update_config), timeout)

    def state(self, name: str) -> str:
        return self.core.component(name).state

    def wait_for_state(self, name: str, states: Any, timeout: float = 60.0) -> str:
        wanted = {states} if isinstance(states, str) else set(states)
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            try:
                state = self.state(name)
            except KeyError:
                state = None
            if state in wanted:
                return state
            time.sleep(0.05)
        tail = self.log_text(name)[-2000:]
        raise TimeoutError(f"{name} did not reach {sorted(wanted)} within {timeout:g} s (state {state}); "
                           f"log tail:\n{tail}")

    def restart(self, name: str) -> None:
        self._run(self.runtime.lifecycle.restart(name), 120)

    def stop_component(self, name: str) -> None:
        self._run(self.runtime.lifecycle.stop(name), 120)

    def update_config(self, name: str, update: dict) -> dict:
        """greengrass-cli style {"MERGE": {...}, "RESET": [...]} on a running component; returns its config."""
        updates = validate_update_config({name: update})
        return self.runtime.update_config(updates)[name]

    def get_config(self, name: str, key_path: Iterable[str] = ()) -> Any:
        return self.core.get_config(name, list(key_path))

    # -- messages --------------------------------------------------------------------------------------
    def capture_iot(self, topic_filter: str) -> Capture:
        cap = Capture(f"IoT Core {topic_filter}")
        cap.unsubscribe = self.core.subscribe_iot(topic_filter, lambda t, p, s: cap._add((t, p, s)))
        self._captures.append(cap)
        return cap

    def capture_local(self, topic: str) -> Capture:
        cap = Capture(f"local {topic}")
        cap.unsubscribe = self.core.subscribe_local("", topic, lambda t, m, s: cap._add((t, m, s)))
        self._captures.append(cap)
        return cap

    def publish_iot(self, topic: str, payload: bytes | str, *, source: str = "cloud") -> None:
        self.core.publish_iot(topic, payload.encode() if isinstance(payload, str) else payload, source=source)

    def publish_local(self, topic: str, message: dict | bytes, *, source: str = "local-core") -> None:
        self.core.publish_local(topic, message, source=source)

    def service(self, class_name: str) -> Any:
        for service in self.runtime.services:
            if type(service).__name__ == class_name:
                return service
        raise KeyError(f"no cloud service {class_name} (running: "
                       f"{', '.join(type(s).__name__ for s in self.runtime.services) or 'none'})")

    def control(self, command: str, args: Optional[dict] = None) -> Any:
        return control_request(self.root, command, args)

    # -- logs and events -----------------------------------------------------------------------------
    def log_path(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def log_text(self, name: str) -> str:
        path = self.log_path(name)
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def wait_for_log(self, name: str, *texts: str, timeout: float = 30.0) -> str:
        """The component's log once it holds every one of texts: its output reaches the file through the
        core's reader thread, a moment after the component's IPC messages."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            content = self.log_text(name)
            if all(text in content for text in texts):
                return content
            time.sleep(0.05)
        missing = [text for text in texts if text not in self.log_text(name)]
        raise TimeoutError(f"{missing!r} not in {self.log_path(name)} within {timeout:g} s; tail:\n"
                           f"{self.log_text(name)[-2000:]}")

    def events(self, kind: Optional[str] = None) -> list:
        return [e for e in list(self.view.events) if kind is None or e.get("kind") == kind]


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
