"""One running offline core: Core + IpcServer + cloud services + bridge + control channel + lifecycle runner.

`Runtime` is assembled and driven on one asyncio loop. `local run` runs it in the foreground (`cli.py`);
the test harness runs it on a background thread (`harness.py`). The root folder is laid out like a
Greengrass root: `ipc.socket`, `control.sock`, `packages/`, `work/<Name>/`, `logs/<Name>.log`, `cloud/`.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import math
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Optional

from ggdefender import topics

from .config_updates import validate_update_config
from .recipe_variables import interpolate_configuration
from ..cloud.services import close_services, service_commands, start_services
from ..ui.control import ControlServer, short_socket_path
from .core import Core, thing_name_problem
from .lifecycle import LifecycleManager, reap_orphans
from .server import IpcServer
from ..ui.view import View

if TYPE_CHECKING:
    from ..cloud.bridge import Bridge

log = logging.getLogger("ggdefender.local.nucleus.runtime")

DEFAULT_THING = "ggdefender-local"
IPC_SOCKET = "ipc.socket"
REGION_RE = re.compile(r"[a-z]{2}(?:-[a-z]+)+-[0-9]{1,2}")
MAX_CONFIG_WAIT = 50.0  # seconds `config-update` may wait for verdicts (inside the control command timeout)


def check_settings(thing: str, region: str, grace_seconds: float) -> None:
    """ValueError naming the bad setting: thing name, region, or shutdown grace period."""
    problem = thing_name_problem(thing)  # it is substituted into policies: "a/#" would widen them
    if problem:
        raise ValueError(problem)
    if not isinstance(region, str) or not REGION_RE.fullmatch(region):
        raise ValueError(f"region {region!r} is not an AWS region name such as us-east-1")
    if not isinstance(grace_seconds, (int, float)) or not math.isfinite(grace_seconds) or grace_seconds < 0:
        raise ValueError(f"grace period {grace_seconds!r} must be a number of seconds >= 0")


class Runtime:
    def __init__(self, root: Path | str, *, thing: str = DEFAULT_THING, region: str = "us-east-1",
                 view: Optional[View] = None, interpolate_config: bool = True, broker: Optional[str] = None,
                 services: Optional[Iterable] = None, grace_seconds: float = 5.0, retry_delay: float = 1.0,
                 control: bool = True):
        check_settings(thing, region, grace_seconds)
        self.root = Path(root).resolve()
        self.view = view or View()
        self.core = Core(thing_name=thing, region=region)
        self.socket_path = str(self.root / IPC_SOCKET)
        self.interpolate_config = interpolate_config
        self.broker_url = broker
        self.service_declarations = None if services is None else tuple(services)  # None: every declared one
        self.control_enabled = control
        self.lifecycle = LifecycleManager(self.core, self.root, socket_path=self.socket_path, view=self.view,
                                          interpolate_config=interpolate_config, grace_seconds=grace_seconds,
                                          retry_delay=retry_delay)
        self.services: list = []
        self.server: Optional[IpcServer] = None
        self.control: Optional[ControlServer] = None
        self.bridge: Optional[Bridge] = None
        self._alias = contextlib.ExitStack()  # holds the short alias of a long socket path while the server runs
        self._health_unsub: Optional[Callable[[], None]] = None

    # -- start / stop -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start everything; on failure whatever was started is stopped again before the error propagates."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for sub in ("work", "logs", "packages", "cloud"):
            (self.root / sub).mkdir(exist_ok=True)
        self.core.on_event = self.view.core_event
        self.core.on_restart_request = self.lifecycle.request_restart
        self.core.on_state_change = self.lifecycle.on_state_change
        # like the nucleus: a socket path over sun_path's limit is reached through a short alias while we serve;
        # components get the relative ../../ipc.socket
        bind_path = self._alias.enter_context(short_socket_path(self.socket_path))
        if self.control_enabled:
            # first, so a second `local run` on the same root stops here instead of taking over its socket
            self.control = ControlServer(self.root, {"status": self._cmd_status,
                                                     "config-update": self._cmd_config_update})
            await self.control.start()
            # this root is ours now: end what a core that died on it left running, as systemd would
            for what in await asyncio.get_running_loop().run_in_executor(
                    None, reap_orphans, self.root, self.lifecycle.grace_seconds):
                log.warning("ended %s, left running by a previous core on %s", what, self.root)
                self.view.note(what.split()[0], f"ended {what}, left running by a previous core", level="warning")
        self.server = IpcServer(self.core, bind_path)
        await self.server.start()
        self.services = start_services(self.core, self.root, self.view, self.service_declarations)
        # components' health documents, keyed by the publisher the core authenticated (not by the payload)
        self._health_unsub = self.core.subscribe_iot(
            topics.health(self.core.thing_name), lambda topic, payload, source: self.view.health_document(source, payload))
        if self.broker_url:
            from ..cloud.bridge import Bridge

            self.bridge = bridge = Bridge(self.core, self.broker_url, view=self.view)
            await asyncio.get_running_loop().run_in_executor(None, bridge.start)
        if self.control is not None:
            offered = service_commands(self.services)
            clash = set(offered) & set(self.control.commands)
            if clash:
                raise ValueError(f"cloud services offer control commands that already exist: {sorted(clash)}")
            self.control.commands.update(offered)
        if self.interpolate_config:
            self.view.note("core", "interpolateComponentConfiguration is ON: recipe variables such as "
                                   "{iot:thingName} are substituted in component configuration (a default nucleus "
                                   "does not; use --no-interpolate-config to behave like one)")
        self.view.note("core", f"thing {self.core.thing_name}, IPC socket {self.socket_path}")

    async def deploy(self, recipe_dir: Path | str, artifact_dir: Optional[Path | str], merges: dict,
                     update_config: Optional[dict] = None) -> list:
        return await self.lifecycle.deploy(recipe_dir, artifact_dir, merges, update_config)

    async def stop(self) -> None:
        """Stop components (dependants first), then the control channel, bridge, services and server.
        Safe to call more than once."""
        await self.lifecycle.stop_all()
        control, self.control = self.control, None
        if control is not None:
            await control.stop()
        bridge, self.bridge = self.bridge, None
        if bridge is not None:
            await asyncio.get_running_loop().run_in_executor(None, bridge.stop)
        services, self.services = self.services, []
        close_services(services)
        unsub, self._health_unsub = self._health_unsub, None
        if unsub is not None:
            unsub()
        server, self.server = self.server, None
        if server is not None:
            await server.stop()
        self._alias.close()

    # -- control commands (run in a worker thread) --------------------------------------------------------
    def _cmd_status(self, args: dict) -> dict:
        components = {}
        for name, rec in self.core.components().items():
            dep = self.lifecycle.deployed.get(name)
            components[name] = {"version": rec.version, "state": rec.state,
                                "reason": dep.reason if dep else "", "errors": dep.errors if dep else 0}
        return {"thing": self.core.thing_name, "root": str(self.root), "components": components,
                "totals": self.view.counts(), "broker": self.broker_url or None,
                "health": self.view.health.documents()}

    def _cmd_config_update(self, args: dict) -> dict:
        updates = validate_update_config(args.get("update"))
        if "wait" not in args:
            return self.update_config(updates)
        wait = args["wait"]
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait <= MAX_CONFIG_WAIT:
            raise ValueError(f"'wait' must be a number of seconds from 0 to {MAX_CONFIG_WAIT:g}")
        before = {name: copy.deepcopy(self.core.get_config(name)) for name in updates if name in self.core.components()}
        since = time.time()
        configuration = self.update_config(updates)
        return {"configuration": configuration, "before": before,
                "verdicts": self.wait_verdicts(before, configuration, since, wait)}

    def wait_verdicts(self, before: dict, after: dict, since: float, wait: float) -> dict:
        """Per component: the top-level sections the update changed and, for a component that publishes a health
        document, its verdict on each (None: none within `wait` seconds)."""
        deadline = time.monotonic() + wait
        out = {}
        for name, config in after.items():
            given = before.get(name)
            old = given if isinstance(given, dict) else {}
            new = config if isinstance(config, dict) else {}
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            judged = self.view.health.sections(name)  # the sections this component gives verdicts on
            entry: dict = {"changed": changed, "health": self.view.health.has(name),
                           "notJudged": [k for k in changed if k not in judged]}
            sections = [k for k in changed if k in judged]
            if sections and wait > 0:
                entry["verdicts"] = self.view.health.wait_verdicts(name, sections, since,
                                                                   max(0.0, deadline - time.monotonic()))
            out[name] = entry
        return out

    def update_config(self, updates: dict) -> dict:
        """Apply greengrass-cli style {Component: {MERGE, RESET}} to running components (RESET first)."""
        known = self.core.components()
        for name in updates:
            if name not in known:
                raise ValueError(f"component {name} is not deployed on this core")
        for name, update in updates.items():
            dep = self.lifecycle.deployed.get(name)
            defaults = dep.recipe.default_configuration if dep else {}
            for pointer in update.get("RESET", []):
                self.core.reset_config(name, pointer, defaults)
            merge = update.get("MERGE") or {}
            if merge:
                if self.interpolate_config and dep is not None:
                    merge = interpolate_configuration(merge, self.lifecycle.variable_context(name))
                self.core.merge_config(name, [], merge)
        return {name: self.core.get_config(name) for name in updates}
