"""What the built-in plugins read from the system: /proc and statvfs on Linux, psutil elsewhere.

On Linux each reading comes from the kernel's files and is computed exactly as psutil 7 computes it (the
unit tests run both on the same /proc fixtures and on this machine), so process B never imports psutil: the
built-ins work where psutil has no wheel (armv7l) and B saves the memory psutil costs. psutil stays the way
on other systems, imported on first use.
"""

from __future__ import annotations

import os
import sys
from typing import Dict, List, NamedTuple, Union

LINUX = sys.platform.startswith("linux")
PROC = "/proc"
_FS_ENCODING = sys.getfilesystemencoding()
_FS_ERRORS = sys.getfilesystemencodeerrors()
TASK_COMM_LEN = 15  # the kernel keeps this many characters of a process name (comm)

class CpuTimes(NamedTuple):
    """/proc/stat's CPU columns in seconds, in psutil's names (cpu_times()); kernels without the last read 0."""

    user: float = 0.0
    nice: float = 0.0
    system: float = 0.0
    idle: float = 0.0
    iowait: float = 0.0
    irq: float = 0.0
    softirq: float = 0.0
    steal: float = 0.0
    guest: float = 0.0
    guest_nice: float = 0.0


class ProcessGone(Exception):
    """The process exited (its /proc entry is gone)."""


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


# -- process_count -------------------------------------------------------------------------------------------
def pid_count(proc_root: str = PROC) -> int:
    """Processes on the device: the numeric entries of /proc (every user's; psutil.pids() does the same)."""
    if not LINUX:
        import psutil
        return len(psutil.pids())
    return sum(1 for name in os.listdir(proc_root) if name.isdigit())


# -- cpu_usage, cpu_usage_per_core -------------------------------------------------------------------------------
def cpu_times(percpu: bool, proc_root: str = PROC) -> Union[CpuTimes, List[CpuTimes]]:
    """The CPU time counters (seconds) of the whole system, or of each online CPU in CPU order."""
    if not LINUX:
        import psutil
        return psutil.cpu_times(percpu=percpu)
    ticks = os.sysconf("SC_CLK_TCK")
    lines = [line for line in _read_bytes(os.path.join(proc_root, "stat")).splitlines() if line.startswith(b"cpu")]
    if not lines:
        raise RuntimeError(f"{proc_root}/stat has no cpu line")
    # the first line is the total ("cpu "), the others one per online CPU ("cpuN")
    rows = lines[1:] if percpu else lines[:1]
    times = [CpuTimes(*(float(v) / ticks for v in row.split()[1:len(CpuTimes._fields) + 1])) for row in rows]
    return times if percpu else times[0]


# -- memory_usage -----------------------------------------------------------------------------------------------
def memory_percent(proc_root: str = PROC) -> float:
    """(total - available) / total of physical memory, in percent rounded to 0.1 (psutil.virtual_memory().percent).

    Available is the kernel's MemAvailable; on kernels before 3.14 (or when it reads 0, a kernel bug) it is
    estimated the way the kernel computes it (free + reclaimable page cache and slab above the low watermarks),
    as psutil and `free` do.
    """
    if not LINUX:
        import psutil
        return psutil.virtual_memory().percent
    mems: Dict[bytes, int] = {}
    for line in _read_bytes(os.path.join(proc_root, "meminfo")).splitlines():
        fields = line.split()
        if len(fields) >= 2:
            mems[fields[0]] = int(fields[1]) * 1024
    total, free = mems[b"MemTotal:"], mems[b"MemFree:"]
    avail = mems.get(b"MemAvailable:", 0)
    if avail == 0:
        avail = _estimated_available(mems, proc_root)
    if avail < 0:
        avail = 0
    elif avail > total:  # inside some containers the values are the host's: take free, as psutil and procps do
        avail = free
    return _percent(total - avail, total)


def _estimated_available(mems: Dict[bytes, int], proc_root: str) -> int:
    """MemAvailable as the kernel computes it (commit 34e431b0ae39), for kernels that do not report it."""
    free = mems[b"MemFree:"]
    try:
        active_file, inactive_file = mems[b"Active(file):"], mems[b"Inactive(file):"]
        slab_reclaimable = mems[b"SReclaimable:"]
    except KeyError:
        return free + mems.get(b"Cached:", 0)  # kernels before 2.6.28: the old free + cached
    try:
        zoneinfo = _read_bytes(os.path.join(proc_root, "zoneinfo"))
    except OSError:
        return free + mems.get(b"Cached:", 0)
    low = sum(int(line.split()[1]) for line in (raw.strip() for raw in zoneinfo.splitlines())
              if line.startswith(b"low")) * os.sysconf("SC_PAGE_SIZE")
    pagecache: float = active_file + inactive_file
    pagecache -= min(pagecache / 2, low)
    avail = free - low + pagecache + slab_reclaimable - min(slab_reclaimable / 2.0, low)
    return int(avail)


def _percent(used: float, total: float) -> float:
    try:
        return round(float(used) / total * 100, 1)
    except ZeroDivisionError:
        return 0.0


# -- disk_usage -------------------------------------------------------------------------------------------------
def disk_percent(path: str) -> float:
    """Percent of the filesystem at `path` in use, as `df` shows it: used / (used + available to users), the
    blocks reserved for root left out (psutil.disk_usage(path).percent). Raises OSError."""
    if not LINUX:
        import psutil
        return psutil.disk_usage(path).percent
    st = os.statvfs(path)
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    return _percent(used, used + st.f_bavail * st.f_frsize)


# -- listening_processes ----------------------------------------------------------------------------------------
def process_name(pid: int, proc_root: str = PROC) -> str:
    """The name of process `pid` as psutil.Process(pid).name() gives it: the kernel's name (comm), or, when
    that is cut at 15 characters, the program of its command line that it starts with.
    Raises ProcessGone when it exited, PermissionError when /proc hides it from us (psutil's AccessDenied)."""
    base = os.path.join(proc_root, str(pid))
    try:
        stat = _read_bytes(os.path.join(base, "stat"))
    except (FileNotFoundError, ProcessLookupError):
        raise ProcessGone(pid) from None
    # the name sits between the first "(" and the last ")": it may itself contain spaces and parentheses
    name = stat[stat.find(b"(") + 1:stat.rfind(b")")].decode(_FS_ENCODING, _FS_ERRORS)
    if len(name) < TASK_COMM_LEN:
        return name
    try:
        program = _cmdline(base)[:1]
    except (FileNotFoundError, ProcessLookupError):
        raise ProcessGone(pid) from None
    except PermissionError:  # not ours to read: the kernel's name is still right
        return name
    if program and os.path.basename(program[0]).startswith(name):
        return os.path.basename(program[0])
    return name


def _cmdline(base: str) -> List[str]:
    """/proc/<pid>/cmdline split like psutil: NUL-separated, or spaces for programs that rewrite it."""
    with open(os.path.join(base, "cmdline"), encoding=_FS_ENCODING, errors=_FS_ERRORS) as handle:
        data = handle.read()
    if not data:
        return []
    sep = "\x00" if data.endswith("\x00") else " "
    if data.endswith(sep):
        data = data[:-1]
    args = data.split(sep)
    if sep == "\x00" and len(args) == 1 and " " in data:
        args = data.split(" ")
    return args
