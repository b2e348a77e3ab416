"""Runs components like the nucleus does: artifacts, work folders, Install/Run/Startup/Shutdown, restarts.

The driver: it spawns the steps, waits, times out and feeds what happened to each component's pure state
machine (lifecycle_states.py), which decides the states and what to do next.

Everything here runs on the runtime's asyncio loop (`LifecycleManager` methods are coroutines, except
`request_restart`, which any thread may call). Scripts run with `sh -c` exactly like the nucleus; they are
the recipe author's scripts, never remote input. Output goes straight to `<root>/logs/<Name>.log`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import signal
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from . import recipe as rcp
from . import lifecycle_states as ls
from .lifecycle_states import ComponentLifecycle
from .config_updates import apply_update
from .dependency_order import dependency_order
from .recipe import Recipe, Step
from .recipe_error import RecipeError
from .recipe_variables import VariableContext, interpolate, interpolate_configuration
from .semver import satisfies
from .server import SUN_PATH_MAX

log = logging.getLogger("ggdefender.local.nucleus.lifecycle")

NUCLEUS_VERSION = "2.13.0"  # what GGC_VERSION says; the IPC shapes we serve match current nuclei
MAX_UNZIP_BYTES = 2 * 1024 ** 3
MAX_LOG_BYTES = 10 * 1024 ** 2  # a bigger log is rotated to <Name>.log.1 when the component is deployed
MAX_UNZIP_ENTRIES = 100_000
PROCESS_RECORDS = "processes"  # <root>/processes/<pid>: "<start time> <component> <step>" of each live step
# the core's own components: a dependency on them is satisfied by `ggdefender local` itself
PROVIDED_BY_CORE = ("aws.greengrass.Nucleus", "aws.greengrass.TokenExchangeService", "aws.greengrass.Cli")
# variables a real core sets; stale ones from the caller's shell must not leak into components
CORE_ENV = ("SVCUID", "AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH",
            "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT", "AWS_IOT_THING_NAME", "AWS_REGION",
            "AWS_DEFAULT_REGION", "GGC_VERSION", "GGDEFENDER_STATE_DIR")


def socket_path_for_component(socket_path: str) -> str:
    """The nucleus hands out ../../ipc.socket (relative to <root>/work/<Name>) when sun_path would overflow.

    Counted in bytes, like sun_path and like the runtime's choice to bind through a short alias: a root with
    non-ASCII characters can be under 108 characters and still too long."""
    return "../../ipc.socket" if len(socket_path.encode()) >= SUN_PATH_MAX else socket_path


def component_env(base: dict, *, svcuid: str, socket_path: str, thing_name: str, region: str,
                  setenv: Optional[dict] = None) -> dict:
    """The environment a real core gives a component's lifecycle scripts."""
    env = {k: v for k, v in base.items() if k not in CORE_ENV}
    env.update({
        "SVCUID": svcuid,
        "AWS_CONTAINER_AUTHORIZATION_TOKEN": svcuid,
        "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH": socket_path,
        "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT": socket_path_for_component(socket_path),
        "AWS_IOT_THING_NAME": thing_name,
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "GGC_VERSION": NUCLEUS_VERSION,
    })
    env.setdefault("PATH", os.defpath)
    env.update(setenv or {})
    return env


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    """Any live (non-zombie) process left in the process group."""
    proc_dir = Path("/proc")
    if not proc_dir.is_dir():
        try:
            os.killpg(pgid, 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False
    for entry in proc_dir.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat_line = (entry / "stat").read_text()
        except OSError:
            continue
        # fields after the parenthesised command: state ppid pgrp ...
        fields = stat_line[stat_line.rfind(")") + 2:].split()
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def _start_time(pid: int) -> Optional[str]:
    """The process's start time (clock ticks since boot, /proc/<pid>/stat field 22): with the pid, it names one
    process for good, since a reused pid has another start time."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def reap_orphans(root: Path, grace: float) -> list:
    """End the step process groups that a core on `root` started and left running when it died (kill -9),
    as systemd ends a dead nucleus's control group; returns "component step (process group N)" for each.

    Only a group whose leader is still the very process that core started (same pid and start time) is
    signalled: SIGTERM, SIGKILL after grace seconds. Call it only once this core owns the root (its control
    socket bound), so the groups of a live core are never touched."""
    folder = Path(root) / PROCESS_RECORDS
    if not folder.is_dir():
        return []
    groups, reaped = [], []
    for record in folder.iterdir():
        try:
            start, name, step = record.read_text(encoding="utf-8").split()[:3]
            pid = int(record.name)
        except (OSError, ValueError):
            pid, start = None, None
        if pid and start == _start_time(pid):
            try:
                leads = os.getpgid(pid) == pid
            except OSError:
                leads = False
            if leads:
                _signal_group(pid, signal.SIGTERM)
                groups.append(pid)
                reaped.append(f"{name} {step} (process group {pid})")
        with contextlib.suppress(OSError):
            record.unlink()
    deadline = time.monotonic() + max(grace, 0)
    while groups and time.monotonic() < deadline and any(_group_alive(g) for g in groups):
        time.sleep(0.1)
    for pgid in groups:
        if _group_alive(pgid):
            _signal_group(pgid, signal.SIGKILL)
    for what in reaped:  # in the component's own log too, where its earlier lines are
        with contextlib.suppress(OSError):
            with open(Path(root) / "logs" / f"{what.split()[0]}.log", "a", encoding="utf-8") as fh:
                fh.write(f"{_stamp()} [ggdefender-local] {what.split()[0]}: ended {what.split(' ', 1)[1]}, "
                         f"left running by a previous core\n")
    return reaped


def _record_process(root: Path, pid: int, component: str, step: str) -> Optional[Path]:
    start = _start_time(pid)
    if start is None:
        return None
    path = Path(root) / PROCESS_RECORDS / str(pid)
    try:
        path.parent.mkdir(mode=0o700, exist_ok=True)
        path.write_text(f"{start} {component} {step}\n", encoding="utf-8")
    except OSError as exc:
        log.warning("cannot record process %d of %s: %s", pid, component, exc)
        return None
    return path


def _stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"


class StepFailed(Exception):
    """A lifecycle step failed; the message is the reason shown in the view and the log."""


# -- artifacts --------------------------------------------------------------------------------------

def _artifact_mode(permission: dict) -> int:
    mode = {"NONE": 0, "OWNER": 0o400, "ALL": 0o444}[permission.get("Read", "OWNER")]
    execute = permission.get("Execute", "NONE")
    if execute == "OWNER":
        mode |= 0o500
    elif execute == "ALL":
        mode |= 0o555
    return mode or 0o400  # we are the owner; keep it readable for ourselves


def _safe_unzip(archive: Path, target: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        if len(infos) > MAX_UNZIP_ENTRIES:
            raise StepFailed(f"{archive.name}: more than {MAX_UNZIP_ENTRIES} entries")
        if sum(i.file_size for i in infos) > MAX_UNZIP_BYTES:
            raise StepFailed(f"{archive.name}: unpacks to more than {MAX_UNZIP_BYTES} bytes")
        root = target.resolve()
        for info in infos:
            dest = (target / info.filename).resolve()
            if dest != root and root not in dest.parents:
                raise StepFailed(f"{archive.name}: entry {info.filename!r} points outside the archive folder")
        zf.extractall(target)
        for info in infos:
            unix_mode = (info.external_attr >> 16) & 0o777
            path = target / info.filename
            if path.is_file() and not path.is_symlink():
                # unpacked archives get read for all, execute where the archive says so
                os.chmod(path, 0o755 if unix_mode & 0o111 else 0o644)
    for dirpath, _dirs, _files in os.walk(target):
        os.chmod(dirpath, 0o755)


def install_artifacts(recipe: Recipe, artifact_dir: Optional[Path], root: Path) -> tuple:
    """Copy the component's artifacts into the package store and unpack ZIPs; returns (path, decompressedPath)."""
    store = root / "packages" / "artifacts" / recipe.name / recipe.version
    unarchived = root / "packages" / "artifacts-unarchived" / recipe.name / recipe.version
    store.mkdir(parents=True, exist_ok=True)
    unarchived.mkdir(parents=True, exist_ok=True)
    source = Path(artifact_dir) / recipe.name / recipe.version if artifact_dir else None
    if source is not None and source.is_dir():
        # greengrass-cli copies every file of <artifactDir>/<Name>/<Version> into the package store
        for path in sorted(source.rglob("*")):
            rel = path.relative_to(source)
            dest = store / rel
            if path.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.exists() or dest.is_symlink():
                dest.chmod(0o600)
                dest.unlink()
            shutil.copyfile(path, dest)
    for art in recipe.artifacts:
        path = store / art["filename"]
        if not path.is_file():
            where = f"{source}" if source is not None else "(no --artifactDir given)"
            raise RecipeError(f"{recipe.name}={recipe.version}: artifact {art['filename']} (URI {art['URI']}) "
                              f"not found in {where} nor in {store}")
        if art["Unarchive"] == "ZIP":
            target = unarchived / Path(art["filename"]).stem
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            stamp_file = unarchived / f".{Path(art['filename']).stem}.sha256"
            if not target.is_dir() or not stamp_file.is_file() or stamp_file.read_text() != digest:
                if target.exists():
                    shutil.rmtree(target)
                target.mkdir(parents=True)
                try:
                    _safe_unzip(path, target)
                except (zipfile.BadZipFile, StepFailed) as exc:
                    shutil.rmtree(target, ignore_errors=True)
                    raise RecipeError(f"{recipe.name}: cannot unarchive {art['filename']}: {exc}") from None
                stamp_file.write_text(digest)
        os.chmod(path, _artifact_mode(art["Permission"]))
    return store, unarchived


# -- one component ------------------------------------------------------------------------------------

@dataclass
class Deployed:
    """A component placed by a deployment: its recipe, folders and computed configuration."""

    recipe: Recipe
    configuration: dict
    artifacts_path: Path
    decompressed_path: Path
    work_path: Path
    log_path: Path
    machine: ComponentLifecycle
    svcuid: str = ""
    process: Optional[Any] = None  # asyncio.subprocess.Process of Run/Startup
    monitor: Optional[asyncio.Task] = None
    step_process: Optional[Any] = None  # the Install/Shutdown/Recover/Startup process in flight
    reason: str = ""
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def name(self) -> str:
        return self.recipe.name

    @property
    def errors(self) -> int:
        """Errors since the last (re)start, as the view and `ggdefender local` list show them."""
        return self.machine.errors


class LifecycleManager:
    """Deploys and runs components against a `Core` on the current asyncio loop."""

    def __init__(self, core: Any, root: Path | str, *, socket_path: str, view: Any = None, interpolate_config: bool = True,
                 grace_seconds: float = 5.0, retry_delay: float = 1.0, base_env: Optional[dict] = None):
        self.core = core
        self.root = Path(root).resolve()
        self.socket_path = socket_path
        self.view = view
        self.interpolate_config = interpolate_config
        self.grace_seconds = grace_seconds
        self.retry_delay = retry_delay
        self.base_env = dict(os.environ if base_env is None else base_env)
        self.deployed: dict[str, Deployed] = {}
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._tasks: set = set()
        self._closed = False
        self._own_change: Optional[str] = None  # the component whose state we are setting right now

    # -- reporting --------------------------------------------------------------------------------
    def _note(self, component: str, text: str, level: str = "info") -> None:
        if self.view is not None:
            self.view.note(component, text, level=level)
        dep = self.deployed.get(component)
        if dep is not None:
            self._log_line(dep, text)

    @staticmethod
    def _log_line(dep: Deployed, text: str) -> None:
        try:
            with open(dep.log_path, "a", encoding="utf-8") as fh:
                fh.write(f"{_stamp()} [ggdefender-local] {dep.name}: {text}\n")
        except OSError:
            pass

    def _set_state(self, dep: Deployed, state: str, reason: str = "") -> None:
        dep.reason = reason
        if reason:
            self._log_line(dep, f"state {state}: {reason}")
        else:
            self._log_line(dep, f"state {state}")
        if self.view is not None and reason:
            self.view.note(dep.name, f"{state}: {reason}", level="error" if state in ("ERRORED", "BROKEN") else "info")
        self._own_change = dep.name
        try:
            self.core.set_state(dep.name, state)
        finally:
            self._own_change = None
        if state in ("RUNNING", "FINISHED", "BROKEN") and dep.ready is not None:
            dep.ready.set()

    def state(self, name: str) -> str:
        return self.core.component(name).state

    # -- deployment ----------------------------------------------------------------------------------
    def plan(self, recipe_dir: Path | str, merges: dict, update_config: Optional[dict] = None) -> list:
        """Load the merged recipes and the dependencies found in recipe_dir, in start order."""
        recipes: dict[str, Recipe] = {}
        pending = list(merges.items())
        requirements: dict[str, list] = {}
        while pending:
            name, version = pending.pop(0)
            if name in recipes:
                continue
            rec = rcp.load_recipe(rcp.find_recipe(recipe_dir, name, version))
            recipes[name] = rec
            for dep, spec in rec.dependencies.items():
                requirements.setdefault(dep, []).append((name, spec["VersionRequirement"]))
                if dep in recipes or dep in merges or any(dep == p[0] for p in pending):
                    continue
                if dep in self.deployed:
                    continue
                if dep in PROVIDED_BY_CORE:
                    continue
                versions = [v for v in rcp.available_versions(recipe_dir, dep)
                            if satisfies(v, spec["VersionRequirement"])]
                if not versions:
                    if spec["DependencyType"] == "SOFT" or dep.startswith("aws.greengrass."):
                        if self.view is not None:
                            self.view.note(name, f"dependency {dep} is not available offline; starting without it",
                                           level="warning")
                        continue
                    raise RecipeError(f"{name}: dependency {dep} {spec['VersionRequirement']} has no recipe in "
                                      f"{recipe_dir}; add it with --merge or put its recipe there")
                pending.append((dep, versions[-1]))
        for dep, wanted in requirements.items():
            if dep in recipes:
                for owner, requirement in wanted:
                    if not satisfies(recipes[dep].version, requirement):
                        raise RecipeError(f"{owner} needs {dep} {requirement}, but {dep}={recipes[dep].version} "
                                          f"is being deployed")
        for name in update_config or {}:
            if name not in recipes and name not in self.deployed:
                raise RecipeError(f"--update-config names {name}, which is not part of this deployment")
        return dependency_order(recipes.values())

    def _context(self, rec: Recipe, configuration: dict, artifacts: Path, unarchived: Path,
                 work: Path) -> VariableContext:
        ctx = VariableContext(
            name=rec.name, configuration=configuration, artifacts_path=str(artifacts),
            decompressed_path=str(unarchived), work_path=str(work), root_path=str(self.root),
            thing_name=self.core.thing_name)
        for dep_name in rec.dependencies:
            dep = self.deployed.get(dep_name)
            if dep is not None:
                ctx.dependencies[dep_name] = VariableContext(
                    name=dep_name, configuration=self._current_config(dep), artifacts_path=str(dep.artifacts_path),
                    decompressed_path=str(dep.decompressed_path), work_path=str(dep.work_path),
                    root_path=str(self.root), thing_name=self.core.thing_name)
        return ctx

    def _current_config(self, dep: Deployed) -> dict:
        try:
            return self.core.get_config(dep.name)
        except KeyError:
            return dep.configuration

    async def deploy(self, recipe_dir: Path | str, artifact_dir: Optional[Path | str], merges: dict,
                     update_config: Optional[dict] = None, *, wait_ready: float = 0) -> list:
        """Place and start the merged components (and dependencies from recipe_dir), dependencies first."""
        self._loop = asyncio.get_running_loop()
        update_config = update_config or {}
        ordered = self.plan(recipe_dir, merges, update_config)
        # every artifact first (in a worker thread: a big ZIP must not stall the IPC server), so a missing
        # one fails the deployment before anything is registered or stopped
        source = Path(artifact_dir) if artifact_dir else None
        loop = asyncio.get_running_loop()
        stores = [await loop.run_in_executor(None, install_artifacts, rec, source, self.root) for rec in ordered]
        for name in [r.name for r in ordered if r.name in self.deployed]:
            await self.stop(name)  # a new version replaces the running one, as a deployment does
        placed = []
        for rec, (artifacts, unarchived) in zip(ordered, stores):
            work = self.root / "work" / rec.name
            work.mkdir(parents=True, exist_ok=True)
            (self.root / "logs").mkdir(parents=True, exist_ok=True)
            config = apply_update(rec.default_configuration, rec.default_configuration,
                                  update_config.get(rec.name))
            if self.interpolate_config:
                config = interpolate_configuration(
                    config, self._context(rec, config, artifacts, unarchived, work))
            log_path = self.root / "logs" / f"{rec.name}.log"
            if log_path.exists() and log_path.stat().st_size > MAX_LOG_BYTES:
                # one rotation per deployment keeps a chatty component from filling the disk across runs
                os.replace(log_path, log_path.with_name(log_path.name + ".1"))
            steps = frozenset(step for step in rec.lifecycle if step != "Setenv")
            dep = Deployed(recipe=rec, configuration=config, artifacts_path=artifacts, decompressed_path=unarchived,
                           work_path=work, log_path=log_path,
                           machine=ComponentLifecycle(steps, retry_delay=self.retry_delay, closed=self._closed),
                           ready=asyncio.Event(), lock=asyncio.Lock())
            self.deployed[rec.name] = dep
            dep.svcuid = self.core.register_component(rec.name, rec.version, config)
            self._log_line(dep, f"deployed {rec.name}={rec.version} from {rec.path}")
            placed.append(dep)
        for dep in placed:
            self._spawn(self._start_when_ready(dep))
        if wait_ready:
            await asyncio.wait_for(asyncio.gather(*(d.ready.wait() for d in placed)), wait_ready)
        return [d.name for d in placed]

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(self._report_crash)
        return task

    @staticmethod
    def _report_crash(task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("lifecycle task failed", exc_info=task.exception())

    async def _start_when_ready(self, dep: Deployed) -> None:
        for dep_name, spec in dep.recipe.dependencies.items():
            other = self.deployed.get(dep_name)
            if other is None or other is dep:
                continue
            await other.ready.wait()
            if self.state(dep_name) == "BROKEN":
                actions = dep.machine.dependency_broken(dep_name, hard=spec["DependencyType"] == "HARD")
                if actions:
                    await self._act(dep, actions)
                    return
        if dep.machine.halted:
            return  # shut down while waiting for a dependency
        await self.start(dep.name)

    # -- steps -------------------------------------------------------------------------------------------
    def _step_env(self, dep: Deployed, step: Optional[Step], ctx: VariableContext) -> dict:
        setenv = {k: interpolate(v, ctx) for k, v in dep.recipe.setenv.items()}
        if step is not None:
            setenv.update({k: interpolate(v, ctx) for k, v in step.setenv.items()})
        return component_env(self.base_env, svcuid=dep.svcuid, socket_path=self.socket_path,
                             thing_name=self.core.thing_name, region=self.core.region, setenv=setenv)

    def _ctx_now(self, dep: Deployed) -> VariableContext:
        return self._context(dep.recipe, self._current_config(dep), dep.artifacts_path, dep.decompressed_path,
                             dep.work_path)

    def variable_context(self, name: str) -> VariableContext:
        """Recipe variables of a deployed component as they resolve now."""
        return self._ctx_now(self.deployed[name])

    def _should_skip(self, step: Step, env: dict, ctx: VariableContext) -> bool:
        if step.skipif is None:
            return False
        kind, arg = step.skipif
        arg = interpolate(arg, ctx)
        if kind == "onpath":
            return shutil.which(arg, path=env.get("PATH")) is not None
        target = Path(arg)
        return (target if target.is_absolute() else Path(ctx.work_path) / target).exists()

    def _argv(self, dep: Deployed, step: Step, script: str) -> list:
        if step.requires_privilege and os.geteuid() != 0:
            # a nucleus that is not root runs privileged steps as its own user; so do we, and say so
            self._note(dep.name, f"{step.name} has RequiresPrivilege: true but ggdefender local is not root: "
                                 f"running it as the current user", level="warning")
        return ["sh", "-c", script]

    async def _spawn_step(self, dep: Deployed, step: Step) -> Optional[asyncio.subprocess.Process]:
        ctx = self._ctx_now(dep)
        env = self._step_env(dep, step, ctx)
        if self._should_skip(step, env, ctx):
            assert step.skipif is not None  # _should_skip is true only with one
            self._note(dep.name, f"{step.name}: skipped ({step.skipif[0]} {step.skipif[1]})")
            return None
        script = interpolate(step.script, ctx)
        lines = script.strip().splitlines() or [""]
        more = " ..." if len(lines) > 1 else ""
        self._log_line(dep, f"{step.name}: sh -c {lines[0][:200]!r}{more}")
        with open(dep.log_path, "ab", buffering=0) as out:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *self._argv(dep, step, script), cwd=str(dep.work_path), env=env, stdin=asyncio.subprocess.DEVNULL,
                    stdout=out, stderr=out, start_new_session=True)
            except OSError as exc:
                raise StepFailed(f"{step.name}: cannot start sh: {exc}") from None
        # kept while it runs: if this core dies, the next one on this root ends what it left (reap_orphans)
        record = _record_process(self.root, proc.pid, dep.name, step.name)
        if record is not None:
            self._spawn(self._forget_when_done(proc, record))
        return proc

    @staticmethod
    async def _forget_when_done(proc: asyncio.subprocess.Process, record: Path) -> None:
        await proc.wait()  # cancelled (core stopping): the record stays, and the next core finds nothing alive
        with contextlib.suppress(OSError):
            record.unlink()

    async def _run_to_end(self, dep: Deployed, step_name: str) -> None:
        """Run a step that must finish (Install, Shutdown, Recover); StepFailed on non-zero exit or timeout."""
        step = dep.recipe.step(step_name)
        if step is None:
            return
        proc = await self._spawn_step(dep, step)
        if proc is None:
            return
        if step_name != "Shutdown":
            dep.step_process = proc
        try:
            code = await asyncio.wait_for(proc.wait(), step.timeout) if step.timeout else await proc.wait()
        except asyncio.TimeoutError:
            await self._kill_group(proc, 0)
            raise StepFailed(ComponentLifecycle.step_timed_out(step_name, step.timeout or 0.0)) from None  # set: it timed out
        except asyncio.CancelledError:
            await self._kill_group(proc, 0)
            raise
        finally:
            if dep.step_process is proc:
                dep.step_process = None
        reason = ComponentLifecycle.step_exited(step_name, code)
        if reason is not None:
            raise StepFailed(reason)

    async def _kill_group(self, proc: Any, grace: float) -> None:
        """SIGTERM the step's process group, SIGKILL whatever is left of it after grace seconds.

        The group, not just the leader: `sh -c` may run the real program as its child, and that child must get
        its SIGTERM and its grace period even when sh itself dies at once."""
        pgid = proc.pid
        deadline = time.monotonic() + max(grace, 0)
        _signal_group(pgid, signal.SIGTERM if grace > 0 else signal.SIGKILL)
        while time.monotonic() < deadline:
            if proc.returncode is not None and not _group_alive(pgid):
                break
            try:
                await asyncio.wait_for(asyncio.shield(proc.wait()), 0.05)
            except asyncio.TimeoutError:
                pass
        if proc.returncode is None or _group_alive(pgid):
            _signal_group(pgid, signal.SIGKILL)
        await proc.wait()

    # -- start / stop / restart --------------------------------------------------------------------------
    async def _act(self, dep: Deployed, actions: list) -> bool:
        """Carry out the state machine's actions in order; True when they end in a retry that may go ahead."""
        for action in actions:
            if isinstance(action, ls.SetState):
                self._set_state(dep, action.state, action.reason)
            elif isinstance(action, ls.RunStep):
                try:
                    await self._run_to_end(dep, action.step)
                except StepFailed as exc:
                    if not action.warn:
                        raise
                    self._note(dep.name, f"{action.warn}: {exc}", level="warning")
            elif isinstance(action, ls.KillProcess):
                proc, dep.process = dep.process, None
                if proc is not None:
                    await self._kill_group(proc, self.grace_seconds)
                    if action.final:
                        self._log_line(dep, f"process exited with code {proc.returncode}")
                if action.final:
                    if dep.monitor is not None and not dep.monitor.done():
                        dep.monitor.cancel()
                    dep.monitor = None
            elif isinstance(action, ls.Fail):
                return await self._act(dep, dep.machine.failed(action.reason))
            elif isinstance(action, ls.Sleep):
                await asyncio.sleep(action.seconds)
            elif action == ls.RETRY:
                return dep.machine.may_retry()
            elif action == ls.HALT:
                return False
            else:
                raise TypeError(f"lifecycle action {action!r} has no driver")
        return False

    async def start(self, name: str, *, install: bool = True) -> None:
        dep = self.deployed[name]
        async with dep.lock:
            await self._start_locked(dep, install)

    async def _start_locked(self, dep: Deployed, install: bool) -> None:
        machine = dep.machine
        while True:
            try:
                action = machine.next_step(install)
                if isinstance(action, ls.RunStep):  # Install, once per deployment
                    await self._run_to_end(dep, action.step)
                    await self._act(dep, machine.install_done())
                    action = machine.next_step(install)
                if action == ls.Spawn("Run"):
                    run = dep.recipe.step("Run")
                    assert run is not None  # the machine spawns only the recipe's steps
                    dep.process = await self._spawn_step(dep, run)
                    await self._act(dep, machine.run_spawned(skipped=dep.process is None))
                    if dep.process is not None:
                        dep.monitor = self._spawn(self._watch_run(dep, dep.process))
                elif action == ls.Spawn("Startup"):
                    await self._act(dep, machine.startup_begins())
                    startup = dep.recipe.step("Startup")
                    assert startup is not None  # the machine spawns only the recipe's steps
                    await self._run_startup(dep, startup)
                else:
                    await self._act(dep, [action])  # FINISHED, or HALT
                return
            except StepFailed as exc:
                if not await self._act(dep, machine.failed(str(exc))):
                    return

    async def _run_startup(self, dep: Deployed, step: Step) -> None:
        machine = dep.machine
        proc = await self._spawn_step(dep, step)
        if proc is None:
            await self._act(dep, machine.startup_skipped())
            return
        dep.process = dep.step_process = proc
        deadline = machine.startup_deadline(time.monotonic(), step.timeout)
        while proc.returncode is None:
            progress = machine.startup_progress(reported=self.state(dep.name), now=time.monotonic(),
                                                deadline=deadline)
            if progress == ls.STOPPED:
                return
            if progress == ls.RUNNING:
                dep.step_process = None
                dep.monitor = self._spawn(self._watch_run(dep, proc))
                return
            if progress == ls.TIMED_OUT:
                await self._kill_group(proc, 0)
                raise StepFailed(machine.step_timed_out("Startup", step.timeout or ls.STARTUP_TIMEOUT,
                                                        startup=True))
            try:
                await asyncio.wait_for(asyncio.shield(proc.wait()), 0.1)
            except asyncio.TimeoutError:
                pass
        dep.process = dep.step_process = None
        actions = machine.startup_exited(proc.returncode)
        if isinstance(actions[0], ls.Fail):
            raise StepFailed(actions[0].reason)  # handled like every failed step, in _start_locked
        await self._act(dep, actions)

    async def _watch_run(self, dep: Deployed, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        action = dep.machine.run_exited(code, current=dep.process is proc)
        if action == ls.HALT:
            return
        dep.process = None
        if isinstance(action, ls.SetState):
            self._log_line(dep, f"Run exited with code {code}")
            await self._act(dep, [action])
            return
        async with dep.lock:
            if await self._act(dep, [action]):
                await self._start_locked(dep, install=False)

    async def stop(self, name: str) -> None:
        """Shutdown step, then SIGTERM to the process group, then SIGKILL after the grace period."""
        dep = self.deployed[name]
        in_flight = dep.step_process
        reported_running = in_flight is not None and in_flight is dep.process and self.state(name) == "RUNNING"
        if ls.KILL_IN_FLIGHT in dep.machine.stop_requested(in_flight is not None, reported_running):
            # an Install, or a Startup that has not reported RUNNING, holds the lock: end it first
            await self._kill_group(in_flight, self.grace_seconds)
        async with dep.lock:
            await self._act(dep, dep.machine.stop(self.state(name), has_process=dep.process is not None))

    async def restart(self, name: str) -> None:
        """RestartComponent: stop, then start again in the same work folder (Install is not re-run)."""
        dep = self.deployed[name]
        self._note(name, "restart requested")
        await self.stop(name)
        dep.machine.restarted()
        dep.ready = asyncio.Event()
        await self.start(name, install=False)

    def on_state_change(self, name: str, state: str) -> None:
        """Core.on_state_change hook: a component reporting ERRORED over IPC is handled like a failed step."""
        if state != "ERRORED" or name == self._own_change or name not in self.deployed or self._loop is None:
            return
        self._loop.call_soon_threadsafe(lambda: self._spawn(self._reported_errored(name)))

    async def _reported_errored(self, name: str) -> None:
        dep = self.deployed[name]
        if dep.machine.halted:
            return
        async with dep.lock:
            if await self._act(dep, dep.machine.reported_errored(self.state(name))):
                await self._start_locked(dep, install=False)

    def request_restart(self, name: str) -> bool:
        """Thread-safe hook for Core.on_restart_request."""
        if name not in self.deployed or self._loop is None or self._closed:
            return False
        self._loop.call_soon_threadsafe(lambda: self._spawn(self.restart(name)))
        return True

    async def stop_all(self) -> None:
        """Stop every component, dependants before their dependencies."""
        ordered = dependency_order([d.recipe for d in self.deployed.values()])
        for rec in reversed(ordered):
            try:
                await self.stop(rec.name)
            except Exception:
                log.exception("stopping %s failed", rec.name)
        self._closed = True
        for dep in self.deployed.values():
            dep.machine.closed = True
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
