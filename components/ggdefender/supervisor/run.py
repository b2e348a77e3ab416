"""`ggdefender run`: process A.

Process A is the recipe's Run step: it supervises process B (collector + plugin host + detect), restarting
it with exponential backoff (and when it outgrows `Supervisor.CollectorMemoryLimitMiB`), and runs the
remediation listener in a thread. When A is root, B is started as an unprivileged user
(`Supervisor.CollectorUser`; default: the owner of the work folder, i.e. the component's posix user, else
`nobody`). SIGTERM stops both within `Supervisor.StopTimeoutSeconds`; A exits non-zero when Greengrass IPC
stays unreachable for `Supervisor.IpcRetryBudgetSeconds`; B ends when A ends, however A dies; one A per work
folder (a lock). Process B's entry point is collector/process.py. See docs/architecture.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from ggdefender import health
from ggdefender import settings as s
from ggdefender import statefile
from ggdefender.part import PartHost
from ggdefender.process_start import SUPERVISOR_PID_ENV, on_signals, setup_logging
from ggdefender.supervisor.collector_user import CODE_ROOT, collector_paths, resolve_collector_user, \
    user_can_read, whoami
from ggdefender.supervisor.install_section import INSTALL_NOTE, InstallSection
from ggdefender.supervisor.section import SUPERVISOR_NOTE, SupervisorSection, SupervisorSettings
from ggdefender.supervisor.work_lock import WorkFolderBusy, lock_work_folder

if TYPE_CHECKING:
    from ggdefender.ipc_port import IpcPort, SupervisorPort
    from ggdefender.remediation.mitigation_gate import MitigationGate
    from ggdefender.supervisor.relay_guard import ContentGuard
    from ggdefender.supervisor.relay_server import RelayServer

log = logging.getLogger("ggdefender.supervisor")

PART_STATE_SUBDIR = "collector"  # process B's own state folder, writable by its user
MEMORY_CHECK_SECONDS = 2.0  # how often A reads B's resident memory


class Backoff:
    """Restart delays: initial, doubling up to a maximum; back to initial after a healthy run."""

    def __init__(self, initial: float, maximum: float, healthy_after: float):
        self.initial, self.maximum, self.healthy_after = initial, maximum, healthy_after
        self._next = initial

    def delay(self, ran_for: float) -> float:
        if ran_for >= self.healthy_after:
            self._next = self.initial
        d = self._next
        self._next = min(self._next * 2, self.maximum)
        return d


def read_rss_mib(pid: int) -> Optional[float]:
    """Resident memory of pid in MiB (VmRSS), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        return None
    return None



# What B must not hold: with the relay it has no use for the component's IPC token or its AWS credentials.
SECRET_ENV = ("SVCUID", "AWS_CONTAINER_AUTHORIZATION_TOKEN")


class Supervisor:
    def __init__(self, cfg: SupervisorSettings, state_dir: str, argv: Optional[List[str]] = None, *,
                 ipc: Optional[SupervisorPort] = None, thing: str = "",
                 private_state: Optional[str] = None, host: Optional[PartHost] = None):
        """With `ipc`, process B gets an IPC relay (supervisor/relay_server.py) instead of the component's token.
        `state_dir` is the work folder (B's folder goes inside it); `private_state` is A's own
        (statefile.private_dir), where the remediation listener keeps its journal. `host` is process A's part
        host (the Supervisor section's part; each incarnation of the remediation listener joins it)."""
        self.cfg = cfg
        self.state_dir = state_dir
        self.private_state = private_state or state_dir
        self.host = host if host is not None else PartHost(ipc, self.private_state, [])
        self.argv = argv or [sys.executable, "-m", "ggdefender", "part", "collector"]
        self.ipc = ipc
        self.thing = thing
        self.stop = threading.Event()
        self.fatal: Optional[str] = None
        self.child: Optional[subprocess.Popen] = None
        self.relay: Optional[RelayServer] = None  # the one of the current child incarnation
        # shared by every incarnation of B and of the listener: what B relayed, A's mitigation rate limits
        self.relay_guard: Optional[ContentGuard] = None
        self.mitigation_gate: Optional[MitigationGate] = None
        if ipc is not None and thing:
            from ggdefender.supervisor.relay_guard import ContentGuard
            from ggdefender.remediation.mitigation_gate import MitigationGate

            self.relay_guard = ContentGuard(thing)
            self.mitigation_gate = MitigationGate(ipc)
        self.starts = 0
        self.last_exit: Optional[str] = None  # how the previous incarnation of B ended
        self.last_cause: Optional[str] = None  # why, when A ended it (memory limit)
        self._stop_deadline: Optional[float] = None
        # the process's own supervisor (cmd_run): past the stop deadline, end the process the hard way
        self.hard_stop = False

    # -- stopping ---------------------------------------------------------------------------------------------
    def request_stop(self, fatal: Optional[str] = None) -> None:
        """Stop everything (SIGTERM, or `fatal`: IPC gone). Safe from a signal handler: only sets flags."""
        if fatal and not self.fatal:
            self.fatal = fatal
        self.stop.set()

    def _begin_stop(self) -> None:
        """From here everything must be done within StopTimeoutSeconds; a watchdog makes sure it is."""
        if self._stop_deadline is not None:
            return
        self._stop_deadline = time.monotonic() + self.cfg.stop_timeout
        if self.hard_stop:  # a daemon thread: it ends with the process when the stop completes in time
            threading.Thread(target=self._watchdog, name="stop-watchdog", daemon=True).start()

    def _watchdog(self) -> None:
        assert self._stop_deadline is not None  # _begin_stop set it before it started this thread
        time.sleep(max(0.0, self._stop_deadline - time.monotonic()))
        # still here: something blocks (an IPC call into a dead core, a stuck thread); end it the hard way
        child = self.child
        if child is not None and child.poll() is None:
            child.kill()
        log.error("not stopped within Supervisor.StopTimeoutSeconds (%gs); exiting now", self.cfg.stop_timeout)
        for handler in logging.getLogger().handlers:
            try:
                handler.flush()
            except Exception:
                pass
        os._exit(3 if self.fatal else 1)

    def time_left(self, reserve: float = 0.0) -> float:
        """Seconds left of the stop deadline (less `reserve`), or StopTimeoutSeconds before a stop began."""
        if self._stop_deadline is None:
            return self.cfg.stop_timeout
        return max(0.0, self._stop_deadline - time.monotonic() - reserve)

    # -- process B --------------------------------------------------------------------------------------------
    def _child_env(self, part_state: str, home: Optional[str], child_cwd: Optional[str] = None,
                   relay_fd: Optional[int] = None) -> dict:
        env = dict(os.environ)
        if relay_fd is not None:
            from ggdefender.relay_wire import FD_ENV

            for key in SECRET_ENV:
                env.pop(key, None)
            env[FD_ENV] = str(relay_fd)
            if self.ipc is not None:  # B cannot ask the nucleus itself
                from ggdefender.ipc import MAX_IOT_PAYLOAD_ENV

                try:
                    env[MAX_IOT_PAYLOAD_ENV] = str(self.ipc.max_iot_payload())
                except Exception as exc:  # B then keeps to IoT Core's limit; A refuses what lite would not take
                    log.warning("could not tell the nucleus's IoT Core message limit: %s", exc)
        env[SUPERVISOR_PID_ENV] = str(os.getpid())
        env["GGDEFENDER_STATE_DIR"] = part_state
        env.setdefault("GGDEFENDER_LOG_LEVEL", self.cfg.log_level)
        for key in ("AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT", "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH"):
            # the nucleus may hand a path relative to the work folder; B runs elsewhere
            if env.get(key) and not os.path.isabs(env[key]):
                absolute = os.path.abspath(env[key])
                # it does so because the absolute path is over sun_path's 108 bytes: then stay relative, to B's cwd
                env[key] = (absolute if len(absolute.encode()) < 108
                            else os.path.relpath(absolute, child_cwd or os.getcwd()))
        if home is not None:
            env["HOME"] = home
        env["PYTHONPATH"] = os.pathsep.join(p for p in (CODE_ROOT, env.get("PYTHONPATH")) if p)
        return env

    def _report_privsep(self, on: bool, user: str, reason: Optional[str] = None) -> None:
        value = {"on": on, "root": os.geteuid() == 0, "collectorUser": user}
        if reason:
            value["reason"] = reason
        health.report(self.ipc, "privilegeSeparation", value)

    def _report_collector(self, state: str) -> None:
        value = {"state": state, "restarts": max(0, self.starts - 1)}
        if self.last_exit:
            value["lastExit"] = self.last_exit
        if self.last_cause:
            value["cause"] = self.last_cause
        health.report(self.ipc, "parts.collector", value)

    def start_child(self) -> subprocess.Popen:
        user = resolve_collector_user(self.cfg, os.getcwd())
        if user is None:
            self._report_privsep(False, whoami(), "process A is not root: both processes run as "
                                                   f"{whoami()}, with nothing more to drop")
        else:
            uid, gid, name, _ = user
            groups = set(os.getgrouplist(name, gid))
            # ... and reach its own folder inside the work folder (a private parent would fail every report)
            blocked = [p for p in collector_paths(self.argv[0]) + [self.state_dir]
                       if not user_can_read(p, uid, groups)]
            if blocked and self.cfg.collector_user:
                raise s.ConfigError(f"Supervisor.CollectorUser {name!r} cannot read {blocked[0]}")
            if blocked:
                # the default user only: better a running collector than none, but never quietly
                reason = (f"the unprivileged user {name} cannot read {blocked[0]}, so the collector runs as "
                          f"{whoami()}; make the interpreter and code readable by {name} (docs/deploy.md) "
                          f"or set Supervisor.CollectorUser")
                log.error("privilege separation OFF: %s", reason)
                self._report_privsep(False, whoami(), reason)
                user = None
            else:
                self._report_privsep(True, name)
        part_state = os.path.join(self.state_dir, PART_STATE_SUBDIR)
        os.makedirs(part_state, mode=0o700, exist_ok=True)
        kwargs: Dict[str, Any] = {}
        home = None
        if user is not None:
            uid, gid, name, _ = user
            os.chown(part_state, uid, gid)
            kwargs.update(user=uid, group=gid, extra_groups=[], cwd=part_state)
            home = part_state
            log.info("starting the collector as user %s (uid %d): least privilege", name, uid)
        ours = theirs = None
        if self.ipc is not None:
            from ggdefender.relay_wire import socket_pair

            ours, theirs = socket_pair()
            kwargs["pass_fds"] = (theirs.fileno(),)
        try:
            self.child = child = subprocess.Popen(
                self.argv, env=self._child_env(part_state, home, kwargs.get("cwd"),
                                               theirs.fileno() if theirs is not None else None),
                stdin=subprocess.DEVNULL, **kwargs)
        except BaseException:
            if ours is not None:
                ours.close()
            raise
        finally:
            if theirs is not None:
                theirs.close()  # B has its copy; ours would keep B's end open after B exits
        if ours is not None and self.ipc is not None:
            from ggdefender.supervisor.relay_server import RelayServer

            self.relay = RelayServer(ours, self.ipc, self.thing, mitigation=self.mitigation_gate,
                                     guard=self.relay_guard).start()
        self.starts += 1
        log.info("collector process started (pid %d)", child.pid)
        self._report_collector("running")
        return child

    def stop_child(self, grace: Optional[float] = None) -> None:
        """SIGTERM, then SIGKILL after `grace` (default: what is left of the stop deadline, less a margin
        for the rest of the shutdown)."""
        child, self.child = self.child, None
        try:
            if child is None or child.poll() is not None:
                return
            child.send_signal(signal.SIGTERM)
            wait = grace if grace is not None else max(0.5, self.time_left(reserve=1.0))
            try:
                child.wait(wait)
            except subprocess.TimeoutExpired:
                log.warning("collector did not stop within %.1fs; killing it", wait)
                child.kill()
                child.wait()
        finally:
            self._close_relay()

    def _close_relay(self) -> None:
        """The child incarnation is gone: its relayed subscriptions go with it."""
        relay, self.relay = self.relay, None
        if relay is not None:
            relay.close()
            relay.join(min(5.0, self.time_left()))

    def _over_memory(self, child: subprocess.Popen) -> Optional[str]:
        rss = read_rss_mib(child.pid)
        limit = self.cfg.collector_memory_limit_mib
        if rss is None or rss <= limit:
            return None
        return f"collector exceeded its memory limit: {rss:.0f} MiB > {limit:g} MiB"

    def supervise_child(self) -> None:
        """Run B until stopped, restarting it with backoff. Call from the main thread (see die_with_supervisor)."""
        backoff = Backoff(self.cfg.restart_initial_backoff, self.cfg.restart_max_backoff, self.cfg.healthy_after)
        try:
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    child = self.start_child()
                except (OSError, s.ConfigError) as exc:
                    log.error("cannot start the collector process: %s", exc)
                    self.last_exit, self.last_cause = "not started", str(exc)
                    child = None
                cause = None
                next_check = time.monotonic() + MEMORY_CHECK_SECONDS
                while child is not None and not self.stop.is_set() and child.poll() is None:
                    self.stop.wait(0.5)
                    if time.monotonic() >= next_check:
                        next_check = time.monotonic() + MEMORY_CHECK_SECONDS
                        cause = self._over_memory(child)
                        if cause:
                            log.error("%s; restarting it", cause)
                            self.stop_child(grace=min(self.cfg.stop_timeout, 5.0))
                            break
                if self.stop.is_set():
                    break
                self._close_relay()
                ran = time.monotonic() - started
                delay = backoff.delay(ran)
                if child is not None:
                    code = child.wait()
                    self.last_exit = f"signal {-code}" if code < 0 else f"exit code {code}"
                    self.last_cause = cause or "exited by itself"
                    log.error("collector process exited (%s) after %.1fs; restarting in %gs",
                              self.last_exit, ran, delay)
                self._report_collector("restarting")
                self.stop.wait(delay)
        finally:
            self._begin_stop()
            self.stop_child()
            self._report_collector("stopped")

    def run_remediation(self, ipc: SupervisorPort, thing: str) -> None:
        from ggdefender.ipc import IpcUnavailable
        from ggdefender.remediation import listener as module  # here: process B imports this module too

        backoff = Backoff(self.cfg.restart_initial_backoff, self.cfg.restart_max_backoff, self.cfg.healthy_after)
        restarts, last_exit = 0, None  # for health's parts.remediation
        while not self.stop.is_set():
            started = time.monotonic()
            _report_part(ipc, "remediation", "running", restarts, last_exit)
            try:
                listener = module.RemediationListener(ipc, thing, self.private_state, host=self.host)
                if self.mitigation_gate is not None:
                    self.mitigation_gate.attach(listener)  # B's mitigate requests go to the running instance
                listener.run(self.stop)
                if self.stop.is_set():
                    _report_part(ipc, "remediation", "stopped", restarts, last_exit, "the component is stopping")
                    return
                log.error("remediation listener returned unexpectedly")
                last_exit = "returned unexpectedly"
            except IpcUnavailable as exc:
                if getattr(ipc, "gone", None) or self.stop.is_set():
                    self.request_stop(f"Greengrass IPC unreachable: {exc}")
                    return
                log.error("remediation listener: IPC unavailable (%s); restarting it", exc)
                last_exit = f"IPC unavailable: {exc}"
            except Exception as exc:
                log.exception("remediation listener failed")
                last_exit = f"{type(exc).__name__}: {exc}"
            restarts += 1
            _report_part(ipc, "remediation", "restarting", restarts, last_exit)
            self.stop.wait(backoff.delay(time.monotonic() - started))


def _report_part(ipc: IpcPort, name: str, state: str, restarts: int, last_exit: Optional[str],
                 cause: Optional[str] = None) -> None:
    value: dict = {"state": state, "restarts": restarts}
    if last_exit:
        value["lastExit"] = last_exit[:500]
    if cause:
        value["cause"] = cause
    health.report(ipc, f"parts.{name}", value)



def cmd_run(args: argparse.Namespace) -> int:
    from ggdefender.ipc import Ipc, IpcClientChoiceError, IpcUnavailable, choose_client

    setup_logging()
    if not Ipc.available():
        print("ggdefender run: not started by a Greengrass core (no SVCUID / IPC socket). "
              "Use `ggdefender collect` or run the component under `ggdefender local`.", file=sys.stderr)
        return 2
    try:
        choose_client()  # GGDEFENDER_IPC_CLIENT: a value that names no usable client stops A here, not later
    except IpcClientChoiceError as exc:
        log.error("ggdefender run: %s", exc)
        return 2
    work = statefile.state_dir()
    try:
        private = statefile.private_dir(work)  # A's state, out of reach of the work folder's user
        lock = lock_work_folder(private, work)  # held until this process ends
    except (WorkFolderBusy, OSError) as exc:
        log.error("ggdefender run: %s", exc)
        return 4
    ipc = Ipc()
    try:
        try:
            section = ipc.get_config(["Supervisor"])
            install_section = ipc.get_config(["Install"])
        except IpcUnavailable as exc:
            log.error("%s", exc)
            return 3
        health.process_health().start(ipc)  # the health document: published now and on every change
        # process A's parts: the Supervisor section now, each remediation listener incarnation as it starts; a
        # rejected section runs on the last good one (config_store), else on the defaults
        own = SupervisorSection()
        install = InstallSection()  # judged only: the install step applies it
        host = PartHost(ipc, private, [own, install],
                        notes={"Supervisor": SUPERVISOR_NOTE, "Install": INSTALL_NOTE})
        host.configure_part(own, section)
        host.configure_part(install, install_section)
        cfg = own.settings or SupervisorSettings()
        try:
            # every section of A's parts is judged when it changes: an operator sees a bad Supervisor value at
            # once, not after a restart; the remediation listener follows Remediation.Enabled live
            following = host.follow(ipc)
        except Exception as exc:  # nothing follows: remediation keeps its section; verdicts come at the next start
            log.error("cannot follow configuration changes: %s", exc)
            following = None
        logging.getLogger().setLevel(os.environ.get("GGDEFENDER_LOG_LEVEL", cfg.log_level).upper())
        ipc.retry_budget = cfg.ipc_retry_budget
        sup = Supervisor(cfg, work, ipc=ipc, thing=ipc.thing_name, private_state=private, host=host)
        sup.hard_stop = True
        on_signals(sup.request_stop)
        # a core that stays unreachable for the budget (e.g. killed) ends A, which ends B: no orphans
        ipc.on_gone(lambda why: sup.request_stop(f"Greengrass IPC unreachable: {why}"))
        remediation = threading.Thread(target=sup.run_remediation, args=(ipc, ipc.thing_name),
                                       name="remediation", daemon=True)
        remediation.start()
        sup.supervise_child()
        if following is not None:
            following.close()
        host.close()  # ends the remediation listener's loop (also stopping on sup.stop) in reverse start order
        remediation.join(sup.time_left(reserve=0.5))
        if sup.fatal:
            log.error("stopping: %s", sup.fatal)
            return 3
        log.info("stopped")
        return 0
    finally:
        if not ipc.gone:
            health.process_health().stop()  # the last state goes out before the connection closes
        ipc.close()
        lock.close()



def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("run", help="component entry point: supervisor + remediation (process A)")
    p.set_defaults(func=cmd_run)
