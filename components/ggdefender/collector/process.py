"""`ggdefender part collector`: process B, its parts and their host: collector, plugin host and on-device detect,
as peers (part.py). Started by process A (supervisor/run.py), it talks IPC only through the relay
(collector/relay_client.py) and ends when A ends.

The host reads the component configuration and gives each part its section (keeping the last good one of a
part that rejects its own), starts them consumers first and closes them in reverse, so the collector stops
taking samples before the plugin host closes and detect saves its history last. The collector gets its custom
metrics from the plugin host and hands every built report to detect; neither creates or configures the other.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any, List, Mapping, Optional, cast

from ggdefender import defaults, statefile
from ggdefender.collector.service import CollectorService
from ggdefender.detect.service import DetectService
from ggdefender.part import Part, PartHost
from ggdefender.plugins.host import PluginHost
from ggdefender.process_start import SUPERVISOR_PID_ENV, on_signals, setup_logging

if TYPE_CHECKING:
    from ggdefender.ipc_port import CollectorPort

log = logging.getLogger("ggdefender.collector.process")

# how long B may take to stop once process A is gone: A's own grace for it, Supervisor.StopTimeoutSeconds's default
STOP_GRACE_SECONDS = float(defaults.DEFAULTS["Supervisor"]["StopTimeoutSeconds"])


class CollectorProcess(PartHost):
    def __init__(self, ipc: "CollectorPort", thing: str, state_dir: str, *, source: object = None):
        self.ipc = ipc
        self.collector = CollectorService(ipc, thing, state_dir, source=source)  # first: ValueError without a thing
        # the built-in plugin defaults run until a Plugins section is accepted, so reports keep their custom
        # metrics when the first one is invalid and no last good one was saved
        self.plugins = PluginHost()
        self.detect = DetectService(ipc, thing, state_dir)
        self.collector.plugins, self.collector.observers = self.plugins, [self.detect]
        parts: List[Part] = [self.detect, self.plugins, self.collector]  # mypy checks each keeps the contract
        super().__init__(ipc, state_dir, parts)

    def reload(self) -> None:
        """Read the component configuration and dispatch it to the parts (IpcUnavailable propagates)."""
        self.configure(self.ipc.get_config())

    def run(self, stop: threading.Event) -> None:
        """Configure, start, run the report loop until `stop`; every part is closed on every way out (detect
        saves its statistics history there), start-up failures included."""
        try:
            self.reload()
            self.start()
            self.collector.run(stop, self.reload)
        finally:
            self.close()

    def wake(self) -> None:
        """Make run() look at its stop event now (signal handlers call this)."""
        self.collector.wake()


def die_with_supervisor(env: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """In process B at start: have the kernel send SIGTERM when process A dies, however it dies.

    Set by B itself (after exec, so no credential change can clear it), then B checks its parent is still the
    supervisor that started it: if A died before prctl ran, B was already re-parented and no signal would ever
    come. Returns why B must not run, or None. The signal follows the A thread that started B, which is why A
    supervises from its main thread.
    """
    env = os.environ if env is None else env
    raw = env.get(SUPERVISOR_PID_ENV, "")
    if not raw.isdigit():
        return None  # run alone by a developer: nothing to die with
    try:
        import ctypes  # here, in B only: it costs ~0.7 MiB RSS

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, int(signal.SIGTERM), 0, 0, 0) != 0:  # 1 = PR_SET_PDEATHSIG
            log.warning("prctl(PR_SET_PDEATHSIG) failed: %s", os.strerror(ctypes.get_errno()))
    except (OSError, AttributeError) as exc:  # not Linux/glibc: the relay's EOF still ends B
        log.warning("cannot ask to die with the supervisor: %s", exc)
    if os.getppid() != int(raw):
        return f"the supervisor (pid {raw}) is already gone"
    return None


def cmd_part(args: Any) -> int:
    from ggdefender.ipc import IpcUnavailable
    from ggdefender.collector.relay_client import client_for_part

    setup_logging()
    try:
        ipc = client_for_part()
    except IpcUnavailable as exc:
        print(f"ggdefender part: {exc}", file=sys.stderr)
        return 2
    if ipc is None:
        print("ggdefender part: must be started by `ggdefender run` under a Greengrass core", file=sys.stderr)
        return 2
    orphaned = die_with_supervisor()
    if orphaned:
        log.error("not starting: %s", orphaned)
        return 3
    stop = threading.Event()
    try:
        # the relay normally; a developer's direct Ipc lacks B's calls to A, which the parts look up (getattr)
        service = CollectorProcess(cast("CollectorPort", ipc), ipc.thing_name, statefile.state_dir())
    except ValueError as exc:
        log.error("%s", exc)
        return 2

    def on_signal():
        stop.set()
        service.wake()

    def on_relay_gone(why: str) -> None:
        # process A is gone (or closed our channel): nothing of ours can reach IPC any more; stop now rather
        # than at the next report, and for sure within the grace A would have given us
        if stop.is_set():
            return
        log.error("stopping: %s", why)
        gone.append(why)
        on_signal()
        timer = threading.Timer(STOP_GRACE_SECONDS, os._exit, (3,))
        timer.daemon = True
        timer.start()

    gone: list = []
    on_signals(on_signal)
    if hasattr(ipc, "on_gone"):
        ipc.on_gone(on_relay_gone)
    try:
        service.run(stop)
        return 3 if gone else 0
    except IpcUnavailable as exc:
        log.error("giving up: %s", exc)
        return 3
    finally:
        ipc.close()


def register(subparsers: Any) -> None:
    q = subparsers.add_parser("part", help="internal: one supervised part process (started by `run`)")
    q.add_argument("name", choices=("collector",))
    q.set_defaults(func=cmd_part)
