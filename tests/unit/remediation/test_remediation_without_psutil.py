"""Remediation where psutil cannot be imported (no wheel for the platform): the operations that signal
processes are unavailable and a job using one is REJECTED before anything runs, naming psutil and the
platform; the safety policy refuses every process instead of guessing (fails closed); the rest works."""

import os
import subprocess
import sys

import psutil
import pytest

from ggdefender.remediation import config, documents, operations, process_library, safety
from ggdefender.remediation.executor import Executor
from ggdefender.remediation.operations import kill_process, stop_listener
from ggdefender.remediation.operations.base import Context, Rejected

OURS = "ggdefender.remediation/1"
SETTINGS = config.parse({})
REASON = "psutil is not available on this device (linux armv7l, Python 3.11: No module named 'psutil')"
PSUTIL_OPERATIONS = {"kill-process", "stop-listener"}


@pytest.fixture
def no_psutil(monkeypatch):
    monkeypatch.setattr(process_library, "_load", lambda: (None, REASON))


def test_the_operations_that_need_psutil_declare_it():
    assert {name for name in operations.names() if operations.declaration(name).needs_psutil} == PSUTIL_OPERATIONS
    assert operations.unavailable() == {}  # psutil is installed here


def test_without_psutil_exactly_those_are_unavailable_with_the_reason(no_psutil):
    assert operations.unavailable() == {name: f"needs psutil: {REASON}" for name in PSUTIL_OPERATIONS}


@pytest.mark.parametrize("steps", [
    [{"operation": "kill-process", "arguments": {"pid": 4242}}],
    [{"operation": "stop-listener", "arguments": {"port": 8888}}],
    # a later step using one rejects the whole job: the first step never runs
    [{"operation": "collect-now"}, {"operation": "kill-process", "arguments": {"name": "nc"}}],
])
def test_a_job_using_one_is_rejected_before_anything_runs(no_psutil, steps):
    with pytest.raises(documents.DocumentError) as err:
        documents.parse({"schema": OURS, "steps": steps}, SETTINGS)
    message = str(err.value)
    assert "is unavailable on this device" in message and "psutil" in message and "linux armv7l" in message


def test_a_local_mitigation_request_is_rejected_the_same_way(no_psutil):
    msg = {"requestId": "r1", "operation": "stop-listener", "arguments": {"port": 8888}}
    with pytest.raises(documents.DocumentError, match="needs psutil"):
        documents.parse(documents.request_to_document(msg), SETTINGS)


def test_jobs_without_those_operations_still_parse(no_psutil):
    plan = documents.parse({"schema": OURS, "steps": [{"operation": "collect-now"}]}, SETTINGS)
    assert [s.operation for s in plan.steps] == ["collect-now"]


def test_the_safety_policy_fails_closed_without_psutil(no_psutil):
    policy = safety.SafetyPolicy(SETTINGS)
    with pytest.raises(Rejected, match="psutil is not available"):
        policy.refusal_for(psutil.Process(os.getpid()))
    with pytest.raises(Rejected, match="psutil is not available"):
        policy.own_pids()
    # the pure rules need no psutil at all
    assert safety.protection_reason(safety.ProcessInfo(pid=1, ppid=0, name="init"))


def test_operations_reached_anyway_reject_and_signal_nothing(no_psutil):
    target = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        ctx = Context(settings=SETTINGS, safety=safety.SafetyPolicy(SETTINGS))
        with pytest.raises(Rejected, match="needs it to vet and signal processes safely"):
            kill_process.run({"pid": target.pid}, ctx)
        with pytest.raises(Rejected, match="psutil"):
            stop_listener.run({"port": 1}, ctx)
        plan = documents.Plan(format="ggdefender", steps=[documents.Step(
            name="k", operation="kill-process", arguments={"pid": target.pid})])
        result = Executor(SETTINGS, safety.SafetyPolicy(SETTINGS)).execute(plan, "t")
        assert result.status == "REJECTED" and "psutil" in result.details["reason"]
        assert target.poll() is None
    finally:
        target.kill()
        target.wait(5)


def test_the_reason_names_the_platform_when_psutil_is_really_missing(tmp_path):
    shim = tmp_path / "psutil"
    shim.mkdir()
    (shim / "__init__.py").write_text("raise ImportError(\"No module named 'psutil'\")\n")
    code = ("from ggdefender.remediation import operations; u = operations.unavailable(); "
            "print(sorted(u)); print(u['kill-process'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path])))
    assert out.returncode == 0, out.stderr
    names, reason = out.stdout.splitlines()
    assert names == "['kill-process', 'stop-listener']"
    assert f"{sys.platform} {os.uname().machine}, Python {sys.version_info[0]}.{sys.version_info[1]}" in reason
    assert "No module named 'psutil'" in reason


def test_detect_s_stop_listener_mitigation_is_refused_by_the_gate_naming_psutil(no_psutil):
    from ggdefender.remediation import mitigation_gate as G

    class Ipc:
        def get_config(self, key_path=None, component=None):
            return {"Detect": {"Mitigation": {"Enabled": True, "Actions": {"P/b": {"Operation": "stop-listener"}}}},
                    "Remediation": {}}[key_path[0]]

    class Listener:
        submitted: list = []

        def submit_mitigation(self, msg, on_result):
            self.submitted.append(msg)

    code = ("import socket, time\ns = socket.socket()\ns.bind(('127.0.0.1', 0))\ns.listen()\n"
            "print(s.getsockname()[1], flush=True)\ntime.sleep(60)\n")
    owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        port = int(owner.stdout.readline())
        gate = G.MitigationGate(Ipc(), observe=G.observe_target, preflight=G._preflight)
        listener = Listener()
        gate.attach(listener)
        with pytest.raises(G.Refused, match="needs psutil"):
            gate.submit({"requestId": "d-1", "operation": "stop-listener", "target": {"port": port, "protocol": "tcp"},
                         "profile": "P", "behavior": "b", "violationId": "v-1"})
        assert listener.submitted == [] and owner.poll() is None
    finally:
        owner.kill()
        owner.wait(10)
