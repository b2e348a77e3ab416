"""The executor: pre-flight (nothing half-done), dry run, resume after a restart, audit lines."""

import subprocess
import sys

import pytest

from fake_ipc import FakeIpc
from ggdefender.remediation import config, documents
from ggdefender.remediation.executor import Executor
from ggdefender.remediation.safety import SafetyPolicy

OURS = "ggdefender.remediation/1"


def a_ipc():
    """Process A's IPC handle (the shared fake) with the Collector section set-config reads."""
    return FakeIpc({"Collector": {"SampleIntervalSeconds": "300"}})


def _sleep():
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])


@pytest.fixture
def sleeper():
    proc = _sleep()
    yield proc
    proc.kill()
    proc.wait(5)


@pytest.fixture(scope="module")
def component():
    """Stands in for the component's own process: the test's children are then not its descendants."""
    proc = _sleep()
    yield proc
    proc.kill()
    proc.wait(5)


@pytest.fixture
def make(component):
    def factory(settings=None):
        settings = settings or config.parse({})
        audit = []
        ipc = a_ipc()
        policy = SafetyPolicy(settings, own_pid=component.pid)
        return Executor(settings, policy, ipc, audit_sink=audit.append), audit, ipc
    return factory


def plan(*steps, settings=None, **extra):
    return documents.parse(dict({"schema": OURS, "steps": list(steps)}, **extra), settings or config.parse({}))


def test_a_later_impossible_step_stops_the_job_before_the_first_step_runs(sleeper, component, make):
    ex, audit, _ = make()
    p = plan({"operation": "kill-process", "arguments": {"pid": sleeper.pid, "gracePeriodSeconds": 1}},
             {"operation": "kill-process", "arguments": {"pid": component.pid}})
    result = ex.execute(p, "job-x")
    assert result.status == "REJECTED" and "this component" in result.details["reason"]
    assert sleeper.poll() is None  # the first step never ran
    assert result.details["failedStep"] == "2-kill-process" and result.details["operation"] == "kill-process"
    # only the refusal is audited: one line naming the protected target, nothing for the step that never ran
    assert [(a["operation"], a["target"], a["result"]) for a in audit] == [
        ("kill-process", f"pid {component.pid}", "REJECTED")]


def test_dry_run_reports_and_changes_nothing(make):
    code = "import socket, time\ns = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1)\nprint(s.getsockname()[1], flush=True); time.sleep(600)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        ex, audit, _ = make()
        result = ex.execute(plan({"operation": "stop-listener", "arguments": {"port": port}}, dryRun=True), "job-d")
        assert result.status == "SUCCEEDED" and result.details["dryRun"] == "true"
        assert "would send SIGTERM" in result.details["summary"] and str(proc.pid) in result.details["pids"]
        assert proc.poll() is None
        assert audit[0]["result"] == "DRY-RUN" and audit[0]["target"] == f"tcp/{port}"
    finally:
        proc.kill()
        proc.wait(5)


def test_kill_process_success_is_audited(sleeper, make):
    ex, audit, _ = make()
    result = ex.execute(plan({"operation": "kill-process", "arguments": {"pid": sleeper.pid}}), "job-k")
    assert result.status == "SUCCEEDED", result.details
    assert sleeper.wait(5) is not None
    assert audit == [{"job": "job-k", "operation": "kill-process", "target": f"pid {sleeper.pid}",
                      "result": "SUCCEEDED", "dryRun": False, "detail": audit[0]["detail"]}]


def test_vanished_pid_is_rejected(make):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(10)
    ex, _, _ = make()
    result = ex.execute(plan({"operation": "kill-process", "arguments": {"pid": proc.pid}}), "job-v")
    assert result.status == "REJECTED" and "no process" in result.details["reason"]


def test_interrupted_restart_component_counts_as_done(make):
    ex, _, ipc = make()
    result = ex.execute(plan({"operation": "restart-component"}), "job-r", done_steps=0, interrupted=0)
    assert result.status == "SUCCEEDED" and ipc.changes == []


def test_interrupted_handler_is_not_rerun(make):
    settings = config.parse({"HandlerDirectory": "/nonexistent", "HandlerUser": "nobody"})
    ex, _, _ = make(settings)
    p = documents.parse({"version": "1.0", "steps": [{"action": {"name": "h", "type": "runHandler",
                                                                 "input": {"handler": "x.sh"}}}]}, settings)
    result = ex.execute(p, "job-h", done_steps=0, interrupted=0)
    assert result.status == "FAILED" and "interrupted by a restart" in result.details["reason"]


def test_set_config_goes_through_ipc_and_checks_kinds(make):
    ex, _, ipc = make()
    ok = ex.execute(plan({"operation": "set-config", "arguments": {"section": "Collector",
                                                                   "values": {"SampleIntervalSeconds": 600}}}), "j")
    assert ok.status == "SUCCEEDED" and ipc.changes == [("update_config", ["Collector"], {"SampleIntervalSeconds": 600})]
    bad = ex.execute(plan({"operation": "set-config", "arguments": {"section": "Collector",
                                                                    "values": {"SampleIntervalSeconds": True}}}), "j")
    assert bad.status == "REJECTED" and "refusing" in bad.details["reason"]


@pytest.mark.parametrize("values", [{"DevelopmentSampleIntervalSeconds": -5}, {"MaxReportBytes": 10}])
def test_set_config_rejects_what_the_collector_would_reject_before_writing(make, values):
    from ggdefender.collector import config as collector_config
    from ggdefender.settings import ConfigError

    settings = config.parse({"SetConfigAllowedKeys": ["Collector/DevelopmentSampleIntervalSeconds",
                                                      "Collector/MaxReportBytes"]})
    ex, audit, ipc = make(settings)
    result = ex.execute(plan({"operation": "set-config", "arguments": {"section": "Collector", "values": values}},
                             settings=settings), "j")
    assert result.status == "REJECTED" and ipc.changes == []
    # the reason is the collector's own parser's verdict on the section as it would be after the change
    with pytest.raises(ConfigError) as verdict:
        collector_config.parse(dict(a_ipc().get_config(["Collector"]), **values))
    assert str(verdict.value) in result.details["reason"]
    assert audit[-1]["result"] == "REJECTED"


def test_set_config_validates_the_merged_section_and_only_known_sections(make):
    settings = config.parse({"SetConfigAllowedKeys": ["Collector/PublishQos", "Logging/Level"]})
    ex, _, ipc = make(settings)
    ok = ex.execute(plan({"operation": "set-config", "arguments": {"section": "Collector",
                                                                   "values": {"PublishQos": 0}}}, settings=settings), "j")
    assert ok.status == "SUCCEEDED", ok.details
    with pytest.raises(documents.DocumentError, match="only the Collector, Detect, Plugins sections"):
        plan({"operation": "set-config", "arguments": {"section": "Logging", "values": {"Level": "x"}}}, settings=settings)


def test_set_config_on_plugins_uses_the_plugin_host_rule_without_loading_installed_plugins(make, monkeypatch):
    from ggdefender.plugins import registry

    monkeypatch.setattr(registry, "discover", lambda *a: pytest.fail("installed plugin code imported in process A"))
    settings = config.parse({"SetConfigAllowedKeys": ["Plugins/TimeoutSeconds"]})
    ex, _, ipc = make(settings)
    bad = ex.execute(plan({"operation": "set-config", "arguments": {"section": "Plugins",
                                                                    "values": {"TimeoutSeconds": 0}}},
                          settings=settings), "j")
    assert bad.status == "REJECTED" and "Plugins.TimeoutSeconds" in bad.details["reason"] and ipc.changes == []
    ok = ex.execute(plan({"operation": "set-config", "arguments": {"section": "Plugins",
                                                                   "values": {"TimeoutSeconds": 2}}},
                         settings=settings), "j")
    assert ok.status == "SUCCEEDED", ok.details


@pytest.fixture
def reboot_setup(make, tmp_path, monkeypatch):
    """A harmless RebootCommand (writes a marker) and a fake boot id: this machine is never rebooted."""
    from ggdefender.remediation.operations import reboot

    script = tmp_path / "fake-reboot"
    script.write_text(f"#!/bin/sh\necho requested >> {tmp_path}/reboot-requested\n")
    script.chmod(0o755)
    boot = {"id": "boot-1"}
    monkeypatch.setattr(reboot, "current_boot_id", lambda: boot["id"])
    settings = config.parse({"AllowedOperations": ["reboot"], "RebootCommand": [str(script)],
                             "RebootTimeoutSeconds": 5})
    ex, audit, _ = make(settings)
    reboot_plan = documents.parse({"version": "1.0", "steps": [{"action": {
        "name": "Reboot", "type": "runHandler", "input": {"handler": "reboot.sh"}}}]}, settings)
    return ex, reboot_plan, boot, tmp_path / "reboot-requested"


def test_reboot_is_requested_after_the_marker_is_recorded_and_fails_without_a_reboot(reboot_setup):
    ex, reboot_plan, boot, requested = reboot_setup
    steps = []

    def on_step(index, phase, marker=None):
        steps.append((index, phase, marker, requested.exists()))

    result = ex.execute(reboot_plan, "reboot#1", on_step=on_step)
    # the boot marker was handed over (journal + IN_PROGRESS) before the reboot command ran
    assert steps[0][:2] == (0, "started") and steps[0][2]["bootId"] == "boot-1" and steps[0][3] is False
    assert requested.read_text() == "requested\n"
    assert result.status == "FAILED" and "did not reboot within 5s" in result.details["reason"]


def test_after_a_reboot_the_step_is_done(reboot_setup):
    import time

    ex, reboot_plan, boot, requested = reboot_setup
    boot["id"] = "boot-2"
    result = ex.execute(reboot_plan, "reboot#1", interrupted=0,
                        marker={"bootId": "boot-1", "requestedAt": time.time() - 30})
    assert result.status == "SUCCEEDED", result.details
    assert result.details["previousBootId"] == "boot-1" and result.details["bootId"] == "boot-2"
    assert not requested.exists()  # never requested again


def test_same_boot_after_the_expected_time_fails(reboot_setup):
    import time

    ex, reboot_plan, boot, requested = reboot_setup
    result = ex.execute(reboot_plan, "reboot#1", interrupted=0,
                        marker={"bootId": "boot-1", "requestedAt": time.time() - 30})
    assert result.status == "FAILED" and "boot id unchanged" in result.details["reason"]
    result = ex.execute(reboot_plan, "reboot#1", interrupted=0, marker=None)
    assert result.status == "FAILED" and "before the reboot was requested" in result.details["reason"]
