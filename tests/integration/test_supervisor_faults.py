"""Process A and B when things go wrong, with real processes under `ggdefender local run` (a subprocess).

- the core is killed (-9): A gives up after `Supervisor.IpcRetryBudgetSeconds` and exits, B goes with it;
- SIGTERM to an orphaned A (core gone, A in its reconnect backoff) ends A and B within StopTimeoutSeconds;
- a second A on a work folder in use refuses it, naming the holder;
- a new core on the same root ends what a killed core left running (as systemd ends a dead nucleus's group);
- a collector leaking memory (a real in-process plugin) is ended by A, named as the cause and restarted;
- as root, B runs unprivileged (when the interpreter allows it) and the health document says so.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from component_build import build_copy, full_configuration
from ggdefender.supervisor import collector_user

from ggdefender.local.ui import harness
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Greengrass components run on Linux")]

NAME = "ggdefender.Defender"
STARTED = re.compile(r" (\d+) ggdefender\.supervisor: collector process started \(pid (\d+)\)")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_copy(tmp_path_factory.mktemp("proj"))


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def wait_gone(pids, timeout: float) -> list:
    """The pids still alive after waiting up to timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.2)
    return [p for p in pids if alive(p)]


def wait_for(fn, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


class LocalRun:
    """`ggdefender local run` deploying the built component, as a subprocess of its own session."""

    def __init__(self, built, root: Path, supervisor: dict):
        self.root = root
        self.log = root / "logs" / f"{NAME}.log"
        update = {NAME: {"MERGE": {"Supervisor": supervisor,
                                   "Collector": {"DevelopmentSampleIntervalSeconds": "2", "StartJitterPercent": "0"}}}}
        env = dict(os.environ, GGDEFENDER_PYTHON=sys.executable)  # Install reuses this interpreter
        self.out = open(root.parent / f"{root.name}-core.out", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ggdefender", "local", "run", "--recipeDir", str(built.recipe.parent),
             "--artifactDir", str(built.artifact.parents[2]), "--merge", f"{built.name}={built.version}",
             "--update-config", json.dumps(update), "--root", str(root), "--thing", "faultThing", "--quiet"],
            stdout=self.out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        self.pids = set()

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def parts(self, after: int = 0):
        """(pid of A, pid of B) from the n-th 'collector process started' line on."""
        found = STARTED.findall(self.text())
        if len(found) <= after:
            return None
        a, bpid = map(int, found[after])
        self.pids |= {a, bpid}
        return a, bpid

    def kill_core(self) -> None:
        self.proc.send_signal(signal.SIGKILL)  # the core only, not its session: its components are orphaned
        self.proc.wait(10)

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        for pid in self.pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.out.close()


def test_core_killed_component_exits_within_its_retry_budget(built, tmp_path):
    run = LocalRun(built, tmp_path / "gg", {"IpcRetryBudgetSeconds": "5", "StopTimeoutSeconds": "3"})
    try:
        a, bpid = wait_for(run.parts, 180, "the collector to start")
        run.kill_core()
        assert alive(a) and alive(bpid)
        # budget 5 s, plus one bounded connect attempt and the stop: both must be gone well within a minute
        left = wait_gone([a, bpid], 60)
        assert not left, f"still running after the core died: {left}\n{run.text()[-4000:]}"
        text = run.text()
        assert "retry budget 5s" in text and "stopping: Greengrass IPC unreachable" in text, text[-4000:]
    finally:
        run.cleanup()


def test_sigterm_stops_an_orphaned_supervisor_in_backoff_within_stop_timeout(built, tmp_path):
    run = LocalRun(built, tmp_path / "gg", {"IpcRetryBudgetSeconds": "600", "StopTimeoutSeconds": "3"})
    try:
        a, bpid = wait_for(run.parts, 180, "the collector to start")
        run.kill_core()
        wait_for(lambda: "IPC connect attempt" in run.text(), 30, "A to retry IPC")
        os.kill(a, signal.SIGTERM)
        left = wait_gone([a, bpid], 3 + 3)  # StopTimeoutSeconds, plus slack for a loaded machine
        assert not left, f"SIGTERM did not stop the orphan: {left}\n{run.text()[-4000:]}"
    finally:
        run.cleanup()


def test_a_second_supervisor_refuses_a_work_folder_in_use(built, tmp_path):
    run = LocalRun(built, tmp_path / "gg", {})
    try:
        a, bpid = wait_for(run.parts, 180, "the collector to start")
        # a second process A as the core would start it: A's own environment and work folder
        env = dict(item.split("=", 1) for item in Path(f"/proc/{a}/environ").read_text().split("\0") if "=" in item)
        second = subprocess.run([sys.executable, "-m", "ggdefender", "run"], cwd=os.readlink(f"/proc/{a}/cwd"),
                                env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 4, second.stderr
        assert f"is in use by another ggdefender supervisor (pid {a}," in second.stderr
        assert alive(a) and alive(bpid) and len(STARTED.findall(run.text())) == 1  # the first one untouched
    finally:
        run.cleanup()


def test_a_new_core_on_the_same_root_ends_what_a_killed_core_left_running(built, tmp_path):
    root = tmp_path / "gg"
    first = LocalRun(built, root, {"IpcRetryBudgetSeconds": "600"})
    second = None
    try:
        a, bpid = wait_for(first.parts, 180, "the collector to start")
        first.kill_core()
        assert alive(a) and alive(bpid)  # orphans: their budget is long
        second = LocalRun(built, root, {"IpcRetryBudgetSeconds": "600"})
        left = wait_gone([a, bpid], 60)
        assert not left, f"the new core left the old component running: {left}"
        a2, b2 = wait_for(lambda: second.parts(after=1), 180, "the new core's collector to start")
        assert a2 != a and alive(a2) and alive(b2)
        assert f"{NAME}: ended Run (process group {a}), left running by a previous core" in second.text()
        assert "in use by another ggdefender supervisor" not in second.text()
    finally:
        if second is not None:
            second.cleanup()
        first.cleanup()


LEAKY_PLUGIN = '''
from ggdefender.plugins.contract import Plugin, ValueType

HOARD = []


class Leaky(Plugin):
    name = "leaky"
    value_type = ValueType.NUMBER
    description = "keeps 8 MiB more on every call (a memory leak)"
    default_interval = 0

    def sample(self):
        HOARD.append(b"x" * (8 << 20))  # written, so resident
        return len(HOARD)
'''


def _leaky_plugin_path(folder: Path) -> Path:
    """A folder that, on PYTHONPATH, installs the plugin through a real `ggdefender.plugins` entry point."""
    folder.mkdir()
    (folder / "leaky_plugin.py").write_text(LEAKY_PLUGIN)
    dist = folder / "leaky_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: leaky-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[ggdefender.plugins]\nleaky = leaky_plugin:Leaky\n")
    return folder


def test_collector_over_its_memory_limit_is_restarted_with_the_cause_named(tmp_path):
    plugins = _leaky_plugin_path(tmp_path / "plugins")
    config = full_configuration()  # with the recipe's accessControl
    config["Collector"].update({"DevelopmentSampleIntervalSeconds": "1", "StartJitterPercent": "0"})
    config["Supervisor"].update({"CollectorMemoryLimitMiB": "64", "RestartInitialBackoffSeconds": "1"})
    with harness.LocalCore(tmp_path / "core", thing="leakThing") as core:
        health = core.capture_local("ggdefender/health")
        env = core.add_component(NAME, configuration=config)
        state = tmp_path / "state"
        state.mkdir()
        env["GGDEFENDER_STATE_DIR"] = str(state)
        env["PYTHONPATH"] = os.pathsep.join([str(plugins), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        proc = core.spawn(NAME, [sys.executable, "-m", "ggdefender", "run"], env=env)
        try:
            text = wait_for(lambda: (t := core.log_text(NAME)).count("collector process started") >= 2 and t,
                            120, "a restart of the collector")
            match = re.search(r"ERROR \d+ ggdefender\.supervisor: collector exceeded its memory limit: "
                              r"(\d+) MiB > 64 MiB", text)
            assert match and int(match.group(1)) > 64, text[-4000:]

            def collector_part(msgs):
                for _, doc, *_ in list(msgs):
                    part = (doc.get("parts") or {}).get("collector") if isinstance(doc, dict) else None
                    if part and part.get("restarts", 0) >= 1 and "memory limit" in (part.get("cause") or ""):
                        return part
                return None

            part = wait_for(lambda: collector_part(health), 30, "the health document to name the cause")
            assert part["state"] in ("running", "restarting") and "64 MiB" in part["cause"]
        finally:
            proc.terminate()
            proc.wait(30)


def _privsep_possible() -> str:
    """Why B cannot run unprivileged with this interpreter here ('' when it can)."""
    import pwd

    if os.geteuid() != 0:
        return "not root: nothing to drop"
    nobody = pwd.getpwnam("nobody")
    groups = set(os.getgrouplist("nobody", nobody.pw_gid))
    blocked = [p for p in collector_user.collector_paths(sys.executable) if not collector_user.user_can_read(p, nobody.pw_uid, groups)]
    return f"nobody cannot read {blocked[0]} (run the tests from .ci/bootstrap's venv)" if blocked else ""


@pytest.mark.skipif(bool(_privsep_possible()), reason=_privsep_possible() or "-")
def test_collector_runs_unprivileged_under_local_and_health_says_so(built, tmp_path, monkeypatch):
    monkeypatch.setenv("GGDEFENDER_PYTHON", sys.executable)
    with harness.LocalCore(root=tmp_path / "core", thing="privThing") as core:
        health = core.capture_local("ggdefender/health")
        core.deploy(built.recipe.parent, built.artifact.parents[2], {built.name: built.version},
                    update_config={NAME: {"MERGE": {"Collector": {"DevelopmentSampleIntervalSeconds": "2"}}}})
        core.wait_for_state(NAME, "RUNNING", timeout=180)
        found = wait_for(lambda: STARTED.findall(core.log_text(NAME)), 120, "the collector to start")
        a, bpid = map(int, found[0])

        def uid(pid):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("Uid:"):
                    return int(line.split()[1])

        assert uid(a) == 0 and uid(bpid) != 0, core.log_text(NAME)[-4000:]
        assert "privilege separation OFF" not in core.log_text(NAME)
        privsep = wait_for(lambda: next((d["privilegeSeparation"] for _, d, *_ in list(health)
                                         if isinstance(d, dict) and "privilegeSeparation" in d), None),
                           30, "privilegeSeparation in the health document")
        assert privsep["on"] is True and privsep["collectorUser"] == "nobody"
