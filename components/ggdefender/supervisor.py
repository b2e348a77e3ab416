"""`ggdefender run` (process A) and `ggdefender part collector` (process B).

Process A is the recipe's Run step: it supervises process B (collector + plugin host + detect), restarting
it with exponential backoff, and runs the remediation listener in a thread. When A is root, B is started
as an unprivileged user (`Supervisor.CollectorUser`; default: the owner of the work folder, i.e. the
component's posix user, else `nobody`). SIGTERM stops both cleanly. See docs/architecture.md.
"""

from __future__ import annotations

import logging
import os
import pwd
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Optional, Tuple

from ggdefender import settings as s
from ggdefender import statefile

log = logging.getLogger("ggdefender.supervisor")

PART_STATE_SUBDIR = "collector"  # process B's own state folder, writable by its user
# the folder holding the ggdefender package: process B's PYTHONPATH, so its user must be able to read it
CODE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class SupervisorSettings:
    collector_user: str = ""
    collector_group: str = ""
    restart_initial_backoff: float = 1.0
    restart_max_backoff: float = 60.0
    healthy_after: float = 300.0
    stop_timeout: float = 10.0
    log_level: str = "INFO"


def parse_settings(section) -> SupervisorSettings:
    section = s.as_section(section, "Supervisor")
    errors, values = [], {}
    readers = {
        "CollectorUser": ("collector_user", lambda v: s.as_str(v, "CollectorUser", max_length=64, allow_empty=True)),
        "CollectorGroup": ("collector_group",
                           lambda v: s.as_str(v, "CollectorGroup", max_length=64, allow_empty=True)),
        "RestartInitialBackoffSeconds": ("restart_initial_backoff",
                                         lambda v: s.as_float(v, "RestartInitialBackoffSeconds", 0.1, 600)),
        "RestartMaxBackoffSeconds": ("restart_max_backoff",
                                     lambda v: s.as_float(v, "RestartMaxBackoffSeconds", 0.1, 3600)),
        "HealthyAfterSeconds": ("healthy_after", lambda v: s.as_float(v, "HealthyAfterSeconds", 1, 86400)),
        "StopTimeoutSeconds": ("stop_timeout", lambda v: s.as_float(v, "StopTimeoutSeconds", 1, 300)),
        "LogLevel": ("log_level", lambda v: s.as_choice(v, "LogLevel", ("DEBUG", "INFO", "WARNING", "ERROR"))),
    }
    for key, value in section.items():
        if key not in readers:
            log.warning("Supervisor.%s: unknown key ignored", key)
            continue
        if value is None:
            continue
        attr, fn = readers[key]
        try:
            values[attr] = fn(value)
        except s.ConfigError as exc:
            errors.append(f"Supervisor.{exc}")
    if errors:
        raise s.ConfigError("; ".join(errors))
    out = SupervisorSettings(**values)
    if out.restart_max_backoff < out.restart_initial_backoff:
        raise s.ConfigError("Supervisor.RestartMaxBackoffSeconds: below RestartInitialBackoffSeconds")
    return out


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


def resolve_collector_user(cfg: SupervisorSettings, workdir: str) -> Optional[Tuple[int, int, str, str]]:
    """(uid, gid, name, home) to run process B as, or None to keep ours (when not root)."""
    if os.geteuid() != 0:
        return None
    if cfg.collector_user:
        name = cfg.collector_user
        try:
            entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
        except (KeyError, ValueError):
            raise s.ConfigError(f"Supervisor.CollectorUser: no such user {name!r}") from None
    else:
        owner = os.stat(workdir).st_uid
        try:
            entry = pwd.getpwuid(owner) if owner != 0 else pwd.getpwnam("nobody")
        except KeyError:
            raise s.ConfigError("Supervisor.CollectorUser: not set and no 'nobody' user exists") from None
    if entry.pw_uid == 0:
        raise s.ConfigError("Supervisor.CollectorUser: refusing to run the collector as root")
    gid = entry.pw_gid
    if cfg.collector_group:
        import grp

        try:
            g = cfg.collector_group
            gid = grp.getgrgid(int(g)).gr_gid if g.isdigit() else grp.getgrnam(g).gr_gid
        except (KeyError, ValueError):
            raise s.ConfigError(f"Supervisor.CollectorGroup: no such group {cfg.collector_group!r}") from None
    return entry.pw_uid, gid, entry.pw_name, entry.pw_dir


def user_can_read(path: str, uid: int, groups) -> bool:
    """Whether uid (with groups) can reach and read path, judged from permission bits on the way there."""
    import stat as st

    real = os.path.realpath(path)
    parts = real.split(os.sep)
    for i in range(1, len(parts) + 1):
        p = os.sep.join(parts[:i]) or os.sep
        try:
            info = os.stat(p)
        except OSError:
            return False
        need = st.S_IXUSR if i < len(parts) or st.S_ISDIR(info.st_mode) else st.S_IRUSR
        if info.st_uid == uid:
            shift = 0
        elif info.st_gid in groups:
            shift = 3
        else:
            shift = 6
        if not info.st_mode & (need >> shift):
            return False
    return True


def _whoami() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def _set_pdeathsig() -> None:
    """Runs in the child after the uid change: die with the supervisor even if it is SIGKILLed."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


# What B must not hold: with the relay it has no use for the component's IPC token or its AWS credentials.
SECRET_ENV = ("SVCUID", "AWS_CONTAINER_AUTHORIZATION_TOKEN")


class Supervisor:
    def __init__(self, cfg: SupervisorSettings, state_dir: str, argv=None, *, ipc=None, thing: str = ""):
        """With `ipc`, process B gets an IPC relay (ggdefender.ipc_relay) instead of the component's token."""
        self.cfg = cfg
        self.state_dir = state_dir
        self.argv = argv or [sys.executable, "-m", "ggdefender", "part", "collector"]
        self.ipc = ipc
        self.thing = thing
        self.stop = threading.Event()
        self.fatal: Optional[str] = None
        self.child: Optional[subprocess.Popen] = None
        self.relay = None  # the RelayServer of the current child incarnation
        self.starts = 0

    def _child_env(self, part_state: str, home: Optional[str], child_cwd: Optional[str] = None,
                   relay_fd: Optional[int] = None) -> dict:
        env = dict(os.environ)
        if relay_fd is not None:
            from ggdefender.ipc_relay import FD_ENV

            for key in SECRET_ENV:
                env.pop(key, None)
            env[FD_ENV] = str(relay_fd)
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

    def start_child(self) -> subprocess.Popen:
        user = resolve_collector_user(self.cfg, os.getcwd())
        if user is not None:
            uid, gid, name, _ = user
            groups = set(os.getgrouplist(name, gid))
            blocked = [p for p in (self.argv[0], CODE_ROOT) if not user_can_read(p, uid, groups)]
            if blocked and self.cfg.collector_user:
                raise s.ConfigError(f"Supervisor.CollectorUser {name!r} cannot read {blocked[0]}")
            if blocked:
                # the default user only: better a running collector than none; say so loudly
                log.warning("the collector stays as %s: the unprivileged user %s cannot read %s; set "
                            "Supervisor.CollectorUser to a user who can run this Python", _whoami(), name,
                            blocked[0])
                user = None
        part_state = os.path.join(self.state_dir, PART_STATE_SUBDIR)
        os.makedirs(part_state, mode=0o700, exist_ok=True)
        kwargs = {}
        home = None
        if user is not None:
            uid, gid, name, _ = user
            os.chown(part_state, uid, gid)
            kwargs.update(user=uid, group=gid, extra_groups=[], cwd=part_state)
            home = part_state
            log.info("starting the collector as user %s (uid %d): least privilege", name, uid)
        ours = theirs = None
        if self.ipc is not None:
            from ggdefender.ipc_relay import socket_pair

            ours, theirs = socket_pair()
            kwargs["pass_fds"] = (theirs.fileno(),)
        try:
            self.child = subprocess.Popen(
                self.argv, env=self._child_env(part_state, home, kwargs.get("cwd"),
                                               theirs.fileno() if theirs is not None else None),
                stdin=subprocess.DEVNULL, preexec_fn=_set_pdeathsig, **kwargs)
        except BaseException:
            if ours is not None:
                ours.close()
            raise
        finally:
            if theirs is not None:
                theirs.close()  # B has its copy; ours would keep B's end open after B exits
        if ours is not None:
            from ggdefender.ipc_relay import RelayServer

            self.relay = RelayServer(ours, self.ipc, self.thing).start()
        self.starts += 1
        log.info("collector process started (pid %d)", self.child.pid)
        return self.child

    def stop_child(self) -> None:
        child, self.child = self.child, None
        try:
            if child is None or child.poll() is not None:
                return
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(self.cfg.stop_timeout)
            except subprocess.TimeoutExpired:
                log.warning("collector did not stop within %gs; killing it", self.cfg.stop_timeout)
                child.kill()
                child.wait()
        finally:
            self._close_relay()

    def _close_relay(self) -> None:
        """The child incarnation is gone: its relayed subscriptions go with it."""
        relay, self.relay = self.relay, None
        if relay is not None:
            relay.close()
            relay.join(5)

    def supervise_child(self) -> None:
        backoff = Backoff(self.cfg.restart_initial_backoff, self.cfg.restart_max_backoff, self.cfg.healthy_after)
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                child = self.start_child()
            except (OSError, s.ConfigError) as exc:
                log.error("cannot start the collector process: %s", exc)
                child = None
            while child is not None and not self.stop.is_set() and child.poll() is None:
                self.stop.wait(0.5)
            if self.stop.is_set():
                break
            self._close_relay()
            ran = time.monotonic() - started
            delay = backoff.delay(ran)
            code = child.returncode if child is not None else None
            log.error("collector process exited (code %s) after %.1fs; restarting in %gs", code, ran, delay)
            self.stop.wait(delay)
        self.stop_child()

    def run_remediation(self, ipc, thing: str) -> None:
        from ggdefender.cli import optional_module
        from ggdefender.ipc import IpcUnavailable

        module = optional_module("ggdefender.remediation.listener")
        if module is None:
            log.info("remediation listener not in this build")
            return
        cls = module.RemediationListener
        backoff = Backoff(self.cfg.restart_initial_backoff, self.cfg.restart_max_backoff, self.cfg.healthy_after)
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                cls(ipc, thing, self.state_dir).run(self.stop)
                if self.stop.is_set():
                    return
                log.error("remediation listener returned unexpectedly")
            except IpcUnavailable as exc:
                self.fatal = f"Greengrass IPC unreachable: {exc}"
                self.stop.set()
                return
            except Exception:
                log.exception("remediation listener failed")
            self.stop.wait(backoff.delay(time.monotonic() - started))


def _setup_logging(level: str = "INFO") -> None:
    level = os.environ.get("GGDEFENDER_LOG_LEVEL", level).upper()
    logging.basicConfig(level=getattr(logging, level, logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s")


def _on_signals(handler) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: handler())


def cmd_run(args) -> int:
    from ggdefender.ipc import Ipc, IpcUnavailable

    _setup_logging()
    if not Ipc.available():
        print("ggdefender run: not started by a Greengrass core (no SVCUID / IPC socket). "
              "Use `ggdefender collect` or run the component under `ggdefender local`.", file=sys.stderr)
        return 2
    ipc = Ipc()
    try:
        try:
            section = ipc.get_config(["Supervisor"])
        except IpcUnavailable as exc:
            log.error("%s", exc)
            return 3
        try:
            cfg = parse_settings(section)
        except s.ConfigError as exc:
            log.error("Supervisor configuration rejected, using defaults: %s", exc)
            cfg = SupervisorSettings()
        logging.getLogger().setLevel(os.environ.get("GGDEFENDER_LOG_LEVEL", cfg.log_level).upper())
        sup = Supervisor(cfg, statefile.state_dir(), ipc=ipc, thing=ipc.thing_name)
        _on_signals(sup.stop.set)
        remediation = threading.Thread(target=sup.run_remediation, args=(ipc, ipc.thing_name),
                                       name="remediation", daemon=True)
        remediation.start()
        sup.supervise_child()
        remediation.join(cfg.stop_timeout)
        if sup.fatal:
            log.error("stopping: %s", sup.fatal)
            return 3
        log.info("stopped")
        return 0
    finally:
        ipc.close()


def cmd_part(args) -> int:
    from ggdefender.ipc import IpcUnavailable
    from ggdefender.ipc_relay import client_for_part

    _setup_logging()
    try:
        ipc = client_for_part()
    except IpcUnavailable as exc:
        print(f"ggdefender part: {exc}", file=sys.stderr)
        return 2
    if ipc is None:
        print("ggdefender part: must be started by `ggdefender run` under a Greengrass core", file=sys.stderr)
        return 2
    from ggdefender.collector.service import CollectorService

    stop = threading.Event()
    try:
        service = CollectorService(ipc, ipc.thing_name, statefile.state_dir())
    except ValueError as exc:
        log.error("%s", exc)
        return 2

    def on_signal():
        stop.set()
        service.wake()

    _on_signals(on_signal)
    try:
        service.run(stop)
        return 0
    except IpcUnavailable as exc:
        log.error("giving up: %s", exc)
        return 3
    finally:
        ipc.close()


def register(subparsers) -> None:
    p = subparsers.add_parser("run", help="component entry point: supervisor + remediation (process A)")
    p.set_defaults(func=cmd_run)
    q = subparsers.add_parser("part", help="internal: one supervised part process (started by `run`)")
    q.add_argument("name", choices=("collector",))
    q.set_defaults(func=cmd_part)
