import json
import os

import pytest

from ggdefender.detect.findings import validate_finding
from ggdefender.detect.service import DetectService
from ggdefender.settings import ConfigError

from detect_helpers import FIXTURES, FakeIpc, behavior, report

SEED_000 = os.path.join(FIXTURES, "seed-000-listening-ports.json")
VIOLATIONS = "ggdefender/things/gw/violations"
FINDINGS = "ggdefender/things/gw/findings"


class Clock:
    def __init__(self, t=1_764_000_000.0):
        self.t = t

    def __call__(self):
        return self.t


def _svc(tmp_path, section, ipc=None, clock=None):
    svc = DetectService(ipc if ipc is not None else FakeIpc(), "gw", str(tmp_path), clock=clock or Clock())
    svc.reconfigure(section)
    return svc


def _seed_section(**extra):
    return dict({"Profiles": [SEED_000]}, **extra)


def test_seed_000_violation_published_to_iot_core_and_local_with_a_valid_finding(tmp_path):
    ipc = FakeIpc()
    svc = _svc(tmp_path, _seed_section(), ipc)
    svc.observe(report(1, ports=[22, 25, 38905]), 1000.0)
    assert ipc.calls == []
    (e,) = svc.observe(report(2, ports=[22, 25, 38905, 8888]), 1005.0)
    assert e["violationEventType"] == "in-alarm" and e["offendingValues"] == [8888]
    assert ipc.on(VIOLATIONS) == ipc.on("ggdefender/violations") == [e]
    (f,) = ipc.on(FINDINGS)
    assert ipc.on("ggdefender/findings") == [f]
    assert validate_finding(f) == [] and f["Severity"]["Label"] == "HIGH"  # "-High" suffix
    svc.observe(report(3, ports=[22]), 1010.0)
    cleared = ipc.on(VIOLATIONS)[-1]
    assert (cleared["violationEventType"], cleared["violationId"]) == ("alarm-cleared", e["violationId"])
    f2 = ipc.on(FINDINGS)[-1]
    assert f2["Id"] == f["Id"] and f2["RecordState"] == "ARCHIVED" and f2["UpdatedAt"] > f["UpdatedAt"]


def test_restart_neither_loses_nor_repeats_an_alarm(tmp_path):
    ipc = FakeIpc()
    svc = _svc(tmp_path, _seed_section(), ipc)
    (a,) = svc.observe(report(1, ports=[8888]), 1000.0)
    svc.close()
    ipc2 = FakeIpc()
    again = _svc(tmp_path, _seed_section(), ipc2)
    assert again.active_violations()[0]["violationId"] == a["violationId"]
    assert again.observe(report(2, ports=[8888]), 1005.0) == []   # not repeated
    (c,) = again.observe(report(3, ports=[22]), 1010.0)           # not lost: clears the same violation
    assert (c["violationEventType"], c["violationId"]) == ("alarm-cleared", a["violationId"])
    # the finding remembered before the restart is the one archived
    assert ipc2.on(FINDINGS)[-1]["RecordState"] == "ARCHIVED"


def test_windows_and_streaks_survive_a_restart(tmp_path):
    section = {"Profiles": [{"securityProfileName": "P", "behaviors": [
        behavior("aws:all-bytes-out", "less-than", {"count": 100}, durationSeconds=300,
                 consecutiveDatapointsToAlarm=2)]}]}
    svc = _svc(tmp_path, section)
    svc.observe(report(1, bytes_out=60), 0.0)
    svc.observe(report(2, bytes_out=60), 301.0)  # window [0,300)=60 ok... then [300,600) opens with 60
    svc.close()
    again = _svc(tmp_path, section)
    again.observe(report(3, bytes_out=60), 400.0)   # [300,600) now 120: violating, streak 1
    assert again.observe(report(4, bytes_out=150), 700.0) == []
    (e,) = again.observe(report(5, bytes_out=0), 1000.0)  # second violating window -> alarm
    assert e["metricValue"] == {"count": 150}


def test_failed_publishes_are_kept_and_retried(tmp_path):
    ipc = FakeIpc()
    svc = _svc(tmp_path, _seed_section(), ipc)
    ipc.down = ConnectionError("connection closed")
    (a,) = svc.observe(report(1, ports=[8888]), 1000.0)
    assert ipc.calls == [] and len(svc.store.outbox) == 2   # violation + finding
    svc.close()
    ipc2 = FakeIpc()
    again = _svc(tmp_path, _seed_section(), ipc2)  # the outbox survives the restart
    assert ipc2.on(VIOLATIONS)[0]["violationId"] == a["violationId"]
    assert len(ipc2.on(FINDINGS)) == 1 and len(again.store.outbox) == 0


def test_mitigation_request_rate_limit_and_result_recorded(tmp_path):
    ipc = FakeIpc()
    clock = Clock()
    section = _seed_section(Mitigation={"Enabled": True, "MaxActionsPerHour": 2, "CooldownSeconds": 600,
                                        "Actions": {"UnexpectedTcpListener-High": {"Operation": "stop-listener",
                                                                                   "Arguments": {"gracePeriodSeconds": 1}}}})
    svc = _svc(tmp_path, section, ipc, clock)
    (a,) = svc.observe(report(1, ports=[22, 8888, 9999, 7777]), 1000.0)
    reqs = ipc.on("mitigate")  # over the private relay to process A, never on the bus
    assert [r["target"] for r in reqs] == [{"port": 7777, "protocol": "tcp"}, {"port": 8888, "protocol": "tcp"}]
    assert all(r["violationId"] == a["violationId"] and r["operation"] == "stop-listener" for r in reqs)
    assert all((r["profile"], r["behavior"]) == ("ExpectedListeners", "UnexpectedTcpListener-High") for r in reqs)
    assert not [c for c in ipc.calls if c[0].startswith("publish") and "remediation" in c[1]]
    assert [x["status"] for x in a["mitigationActions"]] == ["requested", "requested", "rate-limited"]
    assert "mitigation/2" in json.dumps(ipc.on(FINDINGS)[0])
    # the remediation part answers; the finding records it
    clock.t += 5
    ipc.deliver("mitigation", None, {"requestId": reqs[0]["requestId"], "status": "SUCCEEDED",
                                     "detail": "stopped pid 4242"})
    f = ipc.on(FINDINGS)[-1]
    assert "SUCCEEDED" in f["ProductFields"]["ggdefender/mitigation/0"] and "4242" in f["Remediation"]["Recommendation"]["Text"]
    (c,) = svc.observe(report(2, ports=[22]), 1010.0)
    assert c["mitigationActions"][0]["status"] == "SUCCEEDED"   # recorded on the violation too
    # flapping: the same listener again within the cooldown is not acted on again
    (a2,) = svc.observe(report(3, ports=[22, 8888]), 1020.0)
    assert [x["status"] for x in a2["mitigationActions"]] == ["rate-limited"]
    assert len(ipc.on("mitigate")) == 2


def test_mitigation_is_off_by_default(tmp_path):
    ipc = FakeIpc()
    svc = _svc(tmp_path, _seed_section(Mitigation={"Actions": {"UnexpectedTcpListener-High": "stop-listener"}}), ipc)
    (a,) = svc.observe(report(1, ports=[8888]), 1000.0)
    assert ipc.on("mitigate") == [] and "mitigationActions" not in a


def test_verification_state_from_configuration_suppresses_the_finding(tmp_path):
    ipc = FakeIpc()
    svc = _svc(tmp_path, _seed_section(), ipc)
    (a,) = svc.observe(report(1, ports=[8888]), 1000.0)
    vid = a["violationId"]
    svc.reconfigure(_seed_section(VerificationStates={vid: {"State": "BENIGN_POSITIVE", "Description": "test rig"}}))
    f = ipc.on(FINDINGS)[-1]
    assert f["Workflow"]["Status"] == "SUPPRESSED" and validate_finding(f) == []
    assert svc.active_violations()[0]["verificationState"] == "BENIGN_POSITIVE"
    n = len(ipc.on(FINDINGS))
    svc.reconfigure(_seed_section(VerificationStates={vid: {"State": "BENIGN_POSITIVE", "Description": "test rig"}}))
    assert len(ipc.on(FINDINGS)) == n  # unchanged state: no new update
    # the scalar string form a remediation set-config step can write
    svc.reconfigure(_seed_section(VerificationStates=f"{vid}=TRUE_POSITIVE:confirmed"))
    assert ipc.on(FINDINGS)[-1]["Workflow"]["Status"] == "NOTIFIED"
    (c,) = svc.observe(report(2, ports=[22]), 1010.0)
    assert c["verificationState"] == "TRUE_POSITIVE" and c["verificationStateDescription"] == "confirmed"


def test_threat_list_file_is_re_read_without_restart(tmp_path):
    lst = tmp_path / "bad.txt"
    lst.write_text("# feed\n203.0.113.0/24   # botnet\n")
    ipc = FakeIpc()
    svc = _svc(tmp_path, {"ThreatLists": [{"Name": "feed", "File": str(lst)}]}, ipc)
    assert svc.observe(report(1, remotes=["198.51.100.1:443"]), 1.0) == []
    (e,) = svc.observe(report(2, remotes=["203.0.113.9:443", "198.51.100.1:443"]), 2.0)
    assert e["securityProfileName"] == "ggdefender-threat-intel" and e["offendingValues"] == ["203.0.113.9"]
    assert ipc.on(FINDINGS)[0]["Severity"]["Label"] == "HIGH"
    svc.observe(report(3, remotes=[]), 3.0)
    lst.write_text("198.51.100.0/24\n")
    os.utime(lst, (10, 10))
    (e2,) = svc.observe(report(4, remotes=["198.51.100.1:443"]), 4.0)
    assert e2["offendingValues"] == ["198.51.100.1"]


def test_bad_configuration_keeps_the_last_good_one(tmp_path):
    svc = _svc(tmp_path, _seed_section())
    with pytest.raises(ConfigError, match=r"Profiles\[0\].*behaviors\[0\] \(b\)\.criteria\.comparisonOperator"):
        svc.reconfigure({"Profiles": [{"securityProfileName": "X", "behaviors": [
            behavior("aws:listening-tcp-ports", "less-than", {"count": 1})]}]})
    with pytest.raises(ConfigError, match="unknown key"):
        svc.reconfigure({"Profile": []})
    assert svc.observe(report(1, ports=[8888]), 1.0)  # the seed profile is still in force


def test_profile_directory_and_disabled(tmp_path):
    d = tmp_path / "profiles"
    d.mkdir()
    (d / "seed.json").write_text(open(SEED_000).read())
    svc = _svc(tmp_path, {"ProfileDirectory": str(d)})
    assert svc.status()["profiles"] == ["ExpectedListeners"]
    svc.reconfigure({"ProfileDirectory": str(d), "Enabled": False})
    assert svc.observe(report(1, ports=[8888]), 1.0) == []


def test_suppressed_behavior_publishes_violations_but_no_finding_or_mitigation(tmp_path):
    ipc = FakeIpc()
    b = dict(behavior("aws:listening-tcp-ports", "in-port-set", {"ports": [22]}), suppressAlerts=True)
    svc = _svc(tmp_path, {"Profiles": [{"securityProfileName": "P", "behaviors": [b]}],
                          "Mitigation": {"Enabled": True, "Actions": {"b": "stop-listener"}}}, ipc)
    svc.observe(report(1, ports=[8888]), 1.0)
    assert len(ipc.on(VIOLATIONS)) == 1 and ipc.on(FINDINGS) == []
    assert ipc.on("mitigate") == []


def test_statistics_history_survives_a_restart_of_the_service(tmp_path):
    section = {"Statistics": {"WarmupDatapoints": "3"}, "Profiles": [{"securityProfileName": "P", "behaviors": [
        behavior("aws:all-packets-out", "less-than-equals", durationSeconds=300,
                 statisticalThreshold={"statistic": "p100"})]}]}
    svc = _svc(tmp_path, section)
    for i, v in enumerate([100, 120, 110, 105]):
        svc.observe(report(i + 1, packets_out=v), 300.0 * i + 1)
    svc.close()
    again = _svc(tmp_path, section)
    assert len(again.history.series["aws:all-packets-out@300"]) == 3  # three windows closed before the restart
    assert again.observe(report(9, packets_out=400), 1000.0) == []   # the open window [900, 1200) is now 505
    (e,) = again.observe(report(10, packets_out=0), 1201.0)
    # only a history that survived (3 values, warm-up met) gives this verdict
    assert (e["violationEventType"], e["metricValue"], e["thresholdValue"]) == ("in-alarm", {"count": 505}, 120.0)


@pytest.mark.parametrize("content", ["{broken", "[]", '{"states": [1]}', '{"states": {"p/b": {"actions": 5}}}',
                                     '{"outbox": 7}', '{"findings": "x"}'])
def test_corrupt_alarm_state_starts_without_alarms(tmp_path, content):
    (tmp_path / "detect-state.json").write_text(content)
    svc = DetectService(FakeIpc(), "gw", str(tmp_path))  # must not raise: detection goes on
    assert svc.store.states == {} and len(svc.store.outbox) == 0 and svc.store.findings == {}


def test_a_refused_mitigation_is_recorded_with_the_reason_and_not_retried(tmp_path):
    ipc = FakeIpc()
    ipc.refuse_mitigation = "nothing listens on tcp port 8888 now"
    section = _seed_section(Mitigation={"Enabled": True, "Actions": {"UnexpectedTcpListener-High": "stop-listener"}})
    svc = _svc(tmp_path, section, ipc)
    svc.observe(report(1, ports=[22, 8888]), 1000.0)
    assert len(ipc.on("mitigate")) == 1 and len(svc.store.outbox) == 1  # the finding recording the refusal
    svc.observe(report(2, ports=[22, 8888]), 1005.0)
    assert len(ipc.on("mitigate")) == 1  # a refusal is an answer: not asked again
    f = ipc.on(FINDINGS)[-1]
    assert "REJECTED" in f["ProductFields"]["ggdefender/mitigation/0"]
    assert "nothing listens" in json.dumps(f)
    # and on the alarm, so the alarm-cleared event carries it
    assert [a["status"] for st in svc.evaluator.states.values() if st.in_alarm for a in st.actions] == ["REJECTED"]


def test_mitigation_rules_name_only_operations_a_can_check():
    from ggdefender.detect.mitigation import parse_config

    for op in ("kill-process", "set-config", "restart-component", "collect-now", "unblock-ip"):
        with pytest.raises(ConfigError, match="use IoT Jobs"):
            parse_config({"Enabled": True, "Actions": {"b": {"Operation": op}}})
    # a target fixed in the rule must be one the remediation part can observe
    for args in ({"address": "10.0.0.0/8"}, {"port": "22"}, {"port": 22, "protocol": "sctp"}):
        op = "block-ip" if "address" in args else "stop-listener"
        with pytest.raises(ConfigError, match="Arguments"):
            parse_config({"Actions": {"b": {"Operation": op, "Arguments": args}}})
