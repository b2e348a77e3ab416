"""Detect and remediation on the real nucleus lite: a listener the profile does not allow raises a violation,
a remediation job (created in the offline Jobs service, delivered through lite's iotcored) stops it and
ends SUCCEEDED, and the next report clears the violation."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

LISTENER = ("import socket, time\n"
            "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(5)\n"
            "print(s.getsockname()[1], flush=True)\n"
            "time.sleep(600)\n")
OURS = "ggdefender.remediation/1"


def _violations(lite, kind: str, port: int):
    topic = f"ggdefender/things/{lite.thing}/violations"

    def match(at, t, p):
        if t != topic:
            return False
        event = json.loads(p)
        return event.get("violationEventType") == kind and port in event.get("offendingValues", [])
    return match


def test_rogue_listener_raises_violation_job_stops_it_and_violation_clears(lite):
    # the listener lives in lite's network namespace, where the component's collector sees sockets
    rogue = subprocess.Popen(["nsenter", "-t", str(lite.core.netns_pid), "-n", sys.executable, "-c", LISTENER],
                             stdout=subprocess.PIPE, text=True)
    try:
        port = int(rogue.stdout.readline())
        _, _, payload = lite.observer.wait_for(_violations(lite, "in-alarm", port), 90,
                                               f"a violation for the listener on {port}")
        alarm = json.loads(payload)
        assert alarm["thingName"] == lite.thing and alarm["securityProfileName"] == "ExpectedListeners"

        job = lite.jobs.create_job({"schema": OURS, "steps": [
            {"operation": "stop-listener", "arguments": {"port": port, "gracePeriodSeconds": 2}}]}, "lite-stop")
        assert job["status"] == "QUEUED"
        done = lite.jobs.wait_for("lite-stop", ("SUCCEEDED", "FAILED", "REJECTED"), timeout=90)
        assert done["status"] == "SUCCEEDED", done["statusDetails"]
        assert done["statusDetails"]["portClosed"] == "true"
        assert rogue.wait(10) is not None

        _, _, payload = lite.observer.wait_for(
            lambda at, t, p: _violations(lite, "alarm-cleared", port)(at, t, p) or (
                t.endswith("/violations") and json.loads(p).get("violationId") == alarm["violationId"]
                and json.loads(p).get("violationEventType") == "alarm-cleared"),
            60, "the violation cleared")
        assert json.loads(payload)["violationId"] == alarm["violationId"]
    finally:
        rogue.kill()
        rogue.wait(5)


def test_restart_component_job_fails_with_lites_answer_and_the_component_keeps_running(lite):
    # RestartComponent needs gghealthd (systemd) on lite, which answers FAILED: the job ends FAILED saying so,
    # and the listener takes the next job
    lite.jobs.create_job({"schema": OURS, "steps": [{"operation": "restart-component"}]}, "lite-restart")
    done = lite.jobs.wait_for("lite-restart", ("SUCCEEDED", "FAILED", "REJECTED"), timeout=90)
    assert done["status"] == "FAILED", done["statusDetails"]
    assert done["statusDetails"]["reason"] == "RestartComponent(ggdefender.Defender) answered FAILED"
    lite.jobs.create_job({"schema": OURS, "steps": [{"operation": "collect-now"}]}, "lite-after-restart")
    after = lite.jobs.wait_for("lite-after-restart", ("SUCCEEDED", "FAILED", "REJECTED"), timeout=90)
    assert after["status"] == "SUCCEEDED", after["statusDetails"]
