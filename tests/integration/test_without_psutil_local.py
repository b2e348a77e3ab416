"""The whole component under `ggdefender local` where psutil cannot be imported (as on armv7l, which has no
psutil wheel): reports are accepted by the offline Device Defender with every built-in custom metric, the
health document lists the operations that need psutil, and a job using one is REJECTED naming psutil and the
platform while other jobs still run. psutil is hidden by a package of that name on PYTHONPATH whose import
fails; processes A and B inherit it."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from component_build import full_configuration, wait_until
from ggdefender.plugins.builtin import BUILTINS

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="psutil is optional on Linux only")]

from ggdefender.local.ui import harness

THING = "noPsutilThing"
COMPONENT = "ggdefender.Defender"
OURS = "ggdefender.remediation/1"
FINAL = ("SUCCEEDED", "FAILED", "REJECTED")


@pytest.fixture
def hide_psutil():
    """A PYTHONPATH folder whose `psutil` fails to import, readable by process B's unprivileged user."""
    path = Path(tempfile.mkdtemp(prefix="ggd-nopsutil-"))
    (path / "psutil").mkdir()
    (path / "psutil" / "__init__.py").write_text("raise ImportError(\"No module named 'psutil' (hidden)\")\n")
    for p in (path, path / "psutil"):
        os.chmod(p, 0o755)
    os.chmod(path / "psutil" / "__init__.py", 0o644)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _children(pid: int) -> list:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rfind(")") + 2:].split()[1]) == pid:
                out.append(int(name))
    return out


def _loaded_psutil(pid: int) -> bool:
    try:
        return "_psutil_" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def test_component_runs_without_psutil(tmp_path, hide_psutil):
    cfg = full_configuration()
    cfg["Collector"].update({"DevelopmentSampleIntervalSeconds": "3", "StartJitterPercent": "0"})
    cfg["Remediation"].update({"ReplyTimeoutSeconds": "3", "RetryInitialSeconds": "0.5"})
    target = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        with harness.LocalCore(tmp_path / "core", thing=THING) as core:
            reports = core.capture_iot(f"$aws/things/{THING}/defender/metrics/json")
            health = core.capture_iot(f"ggdefender/things/{THING}/health")
            env = core.add_component(COMPONENT, configuration=cfg)
            (tmp_path / "state").mkdir()
            env["GGDEFENDER_STATE_DIR"] = str(tmp_path / "state")
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(hide_psutil), env.get("PYTHONPATH")) if p)
            a = core.spawn(COMPONENT, [sys.executable, "-m", "ggdefender", "run"], env=env)

            def full(msgs) -> list:
                return [json.loads(m[1]) for m in list(msgs)
                        if set(BUILTINS) <= set(json.loads(m[1]).get("custom_metrics", {}))]

            try:
                reports.wait_for(lambda msgs: a.poll() is not None or len(full(msgs)) >= 2, timeout=120)
            except TimeoutError as exc:
                pytest.fail(f"{exc}\n--- component log:\n{core.log_text(COMPONENT)[-4000:]}")
            assert a.poll() is None, core.log_text(COMPONENT)[-4000:]
            cloud = core.service("DefenderService")
            ids = [r["header"]["report_id"] for r in full(reports)[:2]]
            wait_until(lambda: set(ids) <= {item["reportId"] for item in cloud.accepted}, 30,
                       f"the offline Device Defender accepting reports {ids}")
            assert not list(cloud.rejected)
            b = _children(a.pid)
            assert b and not _loaded_psutil(a.pid) and not any(_loaded_psutil(pid) for pid in b)

            health.wait_for(lambda msgs: any("remediation" in json.loads(m[1]) for m in list(msgs)), timeout=30)
            doc = next(json.loads(m[1]) for m in list(health) if "remediation" in json.loads(m[1]))
            unavailable = doc["remediation"]["unavailableOperations"]
            assert set(unavailable) == {"kill-process", "stop-listener"}
            assert all("psutil" in reason for reason in unavailable.values())

            jobs = core.service("JobsService")
            jobs.create_job({"schema": OURS, "steps": [
                {"operation": "collect-now"},
                {"operation": "kill-process", "arguments": {"pid": target.pid}}]}, "kill-no-psutil")
            done = jobs.wait_for("kill-no-psutil", FINAL, timeout=60)
            reason = done["statusDetails"]["reason"]
            assert done["status"] == "REJECTED", done["statusDetails"]
            assert "kill-process" in reason and "psutil" in reason and os.uname().machine in reason
            assert target.poll() is None  # nothing was signalled

            jobs.create_job({"schema": OURS, "steps": [{"operation": "collect-now"}]}, "collect-no-psutil")
            other = jobs.wait_for("collect-no-psutil", FINAL, timeout=60)
            assert other["status"] == "SUCCEEDED", other["statusDetails"]
    finally:
        target.kill()
        target.wait(5)
