"""plugins/builtin/system.py gives the built-ins psutil's values without psutil: both read the same /proc
fixture (psutil.PROCFS_PATH pointed at it) and this machine, and must agree."""

import os
import warnings

import psutil
import pytest

from ggdefender.plugins.builtin import system

pytestmark = pytest.mark.skipif(not system.LINUX, reason="the /proc readings are Linux's")

# one process line of /proc/<pid>/stat after "(name) ", enough fields for psutil's parser
STAT_TAIL = "S 1 1 1 0 -1 4194304 10 0 0 0 5 3 0 0 20 0 1 0 1000 1000000 100 " + " ".join(["0"] * 30) + "\n"
MEMINFO = """\
MemTotal:        8000000 kB
MemFree:         1000000 kB
MemAvailable:    3000000 kB
Buffers:          100000 kB
Cached:          2000000 kB
Shmem:             50000 kB
Active:          3000000 kB
Inactive:        2000000 kB
Active(file):    1200000 kB
Inactive(file):   900000 kB
SReclaimable:     300000 kB
Slab:             400000 kB
"""
ZONEINFO = """\
Node 0, zone      DMA
  pages free     3977
        min      33
        low      41
        high     49
Node 0, zone   Normal
  pages free     200000
        min      11000
        low      13750
        high     16500
"""


@pytest.fixture
def proc(tmp_path):
    """A fake /proc; psutil reads it too while the test runs."""
    root = tmp_path / "proc"
    root.mkdir()
    (root / "stat").write_text(
        "cpu  709062 10 113282 2642406 55569 7 3723 42483 11 3\n"
        "cpu0 301320 4 48066 1401648 9631 3 551 21526 5 1\n"
        "cpu1 407741 6 65216 1240757 45937 4 3172 20957 6 2\n"
        "intr 8190688 0 0\nctxt 14058806\nbtime 1700000000\nprocesses 10325\n")
    (root / "meminfo").write_text(MEMINFO)
    (root / "zoneinfo").write_text(ZONEINFO)
    (root / "self").mkdir()  # non-numeric entries are not processes
    (root / "sys").mkdir()
    saved = psutil.PROCFS_PATH
    psutil.PROCFS_PATH = str(root)
    try:
        yield root
    finally:
        psutil.PROCFS_PATH = saved


def add_process(root, pid: int, comm: str, cmdline: bytes = b""):
    d = root / str(pid)
    d.mkdir()
    (d / "stat").write_text(f"{pid} ({comm}) {STAT_TAIL}")
    (d / "cmdline").write_bytes(cmdline)
    return d


def test_pid_count_matches_psutil_on_a_fixture(proc):
    for pid in (1, 2, 345, 4194304):
        add_process(proc, pid, "x")
    assert system.pid_count(str(proc)) == len(psutil.pids()) == 4


@pytest.mark.parametrize("percpu", [False, True])
def test_cpu_times_match_psutil_on_a_fixture(proc, percpu):
    ours = system.cpu_times(percpu, str(proc))
    theirs = psutil.cpu_times(percpu=percpu)
    if percpu:
        assert len(ours) == len(theirs) == 2
        assert [tuple(t) for t in ours] == [tuple(t) for t in theirs]
        assert ours[0]._asdict() == theirs[0]._asdict()
    else:
        assert tuple(ours) == tuple(theirs) and ours._asdict() == theirs._asdict()
        assert ours.guest_nice == 3 / os.sysconf("SC_CLK_TCK")


def test_cpu_times_on_an_older_kernel_read_missing_columns_as_zero(proc):
    (proc / "stat").write_text("cpu  100 0 50 800 10 0 5\ncpu0 100 0 50 800 10 0 5\n")
    times = system.cpu_times(False, str(proc))
    assert times.steal == times.guest == times.guest_nice == 0.0 and times.softirq > 0


MEMINFO_CASES = {
    "MemAvailable": MEMINFO,
    "kernel before 3.14 (estimated from zoneinfo)": MEMINFO.replace("MemAvailable:    3000000 kB\n", ""),
    "MemAvailable 0 (kernel bug)": MEMINFO.replace("MemAvailable:    3000000 kB", "MemAvailable:          0 kB"),
    "container: available over total": MEMINFO.replace("MemAvailable:    3000000", "MemAvailable:    9000000"),
    "no file LRU counters": MEMINFO.replace("MemAvailable:    3000000 kB\n", "").replace("Active(file)", "X"),
    "estimate below zero": MEMINFO.replace("MemAvailable:    3000000 kB\n", "").replace(
        "MemFree:         1000000", "MemFree:               1"),
}


@pytest.mark.parametrize("case", MEMINFO_CASES)
def test_memory_percent_matches_psutil_on_a_fixture(proc, case):
    (proc / "meminfo").write_text(MEMINFO_CASES[case])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # psutil warns about fields it sets to 0
        expected = psutil.virtual_memory().percent
    assert system.memory_percent(str(proc)) == expected


def test_memory_percent_without_zoneinfo_matches_psutil(proc):
    (proc / "meminfo").write_text(MEMINFO_CASES["kernel before 3.14 (estimated from zoneinfo)"])
    (proc / "zoneinfo").unlink()
    assert system.memory_percent(str(proc)) == psutil.virtual_memory().percent == 62.5  # the old free + cached


@pytest.mark.parametrize("comm,cmdline,expected", [
    ("sshd", b"/usr/sbin/sshd\x00-D\x00", "sshd"),
    ("(sd-pam)", b"", "(sd-pam)"),  # parentheses inside the name
    ("my server) S 1", b"", "my server) S 1"),  # a name that looks like the fields after it
    ("gnome-keyring-d", b"/usr/bin/gnome-keyring-daemon\x00--start\x00", "gnome-keyring-daemon"),
    ("gnome-keyring-d", b"/usr/bin/other-program\x00", "gnome-keyring-d"),  # cut, but the program differs
    ("kworker/u4:2-ev", b"", "kworker/u4:2-ev"),  # kernel threads have no command line
    ("node-red-worker", b"/opt/bin/node-red-worker-main --flows x", "node-red-worker-main"),  # rewritten title
    ("caf\udcff-daemon", b"", "caf\udcff-daemon"),  # undecodable bytes kept like psutil
])
def test_process_name_matches_psutil_on_a_fixture(proc, comm, cmdline, expected):
    d = add_process(proc, 4242, "x", cmdline)
    (d / "stat").write_bytes(f"4242 ({comm}) {STAT_TAIL}".encode("utf-8", "surrogateescape"))
    assert system.process_name(4242, str(proc)) == psutil.Process(4242).name() == expected


def test_process_name_of_a_gone_process(proc):
    with pytest.raises(system.ProcessGone):
        system.process_name(999, str(proc))
    with pytest.raises(psutil.NoSuchProcess):
        psutil.Process(999).name()


def test_process_name_on_this_machine_matches_psutil():
    pids = [pid for pid in psutil.pids()][:300]
    compared = 0
    for pid in pids:
        try:
            expected = psutil.Process(pid).name()
            ours = system.process_name(pid)
        except (psutil.NoSuchProcess, system.ProcessGone):
            continue  # exited between the two reads
        assert ours == expected, pid
        compared += 1
    assert compared >= 3
    assert system.process_name(os.getpid()) == psutil.Process().name()


def test_readings_on_this_machine_match_psutil(tmp_path):
    assert system.disk_percent("/") == psutil.disk_usage("/").percent  # statvfs twice: a busy disk may move
    assert system.disk_percent(str(tmp_path)) == psutil.disk_usage(str(tmp_path)).percent
    with pytest.raises(OSError):
        system.disk_percent(str(tmp_path / "gone"))
    assert abs(system.memory_percent() - psutil.virtual_memory().percent) < 2.0  # memory moves between reads
    assert len(system.cpu_times(True)) == len(psutil.cpu_times(percpu=True))
    assert abs(system.pid_count() - len(psutil.pids())) < 20  # processes come and go between the reads


def test_disk_percent_matches_psutil_on_the_same_statvfs(monkeypatch):
    fake = os.statvfs_result((4096, 4096, 1000, 300, 250, 0, 0, 0, 0, 255))
    monkeypatch.setattr(os, "statvfs", lambda path: fake)
    # used = (1000 - 300) blocks; root's reserved 50 left out: 700 / (700 + 250)
    assert system.disk_percent("/x") == psutil.disk_usage("/x").percent == 73.7
    monkeypatch.setattr(os, "statvfs", lambda path: os.statvfs_result((4096, 4096, 0, 0, 0, 0, 0, 0, 0, 255)))
    assert system.disk_percent("/x") == psutil.disk_usage("/x").percent == 0.0


def test_other_systems_take_psutils_values(monkeypatch, tmp_path):
    monkeypatch.setattr(system, "LINUX", False)  # the branch a non-Linux host runs, here against psutil itself
    fake = os.statvfs_result((4096, 4096, 1000, 300, 250, 0, 0, 0, 0, 255))
    monkeypatch.setattr(os, "statvfs", lambda path: fake)
    assert system.disk_percent("/x") == 73.7
    monkeypatch.setattr(psutil, "pids", lambda: [1, 2, 3])
    assert system.pid_count() == 3
    monkeypatch.setattr(psutil, "virtual_memory", lambda: type("Mem", (), {"percent": 41.5})())
    assert system.memory_percent() == 41.5
    monkeypatch.setattr(psutil, "cpu_times", lambda percpu: ["a", "b"] if percpu else "total")
    assert system.cpu_times(True) == ["a", "b"] and system.cpu_times(False) == "total"
