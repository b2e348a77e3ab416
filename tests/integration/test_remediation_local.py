"""Remediation jobs end to end under `ggdefender local`, over the real IPC protocol.

The component's own process A (`python -m ggdefender run`: supervisor + remediation listener + the collector
in process B) runs as `ggdefender.Defender` with the recipe's real accessControl; jobs are created in the
offline IoT Jobs service (local/jobs.py) exactly as `ggdefender local jobs create` does.
"""

import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

harness = pytest.importorskip("ggdefender.local.harness", reason="the local core harness is not in this build")

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "ggdefender.Defender.yaml"
THING = "remThing"
COMPONENT = "ggdefender.Defender"
OURS = "ggdefender.remediation/1"


def _default_config() -> dict:
    recipe = yaml.safe_load(RECIPE.read_text())
    return copy.deepcopy(recipe["ComponentConfiguration"]["DefaultConfiguration"])


def _config(remediation: dict | None = None) -> dict:
    cfg = _default_config()
    cfg["Collector"]["DevelopmentSampleIntervalSeconds"] = "3"
    cfg["Collector"]["StartJitterPercent"] = "0"
    cfg["Remediation"].update({"ReplyTimeoutSeconds": "3", "RetryInitialSeconds": "0.5"})
    cfg["Remediation"].update(remediation or {})
    return cfg


class Component:
    """Process A of ggdefender.Defender started as the local core would start it."""

    def __init__(self, core, tmp_path: Path, config: dict, argv=None):
        self.core = core
        self.state = tmp_path / "state"
        self.state.mkdir(exist_ok=True)
        self.env = core.add_component(COMPONENT, configuration=config)
        self.env["GGDEFENDER_STATE_DIR"] = str(self.state)
        self.argv = argv or [sys.executable, "-m", "ggdefender", "run"]
        self.proc = None

    def start(self):
        self.proc = self.core.spawn(COMPONENT, self.argv, env=self.env)
        return self

    def kill(self):
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


def _listener_process(protocol: str = "tcp"):
    """A real process listening on a free loopback port; returns (Popen, port)."""
    code = (
        "import socket, sys, time\n"
        f"s = socket.socket(socket.AF_INET, socket.{'SOCK_STREAM' if protocol == 'tcp' else 'SOCK_DGRAM'})\n"
        "s.bind(('127.0.0.1', 0))\n"
        + ("s.listen(5)\n" if protocol == "tcp" else "")
        + "print(s.getsockname()[1], flush=True)\n"
        "time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())
    return proc, port


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _reports(cap) -> list:
    out = []
    for topic, payload, *_ in list(cap):
        if topic.endswith("/json"):
            out.append(json.loads(payload))
    return out


def _tcp_ports(report: dict) -> set:
    ports = report.get("metrics", {}).get("listening_tcp_ports", {}).get("ports", [])
    return {p["port"] for p in ports}


@pytest.fixture
def core(tmp_path):
    with harness.LocalCore(tmp_path / "core", thing=THING) as c:
        yield c


def _jobs(core):
    return core.service("JobsService")


def test_seed_scenario_stop_listener_job_then_report_no_longer_lists_port(core, tmp_path):
    target, port = _listener_process()
    try:
        reports = core.capture_iot(f"$aws/things/{THING}/defender/metrics/json")
        Component(core, tmp_path, _config()).start()
        reports.wait_for(lambda msgs: any(port in _tcp_ports(r) for r in _reports(msgs)), timeout=90)

        doc = {"schema": OURS, "steps": [
            {"operation": "stop-listener", "arguments": {"port": port, "gracePeriodSeconds": 2}},
            {"operation": "collect-now"}]}
        doc_file = tmp_path / "stop-port.json"
        doc_file.write_text(json.dumps(doc))
        # the same path as `ggdefender local jobs create --root ... --document stop-port.json`
        created = core.control("jobs-create", {"document": json.loads(doc_file.read_text()), "jobId": "stop-port"})
        assert created["status"] == "QUEUED"
        done = _jobs(core).wait_for("stop-port", ("SUCCEEDED", "FAILED", "REJECTED"), timeout=90)
        details = done["statusDetails"]
        assert done["status"] == "SUCCEEDED", details
        assert details["port"] == str(port) and details["portClosed"] == "true"
        assert str(target.pid) in details["pids"]
        assert target.wait(10) is not None and not _port_open(port)
        report_id = int(details["reportId"])
        reports.wait_for(lambda msgs: any(r["header"]["report_id"] >= report_id for r in _reports(msgs)), timeout=30)
        fresh = [r for r in _reports(reports) if r["header"]["report_id"] >= report_id]
        assert fresh and all(port not in _tcp_ports(r) for r in fresh)
        assert "AUDIT" in core.log_text(COMPONENT) and '"operation": "stop-listener"' in core.log_text(COMPONENT)
    finally:
        target.kill()
        target.wait(5)
