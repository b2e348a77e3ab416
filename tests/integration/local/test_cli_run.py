"""`ggdefender local run` as a user runs it: foreground, live view, --duration, Ctrl-C, status, config update."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[2] / "data" / "components"
UPDATE = json.dumps({"test.Echo": {"MERGE": {"Python": sys.executable}}})


def _cli(*args):
    return [sys.executable, "-m", "ggdefender", "local", *map(str, args)]


def _run_args(root, *extra):
    return _cli("run", "--recipeDir", DATA / "recipes", "--artifactDir", DATA / "artifacts",
                "--merge", "test.Echo=1.0.0", "--update-config", UPDATE, "--root", root, "--thing", "cliThing",
                "--grace", "3", *extra)


def test_run_with_duration_ends_cleanly(tmp_path):
    root = tmp_path / "gg"
    out = subprocess.run(_run_args(root, "--duration", "4"), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "test.Echo is RUNNING" in out.stdout
    assert "test.Echo is FINISHED" in out.stdout
    assert "interpolateComponentConfiguration is ON" in out.stdout
    assert "test.Echo  1.0.0    FINISHED" in out.stdout  # the final table
    assert (root / "logs" / "test.Echo.log").is_file()
    assert not (root / "ipc.socket").exists() and not (root / "control.sock").exists()
    logs = subprocess.run(_cli("logs", "test.Echo", "--root", root, "-n", "3"), capture_output=True, text=True,
                          timeout=60)
    assert logs.returncode == 0 and "state FINISHED" in logs.stdout


class Foreground:
    """`local run` in the background of the test, its output collected line by line."""

    def __init__(self, args):
        self.lines = []
        self.cond = threading.Condition()
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()

    def wait_for(self, text, timeout=60):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not any(text in line for line in self.lines):
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self.reader.is_alive()):
                    raise AssertionError(f"{text!r} not shown; output:\n" + "\n".join(self.lines))
                self.cond.wait(min(left, 0.5))

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def test_ctrl_c_status_and_config_update_on_a_running_core(tmp_path):
    root = tmp_path / "gg"
    run = Foreground(_run_args(root))
    try:
        run.wait_for("test.Echo subscribed to IoT Core test/things/cliThing/in")
        status = subprocess.run(_cli("status", "--root", root, "--json"), capture_output=True, text=True,
                                timeout=60)
        assert status.returncode == 0, status.stderr
        info = json.loads(status.stdout)
        assert info["thing"] == "cliThing" and info["components"]["test.Echo"]["state"] == "RUNNING"
        totals = info["totals"]  # numbers, not one preformatted string
        assert set(totals) == {"reportsAccepted", "reportsRejected", "iotCoreMessages", "localMessages", "denials"}
        assert all(isinstance(v, int) and v >= 0 for v in totals.values()), totals
        table = subprocess.run(_cli("status", "--root", root), capture_output=True, text=True, timeout=60)
        assert "test.Echo" in table.stdout and "RUNNING" in table.stdout
        assert f"reports accepted {totals['reportsAccepted']}," in table.stdout

        update = json.dumps({"test.Echo": {"MERGE": {"Mode": "live"}}})
        changed = subprocess.run(_cli("config", "update", "--root", root, "--update-config", update),
                                 capture_output=True, text=True, timeout=60)
        assert changed.returncode == 0, changed.stderr
        # what changed, old -> new, not the whole merged configuration
        assert changed.stdout.splitlines()[0].startswith("test.Echo: /Mode: "), changed.stdout
        assert changed.stdout.splitlines()[0].endswith(' -> "live"'), changed.stdout
        assert "/Python" not in changed.stdout
        run.wait_for("test.Echo: configuration updated (/Mode)")
        again = subprocess.run(_cli("config", "update", "--root", root, "--update-config", update, "--json"),
                               capture_output=True, text=True, timeout=60)
        assert again.returncode == 0, again.stderr
        answer = json.loads(again.stdout)
        assert answer["configuration"]["test.Echo"]["Mode"] == "live"
        assert answer["before"]["test.Echo"]["Mode"] == "live" and answer["verdicts"]["test.Echo"]["changed"] == []

        bad = subprocess.run(_cli("config", "update", "--root", root, "--update-config", '{"nope.X": {"MERGE": {}}}'),
                             capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and "nope.X is not deployed" in bad.stderr

        run.proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert run.proc.wait(60) == 0
        run.reader.join(10)
    finally:
        run.kill()
    output = "\n".join(run.lines)
    assert "stopping components" in output and "test.Echo is FINISHED" in output
    events = (root / "work" / "test.Echo" / "events.log").read_text().splitlines()
    assert events.index("shutdown-step") < events.index("sigterm")
    gone = subprocess.run(_cli("status", "--root", root), capture_output=True, text=True, timeout=60)
    assert gone.returncode == 2 and "no running ggdefender local" in gone.stderr


@pytest.mark.parametrize("args, message", [
    (["--merge", "test.Echo"], "expected NAME=VERSION"),
    (["--merge", "test.Echo=9.9.9"], "no recipe for test.Echo=9.9.9"),
    (["--merge", "test.Echo=1.0.0", "--update-config", '{"test.Echo": {"merge": {}}}'], "upper case"),
    (["--merge", "test.Echo=1.0.0", "--duration", "-1"], "--duration"),
    (["--merge", "test.Echo=1.0.0", "--thing", "a/#"], "thing name 'a/#' is not valid"),
    (["--merge", "test.Echo=1.0.0", "--grace", "-1"], "grace period"),
])
def test_bad_input_is_a_clear_error(tmp_path, args, message):
    cmd = _cli("run", "--recipeDir", DATA / "recipes", "--artifactDir", DATA / "artifacts", "--root",
               tmp_path / "gg", "--duration", "1", *args)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert message in out.stderr


def test_broken_component_makes_exit_status_1(tmp_path):
    update = json.dumps({"test.Echo": {"MERGE": {"Python": sys.executable, "Mode": "fail"}}})
    # 15 s: three failed runs with the retry delays between them, plus slack for a loaded machine
    cmd = _cli("run", "--recipeDir", DATA / "recipes", "--artifactDir", DATA / "artifacts", "--merge",
               "test.Echo=1.0.0", "--update-config", update, "--root", tmp_path / "gg", "--duration", "15")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "test.Echo is BROKEN" in out.stdout
    assert "Run exited with code 3" in out.stdout


def test_second_core_on_the_same_root_is_refused(tmp_path):
    from ggdefender.local.ui.control import ControlError
    from ggdefender.local.ui.harness import LocalCore

    with LocalCore(tmp_path / "gg") as first:
        with pytest.raises(ControlError, match="already running"):
            LocalCore(tmp_path / "gg").start()
        assert first.control("status")["thing"] == "testThing"
        assert (tmp_path / "gg" / "ipc.socket").exists()
