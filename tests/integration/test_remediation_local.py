"""Remediation jobs end to end under `ggdefender local`, over the real IPC protocol.

The component's own process A (`python -m ggdefender run`: supervisor + remediation listener + the collector
in process B) runs as `ggdefender.Defender` with the recipe's real accessControl; jobs are created in the
offline IoT Jobs service (local/cloud/jobs_service.py) exactly as `ggdefender local jobs create` does.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from component_build import full_configuration, port_open, wait_until

pytestmark = pytest.mark.integration

from ggdefender.local.ui import harness

THING = "remThing"
COMPONENT = "ggdefender.Defender"
OURS = "ggdefender.remediation/1"


def _default_config() -> dict:
    return full_configuration()


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
        assert target.wait(10) is not None and not port_open(port)
        report_id = int(details["reportId"])
        reports.wait_for(lambda msgs: any(r["header"]["report_id"] >= report_id for r in _reports(msgs)), timeout=30)
        fresh = [r for r in _reports(reports) if r["header"]["report_id"] >= report_id]
        assert fresh and all(port not in _tcp_ports(r) for r in fresh)
        core.wait_for_log(COMPONENT, "AUDIT", '"operation": "stop-listener"')
    finally:
        target.kill()
        target.wait(5)


def _journal(state: Path) -> dict:
    try:
        return json.loads((state / "supervisor" / "remediation-journal.json").read_text())["entries"]
    except (FileNotFoundError, ValueError):
        return {}


def test_unknown_operation_and_protected_target_are_rejected_without_side_effects(core, tmp_path):
    Component(core, tmp_path, _config()).start()
    jobs = _jobs(core)
    jobs.create_job({"schema": OURS, "steps": [{"operation": "format-disk", "arguments": {}}]}, "unknown-op")
    unknown = jobs.wait_for("unknown-op", ("SUCCEEDED", "FAILED", "REJECTED"), timeout=60)
    assert unknown["status"] == "REJECTED"
    assert "format-disk" in unknown["statusDetails"]["reason"]

    jobs.create_job({"schema": OURS, "steps": [{"operation": "kill-process", "arguments": {"pid": 1}}]}, "pid-one")
    pid_one = jobs.wait_for("pid-one", ("SUCCEEDED", "FAILED", "REJECTED"), timeout=60)
    assert pid_one["status"] == "REJECTED"
    assert "$.steps[0].arguments.pid" in pid_one["statusDetails"]["reason"]

    # a job aimed at the listener's own process is refused as well (and the process keeps running)
    me = [p for p in core._children if p.poll() is None][-1]
    jobs.create_job({"schema": OURS, "steps": [{"operation": "kill-process", "arguments": {"pid": me.pid}}]}, "self")
    self_job = jobs.wait_for("self", ("SUCCEEDED", "FAILED", "REJECTED"), timeout=60)
    assert self_job["status"] == "REJECTED" and "this component" in self_job["statusDetails"]["reason"]
    assert me.poll() is None


@pytest.fixture
def shared_tmp():
    """A directory another user can reach (pytest's tmp_path sits under a root-only 0700 folder)."""
    path = Path(tempfile.mkdtemp(prefix="ggd-rem-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _handler_dir(base: Path, name: str, body: str) -> Path:
    hdir = base / "handlers"
    hdir.mkdir(mode=0o755, exist_ok=True)
    handler = hdir / name
    handler.write_text(body)
    os.chmod(handler, 0o755)
    return hdir


@pytest.mark.skipif(os.geteuid() != 0, reason="runs the handler as another user: needs root")
def test_device_client_run_handler_document(core, tmp_path, shared_tmp):
    hdir = _handler_dir(shared_tmp, "echo-args.sh",
                        '#!/bin/sh\necho "user=$(id -un) runAs=[$1] args=[$2] [$3]"\necho "to stderr" >&2\n')
    Component(core, tmp_path, _config({"HandlerDirectory": str(hdir), "HandlerUser": "nobody"})).start()
    jobs = _jobs(core)
    # the Device Client "1.0" schema as the AWS managed templates write it; the argument is not a shell
    doc = {"version": "1.0", "includeStdOut": "true", "steps": [{"action": {
        "name": "Echo", "type": "runHandler", "allowStdErr": 1,
        "input": {"handler": "echo-args.sh", "args": ["8888", "a;b $(touch /tmp/pwned) `id`"], "path": "default"}}}]}
    jobs.create_job(doc, "dc-handler")
    done = jobs.wait_for("dc-handler", ("SUCCEEDED", "FAILED", "REJECTED"), timeout=60)
    assert done["status"] == "SUCCEEDED", done["statusDetails"]
    out = done["statusDetails"]["stdout"]
    assert "user=nobody runAs=[] args=[8888] [a;b $(touch /tmp/pwned) `id`]" in out
    assert done["statusDetails"]["format"] == "device-client"

    # path traversal and runCommand (off by default) are REJECTED before anything runs
    bad = dict(doc, steps=[{"action": {"name": "x", "type": "runHandler",
                                       "input": {"handler": "../../bin/sh", "args": ["-c", "id"]}}}])
    jobs.create_job(bad, "dc-traversal")
    rejected = jobs.wait_for("dc-traversal", ("SUCCEEDED", "FAILED", "REJECTED"), timeout=60)
    assert rejected["status"] == "REJECTED" and "plain file name" in rejected["statusDetails"]["reason"]
    cmd = {"version": "1.0", "steps": [{"action": {"name": "c", "type": "runCommand",
                                                   "input": {"command": "sh,-c,id"}}}]}
    jobs.create_job(cmd, "dc-command")
    rejected = jobs.wait_for("dc-command", ("SUCCEEDED", "FAILED", "REJECTED"), timeout=60)
    assert rejected["status"] == "REJECTED" and "AllowRunCommand" in rejected["statusDetails"]["reason"]


def test_duplicate_notifications_execute_once(core, tmp_path, shared_tmp):
    marker = shared_tmp / "runs.log"
    marker.touch()
    os.chmod(marker, 0o666)
    hdir = _handler_dir(shared_tmp, "count.sh", f'#!/bin/sh\necho run >> {marker}\nsleep 1\n')
    user = "nobody" if os.geteuid() == 0 else ""
    Component(core, tmp_path, _config({"HandlerDirectory": str(hdir), "HandlerUser": user})).start()
    jobs = _jobs(core)
    doc = {"version": "1.0", "steps": [{"action": {"name": "Count", "type": "runHandler",
                                                   "input": {"handler": "count.sh"}}}]}
    jobs.create_job(doc, "dup")
    wait_until(lambda: marker.read_text(), 60, "the handler never ran")
    # the same notifications again while it runs and after it finished (MQTT is at-least-once)
    with jobs.lock:
        execution = jobs._execution(jobs._latest(THING, "dup"))
    for _ in range(3):
        core.publish_iot(f"$aws/things/{THING}/jobs/notify-next", json.dumps({"timestamp": 1, "execution": execution}))
        core.publish_iot(f"$aws/things/{THING}/jobs/notify", json.dumps(
            {"timestamp": 1, "jobs": {"IN_PROGRESS": [{"jobId": "dup", "executionNumber": 1, "versionNumber": 2}]}}))
    done = jobs.wait_for("dup", ("SUCCEEDED", "FAILED", "REJECTED"), timeout=60)
    assert done["status"] == "SUCCEEDED", done["statusDetails"]
    for _ in range(3):
        core.publish_iot(f"$aws/things/{THING}/jobs/notify-next", json.dumps({"timestamp": 2, "execution": execution}))
    # a second job proves the listener went on looking at the queue after the duplicates
    jobs.create_job(doc, "after")
    assert jobs.wait_for("after", ("SUCCEEDED", "FAILED", "REJECTED"), timeout=60)["status"] == "SUCCEEDED"
    assert marker.read_text().count("run") == 2


def test_restart_mid_job_resumes_and_finishes(core, tmp_path):
    # a listener that ignores SIGTERM, so stop-listener waits out its grace period: we kill the component then
    code = ("import signal, socket, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(5)\n"
            "print(s.getsockname()[1], flush=True)\ntime.sleep(600)\n")
    target = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    port = int(target.stdout.readline())
    try:
        comp = Component(core, tmp_path, _config()).start()
        jobs = _jobs(core)
        jobs.create_job({"schema": OURS, "steps": [
            {"operation": "stop-listener", "arguments": {"port": port, "gracePeriodSeconds": 6}}]}, "mid")
        wait_until(lambda: any(e.get("startedStep") == 0 for e in _journal(comp.state).values()), 60,
              "the step never started")
        comp.kill()  # the device loses power mid-job
        assert jobs.wait_for("mid", "IN_PROGRESS", timeout=5)["status"] == "IN_PROGRESS"
        assert target.poll() is None
        comp.start()  # Greengrass starts the component again
        done = jobs.wait_for("mid", ("SUCCEEDED", "FAILED", "REJECTED"), timeout=90)
        assert done["status"] == "SUCCEEDED", done["statusDetails"]
        assert str(target.pid) in done["statusDetails"]["killedAfterGrace"]
        assert target.wait(10) == -signal.SIGKILL
        # the service's acceptance reaches the device a moment later; the journal then closes the entry
        wait_until(lambda: _journal(comp.state)["mid#1"]["state"] == "acknowledged", 30, "never acknowledged")
    finally:
        target.kill()
        target.wait(5)


def test_a_request_on_the_old_public_topic_is_never_acted_on(core, tmp_path):
    # local pub/sub carries no sender identity, so the listener no longer takes requests from it at all
    target, port = _listener_process()
    try:
        results = core.capture_local("ggdefender/remediation/results")
        Component(core, tmp_path, _config()).start()
        jobs = _jobs(core)
        dry = {"schema": OURS, "dryRun": True, "steps": [{"operation": "collect-now"}]}
        jobs.create_job(dry, "listener-up")
        assert jobs.wait_for("listener-up", ("SUCCEEDED", "FAILED", "REJECTED"), timeout=90)["status"] == "SUCCEEDED"
        assert not any(sub.component == COMPONENT
                       for sub in core.core._local.matching("ggdefender/remediation/requests"))
        core.publish_local("ggdefender/remediation/requests", {
            "requestId": "req-evil", "operation": "stop-listener", "arguments": {"port": port},
            "reason": "attacker", "violationId": "v-attack"})
        # a later job runs to the end: the request, had it been queued, would have run before it
        jobs.create_job(dry, "after-attack")
        assert jobs.wait_for("after-attack", ("SUCCEEDED", "FAILED", "REJECTED"), timeout=90)["status"] == "SUCCEEDED"
        assert target.poll() is None and port_open(port)
        assert not [m for _, m, *_ in results if isinstance(m, dict) and m.get("requestId") == "req-evil"]
        assert "req-evil" not in core.log_text(COMPONENT)
    finally:
        target.kill()
        target.wait(5)


def _netns_ready() -> str:
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("ip", "nft"):
        if not shutil.which(tool):
            return f"{tool} is not installed"
    return ""


@pytest.mark.netns
@pytest.mark.skipif(bool(_netns_ready()), reason=_netns_ready() or "ok")
def test_block_and_unblock_ip_inside_a_network_namespace(core, tmp_path):
    ns = f"ggd-rem-{os.getpid()}"
    host_before = subprocess.run(["nft", "list", "table", "inet", "ggdefender"], capture_output=True).returncode
    made = subprocess.run(["ip", "netns", "add", ns], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {made.stderr.strip()}")
    try:
        # the listener alone, inside the namespace: its nft commands only ever see the namespace's firewall
        comp = Component(core, tmp_path, _config(),
                         argv=["ip", "netns", "exec", ns, sys.executable, "-m", "ggdefender.remediation.listener"])
        comp.start()
        jobs = _jobs(core)
        jobs.create_job({"schema": OURS, "steps": [{"operation": "block-ip",
                                                    "arguments": {"address": "203.0.113.7"}}]}, "block")
        done = jobs.wait_for("block", ("SUCCEEDED", "FAILED", "REJECTED"), timeout=60)
        assert done["status"] == "SUCCEEDED", done["statusDetails"]
        assert done["statusDetails"]["backend"] == "nft"
        listed = subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "set", "inet", "ggdefender", "blocked4"],
                                capture_output=True, text=True)
        assert "203.0.113.7" in listed.stdout, listed.stderr
        jobs.create_job({"schema": OURS, "steps": [{"operation": "unblock-ip",
                                                    "arguments": {"address": "203.0.113.7"}}]}, "unblock")
        assert jobs.wait_for("unblock", ("SUCCEEDED", "FAILED", "REJECTED"), timeout=60)["status"] == "SUCCEEDED"
        listed = subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "set", "inet", "ggdefender", "blocked4"],
                                capture_output=True, text=True)
        assert listed.returncode == 0 and "203.0.113.7" not in listed.stdout
        jobs.create_job({"schema": OURS, "steps": [{"operation": "block-ip", "arguments": {"address": "0.0.0.0/0"}}]},
                        "too-broad")
        assert jobs.wait_for("too-broad", ("SUCCEEDED", "FAILED", "REJECTED"), timeout=60)["status"] == "REJECTED"
    finally:
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
    host_after = subprocess.run(["nft", "list", "table", "inet", "ggdefender"], capture_output=True).returncode
    assert host_after == host_before  # the host's own firewall was never touched


def _cli(core, *args):
    return subprocess.run([sys.executable, "-m", "ggdefender", "local", "jobs", *args, "--root", str(core.root)],
                          capture_output=True, text=True, timeout=60)


def test_local_jobs_cli_create_list_describe_cancel(core, tmp_path):
    doc = tmp_path / "stop-port-8888.json"
    doc.write_text(json.dumps({"schema": OURS, "steps": [{"operation": "stop-listener", "arguments": {"port": 8888}}]}))
    created = _cli(core, "create", "--document", str(doc), "--job-id", "cli-1", "--timeout-minutes", "5")
    assert created.returncode == 0, created.stderr
    assert "created job cli-1 for remThing (execution 1 QUEUED)" in created.stdout
    listed = _cli(core, "list", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout)[0]["executionStatus"] == "QUEUED"
    described = json.loads(_cli(core, "describe", "cli-1").stdout)
    assert described["job"]["document"]["steps"][0]["arguments"]["port"] == 8888
    assert _cli(core, "cancel", "cli-1").returncode == 0
    assert "CANCELED" in _cli(core, "list").stdout
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    failed = _cli(core, "create", "--document", str(bad))
    assert failed.returncode == 2 and "cannot read job document" in failed.stderr
    dup = _cli(core, "create", "--document", str(doc), "--job-id", "cli-1")
    assert dup.returncode == 1 and "already exists" in dup.stderr


def _marker_dir(base: Path) -> Path:
    """A folder the handler's run user (nobody when root) can write its markers to."""
    d = base / "markers"
    d.mkdir(exist_ok=True)
    os.chmod(d, 0o777)
    return d


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return False


def _handler_config(hdir: Path, **extra) -> dict:
    return _config(dict({"HandlerDirectory": str(hdir), "HandlerUser": "nobody" if os.geteuid() == 0 else ""},
                        **extra))


def _dc(handler: str) -> dict:
    return {"version": "1.0", "steps": [{"action": {"name": handler, "type": "runHandler",
                                                    "input": {"handler": handler}}}]}


def test_cancel_force_stops_the_handler_and_its_child_and_nothing_is_reported_after(core, tmp_path, shared_tmp):
    marks = _marker_dir(shared_tmp)
    # the handler forks a child; both record their pid and sleep far longer than the test
    hdir = _handler_dir(shared_tmp, "long.sh", "#!/bin/sh\n"
                        f"sh -c 'echo $$ > {marks}/child.pid; exec sleep 600' &\n"
                        f"echo $$ > {marks}/handler.pid\nwait\n")
    _handler_dir(shared_tmp, "quick.sh", "#!/bin/sh\necho quick\n")
    comp = Component(core, tmp_path, _handler_config(hdir, DefaultGracePeriodSeconds="2")).start()
    jobs = _jobs(core)
    updates = core.capture_iot(f"$aws/things/{THING}/jobs/cancel-me/update")
    jobs.create_job(_dc("long.sh"), "cancel-me")

    def both_pids():
        try:
            return [int((marks / name).read_text()) for name in ("handler.pid", "child.pid")]
        except (FileNotFoundError, ValueError):  # not written yet
            return None

    pids = wait_until(both_pids, 60, "the handler and its child never started")
    assert all(_pid_alive(p) for p in pids)
    claims = len(updates)  # the IN_PROGRESS claim came before the cancel

    cancelled = _cli(core, "cancel", "--force", "cancel-me")
    assert cancelled.returncode == 0, cancelled.stderr
    assert jobs.wait_for("cancel-me", "CANCELED", timeout=5)["status"] == "CANCELED"
    # both end within the grace period (2 s) plus the cancel's round trip; bounded wait, not a speed claim
    wait_until(lambda: not any(_pid_alive(p) for p in pids), 30, f"still running: {pids}")

    # the listener goes on with the queue: a later job runs and is reported
    jobs.create_job(_dc("quick.sh"), "after-cancel")
    assert jobs.wait_for("after-cancel", ("SUCCEEDED", "FAILED", "REJECTED"), timeout=60)["status"] == "SUCCEEDED"
    # ...and nothing was ever published for the cancelled execution after the cancel
    assert len(updates) == claims, [json.loads(p) for _, p, *_ in list(updates)[claims:]]
    assert _journal(comp.state)["cancel-me#1"]["state"] == "canceled"
    assert jobs.describe("cancel-me")["executions"][0]["status"] == "CANCELED"


def test_remediation_enabled_is_live(core, tmp_path, shared_tmp):
    marks = _marker_dir(shared_tmp)
    hdir = _handler_dir(shared_tmp, "slow.sh", f"#!/bin/sh\necho started > {marks}/slow\nsleep 3\necho slow done\n")
    _handler_dir(shared_tmp, "quick.sh", "#!/bin/sh\necho quick\n")
    comp = Component(core, tmp_path, _handler_config(hdir, Enabled=False)).start()
    jobs = _jobs(core)
    core.wait_for_log(COMPONENT, "remediation is disabled", timeout=60)
    jobs.create_job(_dc("quick.sh"), "while-off")
    with pytest.raises(TimeoutError):  # not taken while disabled (a bounded look, not a speed claim)
        jobs.wait_for("while-off", ("IN_PROGRESS", "SUCCEEDED", "FAILED", "REJECTED"), timeout=4)

    # Enabled=true, live: the queued job is taken without restarting the component
    core.update_config(COMPONENT, {"MERGE": {"Remediation": {"Enabled": True}}})
    assert jobs.wait_for("while-off", ("SUCCEEDED", "FAILED", "REJECTED"), timeout=60)["status"] == "SUCCEEDED"

    # Enabled=false while a job runs: it finishes and is reported; the next one is not taken
    jobs.create_job(_dc("slow.sh"), "running")
    wait_until(lambda: (marks / "slow").exists(), 60, "the slow handler never started")
    core.update_config(COMPONENT, {"MERGE": {"Remediation": {"Enabled": False}}})
    jobs.create_job(_dc("quick.sh"), "queued-while-off")
    assert jobs.wait_for("running", ("SUCCEEDED", "FAILED", "REJECTED"), timeout=60)["status"] == "SUCCEEDED"
    core.wait_for_log(COMPONENT, "no longer listening for jobs", timeout=30)
    with pytest.raises(TimeoutError):
        jobs.wait_for("queued-while-off", ("IN_PROGRESS", "SUCCEEDED", "FAILED", "REJECTED"), timeout=4)
    core.update_config(COMPONENT, {"MERGE": {"Remediation": {"Enabled": True}}})
    assert jobs.wait_for("queued-while-off", ("SUCCEEDED", "FAILED", "REJECTED"), timeout=60)["status"] \
        == "SUCCEEDED"
    assert comp.proc.poll() is None  # never restarted


@pytest.mark.parametrize("values,key", [({"DevelopmentSampleIntervalSeconds": -5}, "DevelopmentSampleIntervalSeconds"),
                                        ({"MaxReportBytes": 10}, "MaxReportBytes")])
def test_set_config_with_a_value_the_collector_rejects_is_rejected_and_not_stored(core, tmp_path, values, key):
    allowed = ["Collector/DevelopmentSampleIntervalSeconds", "Collector/MaxReportBytes"]
    Component(core, tmp_path, _config({"SetConfigAllowedKeys": allowed})).start()
    before = core.get_config(COMPONENT, ["Collector"])
    jobs = _jobs(core)
    jobs.create_job({"schema": OURS, "steps": [{"operation": "set-config",
                                                "arguments": {"section": "Collector", "values": values}}]}, "bad-set")
    done = jobs.wait_for("bad-set", ("SUCCEEDED", "FAILED", "REJECTED"), timeout=60)
    assert done["status"] == "REJECTED", done["statusDetails"]
    assert key in done["statusDetails"]["reason"]
    assert core.get_config(COMPONENT, ["Collector"]) == before


def test_stop_listener_job_stops_every_owner_of_a_shared_socket_and_the_ipv6_one(core, tmp_path):
    # a pre-fork server (parent + 2 workers sharing one socket) and a separate IPv6 listener on the same port
    prefork = ("import os, socket, time\ns = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(8)\n"
               "pids = [os.getpid()]\nfor _ in range(2):\n    pid = os.fork()\n"
               "    if pid == 0:\n        time.sleep(600); os._exit(0)\n    pids.append(pid)\n"
               "print(s.getsockname()[1], *pids, flush=True)\ntime.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", prefork], stdout=subprocess.PIPE, text=True)
    port, *pids = map(int, parent.stdout.readline().split())
    v6_code = ("import socket, sys, time\ns = socket.socket(socket.AF_INET6)\n"
               "s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)\n"
               "s.bind(('::1', int(sys.argv[1]))); s.listen(8)\nprint('ready', flush=True)\ntime.sleep(600)\n")
    v6 = subprocess.Popen([sys.executable, "-c", v6_code, str(port)], stdout=subprocess.PIPE, text=True)
    assert v6.stdout.readline().strip() == "ready"
    owners = pids + [v6.pid]
    try:
        Component(core, tmp_path, _config()).start()
        jobs = _jobs(core)
        jobs.create_job({"schema": OURS, "steps": [
            {"operation": "stop-listener", "arguments": {"port": port, "gracePeriodSeconds": 2}}]}, "shared")
        done = jobs.wait_for("shared", ("SUCCEEDED", "FAILED", "REJECTED"), timeout=90)
        assert done["status"] == "SUCCEEDED", done["statusDetails"]
        assert done["statusDetails"]["portClosed"] == "true"
        assert all(str(pid) in done["statusDetails"]["pids"] for pid in owners)
        wait_until(lambda: not any(_pid_alive(p) for p in owners), 30, "an owner survived")
        assert not port_open(port)
    finally:
        for pid in owners:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        parent.wait(5)
        v6.wait(5)


def test_aws_reboot_template_reports_a_boot_marker_and_fails_when_no_reboot_follows(core, tmp_path, shared_tmp):
    # never reboots this machine: RebootCommand is a harmless script that only records the request
    requested = shared_tmp / "reboot-requested"
    fake = shared_tmp / "fake-reboot"
    fake.write_text(f"#!/bin/sh\necho requested >> {requested}\n")
    os.chmod(fake, 0o755)
    aws_reboot = {"version": "1.0", "steps": [{"action": {
        "name": "Reboot", "type": "runHandler", "runAsUser": "", "input": {"handler": "reboot.sh", "path": ""}}}]}
    jobs = _jobs(core)

    # not allow-listed by default: REJECTED with the reason, nothing requested
    first = Component(core, tmp_path, _config()).start()
    jobs.create_job(aws_reboot, "reboot-off")
    off = jobs.wait_for("reboot-off", ("SUCCEEDED", "FAILED", "REJECTED"), timeout=60)
    assert off["status"] == "REJECTED" and "AllowedOperations" in off["statusDetails"]["reason"]
    first.kill()

    comp = Component(core, tmp_path, _config({
        "AllowedOperations": ["reboot"], "RebootCommand": [str(fake)], "RebootTimeoutSeconds": "8"})).start()
    jobs.create_job(aws_reboot, "reboot-on")
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    # IN_PROGRESS with the boot marker, recorded in the journal before the reboot was requested
    marked = wait_until(lambda: jobs.describe("reboot-on")["executions"][0]["statusDetails"].get("bootId"), 60,
                   "no boot marker in statusDetails")
    assert marked == boot_id
    wait_until(lambda: requested.exists(), 30, "the reboot command never ran")
    assert _journal(comp.state)["reboot-on#1"]["marker"]["bootId"] == boot_id
    assert jobs.describe("reboot-on")["executions"][0]["status"] == "IN_PROGRESS"
    # the "reboot" takes the component down; it starts again in the same boot, so no reboot happened
    comp.kill()
    comp.start()
    done = jobs.wait_for("reboot-on", ("SUCCEEDED", "FAILED", "REJECTED"), timeout=90)
    assert done["status"] == "FAILED" and "did not reboot" in done["statusDetails"]["reason"]
    assert requested.read_text().count("requested") == 1  # not requested again after the restart
