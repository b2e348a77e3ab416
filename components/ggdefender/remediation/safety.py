"""The safety model: which operations may run, which processes are never touched, and argument checks.

Protected, whatever a job says:
- pid 1 and kernel threads (children of kthreadd, pid 2);
- the Greengrass nucleus (a java process running `com.aws.greengrass...` / `Greengrass.jar`) and the
  greengrass-lite daemons;
- our own component: this process, every ancestor (the nucleus or `ggdefender local`, the recipe's shell)
  and every descendant (the collector process and its children);
- the configured `ProtectedProcessNames` and `ProtectedPids`.

The classification (`protection_reason`) is a pure function of a `ProcessInfo`, so it is unit-tested with
fixture data; `SafetyPolicy` gathers the facts with psutil (process_library.py). Without psutil it cannot
gather them, so it refuses every process (Rejected naming psutil): protection never weakens, it fails closed.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from typing import TYPE_CHECKING, Iterable, Optional

from . import process_library

if TYPE_CHECKING:
    import psutil

    from .config import RemediationSettings

# Signals a job may send. Stop/continue and real-time signals are left out on purpose.
ALLOWED_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGKILL", "SIGUSR1", "SIGUSR2")

GREENGRASS_LITE_DAEMONS = frozenset({
    "ggipcd", "ggconfigd", "ggdeploymentd", "gghealthd", "ggpubsubd", "iotcored", "tesd", "tes-serverd",
    "ggl-fleet-provisioning", "fleet-provisioning", "gg-fleet-statusd", "ggl-cli",
})

KTHREADD_PID = 2


@dataclasses.dataclass(frozen=True)
class ProcessInfo:
    pid: int
    ppid: int
    name: str
    cmdline: tuple = ()
    exe: str = ""
    uid: int = -1


def is_greengrass_nucleus(info: ProcessInfo) -> bool:
    joined = " ".join(info.cmdline)
    if "com.aws.greengrass" in joined or "Greengrass.jar" in joined:
        return True
    return info.name in GREENGRASS_LITE_DAEMONS or info.name.startswith("ggl.")


def is_kernel_thread(info: ProcessInfo) -> bool:
    return info.pid == KTHREADD_PID or info.ppid == KTHREADD_PID or (info.pid != 1 and info.ppid == 0)


def protection_reason(
    info: ProcessInfo,
    *,
    own_pids: Iterable[int] = (),
    protected_names: Iterable[str] = (),
    protected_pids: Iterable[int] = (),
) -> Optional[str]:
    """Why this process must never be signalled, or None when a job may touch it."""
    if info.pid <= 1:
        return f"pid {info.pid} is the init process"
    if is_kernel_thread(info):
        return f"pid {info.pid} ({info.name}) is a kernel thread"
    if is_greengrass_nucleus(info):
        return f"pid {info.pid} ({info.name}) is the Greengrass nucleus"
    if info.pid in set(own_pids):
        return f"pid {info.pid} ({info.name}) belongs to this component or its parent chain"
    if info.pid in set(protected_pids):
        return f"pid {info.pid} is in Remediation.ProtectedPids"
    names = set(protected_names)
    if info.name in names or (info.exe and os.path.basename(info.exe) in names):
        return f"pid {info.pid} ({info.name}) is in Remediation.ProtectedProcessNames"
    return None


def signal_from_name(name: str) -> signal.Signals:
    if name not in ALLOWED_SIGNALS:
        raise ValueError(f"signal {name!r} is not allowed (allowed: {', '.join(ALLOWED_SIGNALS)})")
    return signal.Signals[name]


def process_info(proc: "psutil.Process") -> ProcessInfo:
    """Facts about a live process; raises psutil.NoSuchProcess when it is gone."""
    psutil = process_library.require()
    with proc.oneshot():
        try:
            cmdline = tuple(proc.cmdline())
        except (psutil.AccessDenied, psutil.ZombieProcess):
            cmdline = ()
        try:
            exe = proc.exe()
        except (psutil.AccessDenied, psutil.ZombieProcess, OSError):
            exe = ""
        try:
            uid = proc.uids().real
        except psutil.AccessDenied:
            uid = -1
        return ProcessInfo(pid=proc.pid, ppid=proc.ppid(), name=proc.name(), cmdline=cmdline, exe=exe, uid=uid)


class SafetyPolicy:
    """Applies the configured allow-list and the protected-process rules to live processes."""

    def __init__(self, settings: RemediationSettings, own_pid: Optional[int] = None):
        self.settings = settings
        self.own_pid = own_pid or os.getpid()

    def operation_refusal(self, operation: str) -> Optional[str]:
        if operation not in self.settings.allowed_operations:
            return (f"operation {operation!r} is not in Remediation.AllowedOperations "
                    f"({', '.join(self.settings.allowed_operations) or 'empty'})")
        return None

    def own_pids(self) -> set:
        """This process, its ancestors and all its descendants (recomputed each time: children come and go)."""
        psutil = process_library.require()
        pids = {self.own_pid}
        try:
            me = psutil.Process(self.own_pid)
            pids.update(p.pid for p in me.parents())
            pids.update(p.pid for p in me.children(recursive=True))
        except psutil.Error:
            pass
        return pids

    def refusal_for(self, proc: "psutil.Process") -> Optional[str]:
        """Why this live process may not be signalled (protection or missing privilege), or None."""
        info = process_info(proc)
        reason = protection_reason(info, own_pids=self.own_pids(),
                                   protected_names=self.settings.protected_process_names,
                                   protected_pids=self.settings.protected_pids)
        if reason:
            return f"protected: {reason}"
        euid = os.geteuid()
        if euid != 0 and info.uid != euid:
            return (f"not permitted: pid {info.pid} ({info.name}) runs as uid {info.uid} and this listener "
                    f"runs as uid {euid}, not root")
        return None
