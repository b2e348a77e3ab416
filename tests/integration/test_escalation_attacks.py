"""Issue 10, items 1-2: nobody on the device gains remediation power through ggdefender, played with real
processes under `ggdefender local`.

1. An attacker COMPONENT (its own recipe, local pub/sub `*`) deployed beside ggdefender.Defender publishes
   kill-process / stop-listener requests on the old public topic `ggdefender/remediation/requests`, naming a
   real victim process: nothing listens there any more, so nothing is executed.
2. A compromised collector (process B): process A is the real supervisor, relay, MitigationGate and
   remediation listener over a real IPC connection to the local core; B is replaced by a script speaking the
   relay's line protocol that sends forged requests, reports and events. Each is refused with its reason,
   the victims live, and the one request the policy allows still runs end to end.
The legitimate closed loop (rogue listener -> detect -> stop-listener) is tests/integration/test_detect_loop.py.
"""

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from component_build import free_port, full_configuration, loopback_listener, port_open, wait_until

pytestmark = pytest.mark.integration

from ggdefender.local.ui import harness

THING = "attackedThing"
COMPONENT = "ggdefender.Defender"
OURS = "ggdefender.remediation/1"


def _config() -> dict:
    cfg = full_configuration()
    cfg["Collector"].update({"DevelopmentSampleIntervalSeconds": "3", "StartJitterPercent": "0"})
    cfg["Remediation"].update({"ReplyTimeoutSeconds": "3", "RetryInitialSeconds": "0.5"})
    return cfg


def _dry_job(core, job_id: str) -> None:
    """A dry-run job run to the end: the listener is up, and (the worker being serial) anything queued before
    it has run."""
    jobs = core.service("JobsService")
    jobs.create_job({"schema": OURS, "dryRun": True, "steps": [{"operation": "collect-now"}]}, job_id)
    assert jobs.wait_for(job_id, ("SUCCEEDED", "FAILED", "REJECTED"), timeout=90)["status"] == "SUCCEEDED"


def _stop(proc) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


# -- 1. an attacker component with its own recipe --------------------------------------------------------------
ATTACKER = """
import json, sys, time
from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
from awsiot.greengrasscoreipc.model import JsonMessage, PublishMessage

pid, port = int(sys.argv[1]), int(sys.argv[2])
client = GreengrassCoreIPCClientV2()
attacks = [
    {"requestId": "evil-kill", "operation": "kill-process", "arguments": {"pid": pid, "signal": "SIGKILL"},
     "reason": "attacker", "violationId": "v-evil"},
    {"requestId": "evil-stop", "operation": "stop-listener", "arguments": {"port": port, "signal": "SIGKILL"},
     "reason": "attacker", "violationId": "v-evil"},
    # the new typed shape too, in case anything on the bus took it
    {"requestId": "evil-typed", "operation": "stop-listener", "target": {"port": port, "protocol": "tcp"},
     "profile": "P", "behavior": "b", "violationId": "v-evil"},
]
for round in range(300):
    for message in attacks:
        client.publish_to_topic(topic="ggdefender/remediation/requests",
                                publish_message=PublishMessage(json_message=JsonMessage(message=message)))
    print("attack round", round + 1, flush=True)
    time.sleep(0.2)
time.sleep(600)
"""


def _attacker_component(base: Path, pid: int, port: int) -> tuple:
    recipes, artifacts = base / "recipes", base / "artifacts" / "test.Attacker" / "1.0.0"
    recipes.mkdir(parents=True)
    artifacts.mkdir(parents=True)
    (artifacts / "attack.py").write_text(ATTACKER)
    recipe = {
        "RecipeFormatVersion": "2020-01-25", "ComponentName": "test.Attacker", "ComponentVersion": "1.0.0",
        "ComponentConfiguration": {"DefaultConfiguration": {"accessControl": {"aws.greengrass.ipc.pubsub": {
            "test.Attacker:pubsub:all": {"operations": ["*"], "resources": ["*"]}}}}},
        "Manifests": [{"Platform": {"os": "linux"},
                       "Lifecycle": {"Run": f"{sys.executable} -u {{artifacts:path}}/attack.py {pid} {port}"},
                       "Artifacts": [{"URI": "s3://test-bucket/test.Attacker/1.0.0/attack.py"}]}],
    }
    (recipes / "test.Attacker-1.0.0.yaml").write_text(yaml.safe_dump(recipe))
    return recipes, base / "artifacts"


def test_a_component_with_star_pubsub_cannot_make_the_defender_act(tmp_path):
    victim, port = loopback_listener()
    try:
        with harness.LocalCore(tmp_path / "core", thing=THING) as core:
            results = core.capture_local("ggdefender/remediation/results")
            attacks = core.capture_local("ggdefender/remediation/requests")
            env = core.add_component(COMPONENT, configuration=_config())
            state = tmp_path / "state"
            state.mkdir()
            env["GGDEFENDER_STATE_DIR"] = str(state)
            core.spawn(COMPONENT, [sys.executable, "-m", "ggdefender", "run"], env=env)
            _dry_job(core, "listener-up")

            recipes, artifacts = _attacker_component(tmp_path / "attacker", victim.pid, port)
            core.deploy(recipes, artifacts, {"test.Attacker": "1.0.0"})
            # the attack really reaches the bus, many times over, while process A runs
            try:
                attacks.wait_for(lambda msgs: len(msgs) >= 30, timeout=90)
            except TimeoutError:
                pytest.fail(f"the attacker never published: {core.log_text('test.Attacker')[-2000:]}")
            assert {m["requestId"] for _, m, *_ in attacks} == {"evil-kill", "evil-stop", "evil-typed"}
            _dry_job(core, "after-attack")  # anything the attack had queued would have run before this

            assert victim.poll() is None and port_open(port)
            assert not any(sub.component == COMPONENT
                           for sub in core.core._local.matching("ggdefender/remediation/requests"))
            assert [m for _, m, *_ in results] == []  # nothing executed, nothing answered
            log = core.wait_for_log(COMPONENT, "after-attack#1")
            assert "evil-" not in log and str(victim.pid) not in log
            audits = [line for line in log.splitlines() if "AUDIT" in line]
            assert audits and all("listener-up#1" in a or "after-attack#1" in a for a in audits), audits
            assert core.state("test.Attacker") == "RUNNING"
    finally:
        _stop(victim)


# -- 2. a compromised collector (process B) --------------------------------------------------------------------
PROCESS_A = """
import logging, sys, threading
from ggdefender import process_start, statefile
from ggdefender.supervisor import run as supervisor, section
from ggdefender.ipc import Ipc

logging.basicConfig(level="INFO", stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
ipc = Ipc()
sup = supervisor.Supervisor(section.SupervisorSettings(), statefile.state_dir(),
                            argv=[sys.executable, "-u"] + sys.argv[1:], ipc=ipc, thing=ipc.thing_name)
threading.Thread(target=sup.run_remediation, args=(ipc, ipc.thing_name), daemon=True).start()
process_start.on_signals(sup.stop.set)
sup.supervise_child()
"""

EVIL_B = r"""
import base64, json, os, socket, sys, time

args = json.loads(sys.argv[1])
thing = os.environ["AWS_IOT_THING_NAME"]
sock = socket.socket(fileno=int(os.environ["GGDEFENDER_RELAY_FD"]))
sock.settimeout(120)
stream = sock.makefile("rb")
events, next_id = [], [0]


def call(request):
    next_id[0] += 1
    request = dict(request, id=next_id[0])
    sock.sendall(json.dumps(request).encode() + b"\n")
    while True:
        message = json.loads(stream.readline())
        if "ev" in message:
            events.append(message)
        elif message.get("id") == request["id"]:
            return message


def report(case, reply):
    print("EVIL-B " + json.dumps({"case": case, "reply": reply}), flush=True)


def mitigate(rid, operation, target, behavior="listener", **extra):
    request = dict({"requestId": rid, "operation": operation, "target": target, "profile": "Evil",
                    "behavior": behavior, "violationId": "v-evil"}, **extra)
    return call({"op": "mitigate", "request": request})


report("subscribe", call({"op": "subscribe_mitigation", "sub": 1}))
deadline = time.monotonic() + 90
while True:  # until process A's listener runs
    reply = mitigate("nobody", "stop-listener", {"port": args["free"], "protocol": "tcp"})
    if "not running" not in reply.get("error", "") or time.monotonic() > deadline:
        break
    time.sleep(0.5)
report("nobody-listens", reply)
report("kill-process", mitigate("kill", "kill-process", {"pid": args["v1_pid"]}))
report("free-form", mitigate("free", "stop-listener", {"port": args["p1"], "protocol": "tcp"},
                             arguments={"pid": args["v1_pid"], "signal": "SIGKILL"}))
report("signal-in-target", mitigate("sig", "stop-listener", {"port": args["p1"], "protocol": "tcp",
                                                             "signal": "SIGKILL"}))
report("protected", mitigate("prot", "stop-listener", {"port": args["p2"], "protocol": "tcp"}))
report("wrong-operation", mitigate("wrongop", "block-ip", {"address": "127.0.0.1"}))
report("no-rule", mitigate("norule", "stop-listener", {"port": args["p1"], "protocol": "tcp"}, behavior="other"))
report("legit", mitigate("legit", "stop-listener", {"port": args["p3"], "protocol": "tcp"}))
deadline = time.monotonic() + 60
while not any(e.get("result", {}).get("requestId") == "legit" for e in events) and time.monotonic() < deadline:
    call({"op": "get_config", "keyPath": ["Detect", "Enabled"]})  # reads events meanwhile
    time.sleep(0.2)
report("legit-result", [e["result"] for e in events if e.get("result", {}).get("requestId") == "legit"])
report("rate-limited", mitigate("again", "stop-listener", {"port": args["p1"], "protocol": "tcp"}))
metrics = f"$aws/things/{thing}/defender/metrics/json"
report("garbage-report", call({"op": "publish_iot", "topic": metrics, "qos": 1,
                               "b64": base64.b64encode(b"rm -rf / --no-preserve-root").decode()}))
good = json.dumps({"header": {"report_id": 10**12, "version": "1.0"},
                   "metrics": {"listening_tcp_ports": {"ports": [], "total": 0}}}).encode()
report("report", call({"op": "publish_iot", "topic": metrics, "qos": 1, "b64": base64.b64encode(good).decode()}))
report("replayed-report", call({"op": "publish_iot", "topic": metrics, "qos": 1,
                                "b64": base64.b64encode(good).decode()}))
report("forged-answer", call({"op": "publish_local", "topic": "ggdefender/collector/events",
                              "json": {"event": "report-published", "requestId": "someone-else",
                                       "reportId": 10**12, "topic": metrics}}))
report("other-thing", call({"op": "publish_iot", "topic": f"ggdefender/things/{thing}/violations", "qos": 1,
                            "b64": base64.b64encode(json.dumps({
                                "thingName": "someoneElse", "violationId": "x", "securityProfileName": "p",
                                "violationEventType": "in-alarm", "behavior": {"name": "b"}}).encode()).decode()}))
# Collector.Export is off here: no Basic Ingest rule, whichever B names, and B cannot turn it on
report("forged-rule", call({"op": "publish_iot", "qos": 1, "b64": base64.b64encode(good).decode(),
                            "topic": f"$aws/rules/evil_rule/things/{thing}/defender/metrics/json"}))
report("export-on", call({"op": "update_config", "keyPath": ["Collector"],
                          "valueToMerge": {"Export": {"Mode": "also", "RuleName": "evil_rule"}}}))
report("install-index", call({"op": "update_config", "keyPath": ["Install"],
                              "valueToMerge": {"IndexUrl": "https://evil.example/simple"}}))
report("public-door", call({"op": "publish_local", "topic": "ggdefender/remediation/requests",
                            "json": {"requestId": "door", "operation": "kill-process",
                                     "arguments": {"pid": args["v1_pid"], "signal": "SIGKILL"}}}))
print("EVIL-B done", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("ipc_client", ["awsiotsdk", "pure"])  # process A's IPC client (GGDEFENDER_IPC_CLIENT)
def test_a_compromised_collector_gets_exactly_what_the_mitigation_policy_allows(tmp_path, ipc_client):
    v1, p1 = loopback_listener()   # unprotected, but B may only ask within the policy
    v2, p2 = loopback_listener()   # protected by Remediation.ProtectedPids
    v3, p3 = loopback_listener()   # the one action the policy allows
    try:
        cfg = _config()
        cfg["Remediation"]["ProtectedPids"] = [str(v2.pid)]
        cfg["Detect"]["Mitigation"] = {"Enabled": True, "MaxActionsPerHour": "1", "CooldownSeconds": "600",
                                       "Actions": {"Evil/listener": {"Operation": "stop-listener",
                                                                     "Arguments": {"gracePeriodSeconds": 1}}}}
        (tmp_path / "a.py").write_text(PROCESS_A)
        (tmp_path / "b.py").write_text(textwrap.dedent(EVIL_B))
        os.chmod(tmp_path, 0o755)  # B may run as an unprivileged user: it must read its script
        os.chmod(tmp_path / "b.py", 0o644)
        args = {"free": free_port(), "v1_pid": v1.pid, "p1": p1, "p2": p2, "p3": p3}
        with harness.LocalCore(tmp_path / "core", thing=THING) as core:
            reports = core.capture_iot(f"$aws/things/{THING}/defender/metrics/json")
            env = core.add_component(COMPONENT, configuration=cfg)
            state = tmp_path / "state"
            state.mkdir()
            env["GGDEFENDER_STATE_DIR"] = str(state)
            env["GGDEFENDER_IPC_CLIENT"] = ipc_client
            core.spawn(COMPONENT, [sys.executable, str(tmp_path / "a.py"), str(tmp_path / "b.py"),
                                   json.dumps(args)], env=env)
            try:
                wait_until(lambda: "EVIL-B done" in core.log_text(COMPONENT), 180, "the compromised collector finished")
            except TimeoutError:
                pytest.fail(core.log_text(COMPONENT)[-4000:])
            log = core.log_text(COMPONENT)
            replies = {}
            for line in log.splitlines():
                if line.startswith("EVIL-B {"):
                    item = json.loads(line[len("EVIL-B "):])
                    replies[item["case"]] = item["reply"]

            def refused(case, kind, reason):
                reply = replies[case]
                assert reply["ok"] is False and reply["kind"] == kind and reason in reply["error"], (case, reply)

            assert replies["subscribe"]["ok"] is True
            refused("nobody-listens", "denied", f"nothing listens on tcp port {args['free']} now")
            refused("kill-process", "denied", "'kill-process' cannot be a mitigation")
            refused("free-form", "denied", "unknown field(s) arguments")
            refused("signal-in-target", "denied", "target must be exactly")
            refused("protected", "denied", "Remediation.ProtectedPids")
            refused("wrong-operation", "denied", "names stop-listener, not block-ip")
            refused("no-rule", "denied", "no mitigation rule for Evil/other")
            assert replies["legit"] == {"id": replies["legit"]["id"], "ok": True,
                                        "result": {"requestId": "legit", "status": "accepted"}}
            (result,) = replies["legit-result"]
            assert result["status"] == "SUCCEEDED" and result["violationId"] == "v-evil", result
            refused("rate-limited", "denied", "MaxActionsPerHour (1)")
            refused("garbage-report", "invalid", "not JSON")
            assert replies["report"]["ok"] is True
            refused("replayed-report", "denied", "not above the last relayed report_id")
            refused("forged-answer", "denied", "never delivered")
            refused("other-thing", "denied", "someoneElse")
            refused("public-door", "denied", "relay policy")
            refused("forged-rule", "denied", "Collector.Export is off")
            refused("export-on", "denied", "only process A may do this")
            refused("install-index", "denied", "only process A may do this")
            # A logged each refusal with its reason
            audits = [json.loads(line.split("AUDIT ", 1)[1]) for line in log.splitlines() if "AUDIT {" in line]
            rejected = {a["job"] for a in audits if a["result"] == "REJECTED"}
            for rid in ("nobody", "kill", "free", "sig", "prot", "wrongop", "norule", "again"):
                assert f"mitigation request {rid} from the collector refused" in log, rid
                assert f"collector:{rid}" in rejected, (rid, rejected)
            # the one accepted request ran through the executor, audited as the jobs' actions are
            assert any(a["job"] == "local:legit" and a["result"] == "SUCCEEDED" for a in audits), audits
            assert "invalid content from the collector process refused" in log
            assert len(reports) == 1  # only the well-formed report reached IoT Core
            assert f"IPC client: {ipc_client}" in log

        assert v1.poll() is None and port_open(p1), "an unprotected victim outside the policy was harmed"
        assert v2.poll() is None and port_open(p2), "a protected victim was harmed"
        assert v3.wait(10) is not None and not port_open(p3), "the allowed mitigation did not run"
    finally:
        for v in (v1, v2, v3):
            _stop(v)
