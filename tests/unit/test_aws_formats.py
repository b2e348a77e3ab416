"""What the project PRODUCES in AWS's formats, checked against botocore's service models (tests/aws_models.py):
ASFF findings from detect, security profiles detect accepts, and the IoT Jobs MQTT requests of the
remediation listener. The documentation's examples are checked in test_aws_formats_docs.py."""

import copy
import json
import os
import re

import pytest

import aws_models
from ggdefender.detect import findings as F
from ggdefender.detect.profile import NAME_RE as PROFILE_NAME_RE
from ggdefender.detect.profile import ProfileError, load_profile
from ggdefender.detect.service import DetectService
from ggdefender import jobs_protocol
from ggdefender.remediation import jobs
from ggdefender.remediation.jobs import JobsMachine, Journal, Publish

from detect.detect_helpers import FIXTURES, FakeIpc, report

# -- ASFF findings (securityhub BatchImportFindings) ----------------------------------------------------------


def import_problems(findings: list) -> list:
    """Problems of one BatchImportFindings call carrying `findings` (the API takes 1-100 per call)."""
    return aws_models.problems({"Findings": findings}, "securityhub", "BatchImportFindings")


class Clock:
    def __init__(self, t=1_764_000_000.0):
        self.t = t

    def __call__(self):
        return self.t


def lifecycle_findings(tmp_path, thing="gw", profile_name="ExpectedListeners", behavior_name="Listener-High",
                       verification=("BENIGN_POSITIVE", "lab rig"), result_detail="stopped pid 4242"):
    """Every finding the detect service publishes for one violation: created (with mitigation requests),
    a mitigation result, a verification state, then cleared."""
    ipc, clock = FakeIpc(), Clock()
    prof = {"securityProfileName": profile_name, "behaviors": [{
        "name": behavior_name, "metric": "aws:listening-tcp-ports",
        "criteria": {"comparisonOperator": "in-port-set", "value": {"ports": [22]}}}]}
    section = {"Profiles": [prof], "Findings": {"AwsAccountId": "123456789012", "Region": "eu-west-1"},
               "Mitigation": {"Enabled": True, "Actions": {behavior_name: "stop-listener"}}}
    svc = DetectService(ipc, thing, str(tmp_path), clock=clock)
    svc.reconfigure(section)
    (alarm,) = svc.observe(report(1, ports=[22, 8888, 9999]), 1000.0)
    request = ipc.on("mitigate")[0]
    clock.t += 5
    ipc.deliver("mitigation", None, {"requestId": request["requestId"], "status": "SUCCEEDED",
                                     "detail": result_detail})
    state, description = verification
    svc.reconfigure(dict(section, VerificationStates={alarm["violationId"]: {"State": state,
                                                                             "Description": description}}))
    svc.observe(report(2, ports=[22]), 1010.0)
    found = ipc.on(f"ggdefender/things/{thing}/findings")
    assert len(found) == 4 and found[-1]["RecordState"] == "ARCHIVED"  # the scenario really ran
    return found


def test_every_finding_of_a_violation_lifecycle_is_a_valid_batch_import(tmp_path):
    found = lifecycle_findings(tmp_path)
    assert import_problems(found) == []
    assert all(F.validate_finding(f) == [] for f in found)


def test_findings_at_the_limits_of_their_inputs_are_valid(tmp_path):
    """Longest names AWS allows, and text from outside (a mitigation's detail, an operator's description)
    with line breaks and control characters, which the model's `.*\\S.*` (Java: no line terminators) refuses."""
    found = lifecycle_findings(tmp_path, thing="t:" + "x" * 126, profile_name="p" * 128,
                               behavior_name="b" * 120 + "-High", verification=("FALSE_POSITIVE", "d" * 1000),
                               result_detail="killed 4242\nstderr: \x1b[31mboom\x1b[0m\u2028done")
    assert import_problems(found) == []


def test_a_finding_closed_with_a_multi_line_reason_is_valid():
    event = {"violationId": "v-1", "thingName": "gw", "securityProfileName": "P",
             "behavior": {"name": "b", "metric": "aws:all-bytes-out"}, "metricValue": {"count": 5},
             "violationEventType": "in-alarm", "violationEventTime": 1.0}
    f = F.new_finding(event, F.FindingsConfig(), 1.0)
    closed = F.close_finding(f, dict(event, violationEventType="alarm-invalidated", violationEventTime=2.0,
                                     reason="profile removed\nby deployment"), 2.0)
    assert import_problems([f, closed]) == []
    blank = F.set_verification(f, "TRUE_POSITIVE", "  \n ", 3.0)
    assert import_problems([blank]) == []


def test_the_validator_sees_a_broken_finding(tmp_path):
    """The check above is not vacuous: the same findings, broken the ways the model forbids, are refused."""
    f = copy.deepcopy(lifecycle_findings(tmp_path)[0])
    f["RecordState"] = "OPEN"
    f["ProductFields"]["ggdefender/x"] = "two\nlines"
    del f["Resources"][0]["Type"]
    problems = import_problems([f])
    assert any(p.startswith("Findings[0].RecordState: 'OPEN' is not one of") for p in problems), problems
    assert any(p.startswith("Findings[0].ProductFields['ggdefender/x']: 'two\\nlines' does not match")
               for p in problems), problems
    assert "Findings[0].Resources[0]: required member 'Type' is missing" in problems
    assert any(p.startswith("Findings: 101 items") for p in import_problems([f] * 101))


# -- security profiles (iot CreateSecurityProfile) that detect accepts ---------------------------------------
SEED = os.path.join(FIXTURES, "seed-000-listening-ports.json")


@pytest.mark.parametrize("name", sorted(n for n in os.listdir(FIXTURES) if n.endswith(".json")))
def test_profile_fixtures_are_valid_create_security_profile_input(name):
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as fh:
        doc = json.load(fh)
    aws_models.check(doc, "iot", "CreateSecurityProfile")
    load_profile(doc)  # and detect takes it


def _seed():
    with open(SEED, encoding="utf-8") as fh:
        return json.load(fh)


def _mutated(path: str, value):
    doc = _seed()
    target, keys = doc, path.split(".")
    for key in keys[:-1]:
        target = target[int(key)] if key.isdigit() else target[key]
    if value is KeyError:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    return doc


# Profiles AWS's model refuses; detect must refuse each too (it promises the exact CreateSecurityProfile JSON).
REFUSED_BY_AWS = [
    ("securityProfileName", "has space"), ("securityProfileName", "x" * 129), ("securityProfileName", ""),
    ("securityProfileDescription", "tab\there"), ("securityProfileDescription", "caf\u00e9"),
    ("securityProfileDescription", "d" * 1001), ("colour", "red"),
    ("behaviors.0.name", "bad name"), ("behaviors.0.name", "n" * 129), ("behaviors.0.bogus", 1),
    ("behaviors.0.criteria.comparisonOperator", "bigger-than"), ("behaviors.0.criteria.bogus", 1),
    ("behaviors.0.criteria.consecutiveDatapointsToAlarm", 0),
    ("behaviors.0.criteria.consecutiveDatapointsToClear", 11),
    ("behaviors.0.suppressAlerts", "yes"), ("behaviors.0.metricDimension", {"operator": "IN"}),
    ("behaviors.0.criteria.value", {"ports": [22], "bogus": 1}),
    ("additionalMetricsToRetainV2", [{"metricDimension": {"dimensionName": "d"}}]),
    ("metricsExportConfig", {"mqttTopic": "t"}), ("alertTargets", {"EMAIL": {"alertTargetArn": "a", "roleArn": "r"}}),
    ("tags", [{"Value": "v"}]), ("behaviors", []),
]


@pytest.mark.parametrize("path, value", REFUSED_BY_AWS, ids=[f"{p}={str(v)[:20]}" for p, v in REFUSED_BY_AWS])
def test_detect_refuses_what_aws_refuses(path, value):
    doc = _mutated(path, value)
    if path == "behaviors":  # an empty list is fine for AWS (the model has no minimum); make it too long
        doc["behaviors"] = [dict(_seed()["behaviors"][0], name=f"b{i}") for i in range(101)]
    assert aws_models.problems(doc, "iot", "CreateSecurityProfile"), "the mutation must be invalid for AWS"
    with pytest.raises(ProfileError):
        load_profile(doc)


# -- IoT Jobs MQTT requests (iot-jobs-data) --------------------------------------------------------------------
THING = "gw-17:core"
PREFIX = f"$aws/things/{THING}/jobs/"
CLIENT_TOKEN_MAX = 64  # the MQTT API's clientToken limit (not in the HTTP model: the HTTP API has no token)


def as_http_input(publish: Publish, thing: str = THING) -> tuple:
    """The HTTP API input an MQTT Jobs request stands for. Over MQTT, jobId and thingName are in the topic
    (the HTTP API has them in the URI) and the payload adds `clientToken` (MQTT only, echoed in the reply),
    so: the topic's names go into the input, clientToken comes out (checked on its own here)."""
    prefix = f"$aws/things/{thing}/jobs/"
    assert publish.topic.startswith(prefix), publish.topic
    rest = publish.topic[len(prefix):]
    payload = dict(publish.payload)
    token = payload.pop("clientToken")
    assert isinstance(token, str) and 1 <= len(token) <= CLIENT_TOKEN_MAX, token
    if rest == "start-next":
        return "StartNextPendingJobExecution", dict(payload, thingName=thing)
    m = re.fullmatch(r"([^/]+)/(get|update)", rest)
    assert m, f"not a Jobs request topic: {publish.topic}"
    operation = "DescribeJobExecution" if m.group(2) == "get" else "UpdateJobExecution"
    return operation, dict(payload, jobId=m.group(1), thingName=thing)


def reply(m, topic_suffix, body, now):
    token = m.pending["token"]
    return m.on_message(PREFIX + topic_suffix, json.dumps(dict(body, clientToken=token)).encode(), now)


NASTY_DETAILS = dict({"summary": "line 1\nline 2\x00\u200b", "stdout": "x" * 5000, "bad key!": "v", "empty": " ",
                      "ümlaut": "ok"}, **{f"k{i}": str(i) for i in range(30)})


def requests_of_every_kind() -> list:
    """Every request the Jobs state machine sends, from scenarios that cover each kind: look ($next/get and
    start-next), claim, step progress, probe, final result (and its minimal retry), check of a lost result."""
    sent = []

    def keep(actions):
        sent.extend(a for a in actions if isinstance(a, Publish))
        return actions

    doc = {"schema": "ggdefender.remediation/1", "steps": [{"operation": "collect-now"}]}
    m = JobsMachine(THING, Journal())  # the real token factory
    keep(m.start(0.0))
    keep(reply(m, "$next/get/accepted", {"execution": {
        "jobId": "job-1", "thingName": THING, "status": "QUEUED", "executionNumber": 3, "versionNumber": 1,
        "jobDocument": doc}}, 0.0))
    keep(reply(m, "job-1/update/accepted", {"executionState": {"status": "IN_PROGRESS", "versionNumber": 2}}, 0.1))
    keep(m.on_step("job-1", 3, 0, "started", 0.2, marker={"bootId": "b-1", "note": "a\nb"}))
    keep(reply(m, "job-1/update/accepted", {"executionState": {"status": "IN_PROGRESS", "versionNumber": 3}}, 0.3))
    keep(m.on_message(PREFIX + "notify", json.dumps({"jobs": {"QUEUED": [{"jobId": "job-2"}]}}).encode(), 0.4))
    keep(reply(m, "job-1/get/accepted", {"execution": {"status": "IN_PROGRESS", "versionNumber": 3}}, 0.5))
    keep(m.on_execution_done("job-1", 3, "FAILED", NASTY_DETAILS, 1.0))
    keep(reply(m, "job-1/update/rejected", {"code": "InvalidRequest", "message": "bad details"}, 1.1))
    keep(reply(m, "job-1/update/accepted", {}, 1.2))
    # a result whose acknowledgement was lost is checked first ({jobId}/get), then sent again
    journal = Journal()
    journal.put("job-9", 1, 0.0, state="finished", status="SUCCEEDED", statusDetails={"summary": "done"})
    m2 = JobsMachine(THING, journal, claim_mode="start-next")
    keep(m2.start(0.0))
    keep(reply(m2, "job-9/get/accepted", {"execution": {"status": "IN_PROGRESS", "versionNumber": 7}}, 0.1))
    keep(reply(m2, "job-9/update/accepted", {}, 0.2))  # then start-next
    return sent


def test_every_jobs_request_is_a_valid_api_input():
    sent = requests_of_every_kind()
    kinds = set()
    for publish in sent:
        operation, document = as_http_input(publish)
        kinds.add((operation, publish.topic.rsplit("/", 1)[-1]))
        aws_models.check(document, "iot-jobs-data", operation, path=publish.topic)
    # every kind of request was produced, so none is unchecked
    assert kinds == {("DescribeJobExecution", "get"), ("UpdateJobExecution", "update"),
                     ("StartNextPendingJobExecution", "start-next")}, kinds
    assert {p.topic for p in sent} >= {PREFIX + "$next/get", PREFIX + "job-1/update", PREFIX + "job-1/get",
                                       PREFIX + "job-9/get", PREFIX + "job-9/update", PREFIX + "start-next"}
    finals = [p.payload for p in sent if p.payload.get("status") == "FAILED"]
    assert len(finals) == 2 and len(finals[0]["statusDetails"]) == jobs.MAX_DETAIL_ENTRIES  # full, then minimal


def test_the_mapping_and_the_check_refuse_bad_requests():
    bad = Publish(PREFIX + "job 1/update", {"status": "DONE", "statusDetails": {"k": ""}, "clientToken": "t"})
    operation, document = as_http_input(bad)
    problems = aws_models.problems(document, "iot-jobs-data", operation)
    assert any(p.startswith("jobId: 'job 1' does not match") for p in problems), problems
    assert any(p.startswith("status: 'DONE' is not one of") for p in problems), problems
    assert "statusDetails['k']: 0 characters, fewer than the minimum 1" in problems
    with pytest.raises(AssertionError):
        as_http_input(Publish(PREFIX + "$next/get", {"clientToken": "t" * 65}))


# -- the project's own copies of API limits agree with the model ---------------------------------------------
SAMPLES = ["", "a", "a\n", "A-b_9", "a:b", "a b", "a.b", "a/b", "$next", "caf\u00e9", "a\nb", "x" * 64, "x" * 65,
           "x" * 128, "x" * 129]


def _model_accepts(text, service, operation, member):
    return aws_models.problems(text, service, operation, member) == []


@pytest.mark.parametrize("ours, service, operation, member", [
    (jobs_protocol.JOB_ID, "iot-jobs-data", "UpdateJobExecution", "jobId"),
    (jobs_protocol.THING_NAME, "iot-jobs-data", "UpdateJobExecution", "thingName"),
    (jobs_protocol.JOB_ID, "iot", "CreateJob", "jobId"),
    (jobs_protocol.DETAIL_KEY, "iot-jobs-data", "UpdateJobExecution", "statusDetails"),
    (PROFILE_NAME_RE, "iot", "CreateSecurityProfile", "securityProfileName"),
    (PROFILE_NAME_RE, "iot", "CreateSecurityProfile", "behaviors[].name"),
], ids=["JOB_ID/update", "THING_NAME", "JOB_ID/create", "DETAIL_KEY", "profile.NAME_RE/profile",
        "profile.NAME_RE/behavior"])
def test_our_name_rules_are_the_models(ours, service, operation, member):
    for text in SAMPLES:
        value = {text: "v"} if member == "statusDetails" else text  # a map's key
        assert bool(ours.match(text)) == _model_accepts(value, service, operation, member), text


def test_our_job_document_and_details_limits_are_the_models():
    assert jobs_protocol.MAX_DOCUMENT_CHARS == aws_models.input_shape("iot", "CreateJob", "document").metadata["max"]
    key = aws_models.input_shape("iot-jobs-data", "UpdateJobExecution", "statusDetails").key
    for text in SAMPLES:
        clean = jobs_protocol.DETAIL_KEY_BAD.sub("_", text)[:jobs_protocol.MAX_DETAIL_KEY]
        assert not clean or _model_accepts({clean: "v"}, "iot-jobs-data", "UpdateJobExecution", "statusDetails"), text
    assert key.metadata["max"] == jobs_protocol.MAX_DETAIL_KEY


def test_our_job_statuses_are_the_models():
    statuses = aws_models.input_shape("iot-jobs-data", "UpdateJobExecution", "status").enum
    assert set(jobs_protocol.DEVICE_STATUSES) <= set(statuses) and set(jobs_protocol.TERMINAL) <= set(statuses)
    # every status but the two a job moves on from is terminal
    assert set(statuses) - set(jobs_protocol.TERMINAL) == {"QUEUED", "IN_PROGRESS"}


def test_what_the_running_listener_publishes_is_a_valid_api_input(tmp_path):
    """The same check on the wire: the real listener against the offline Jobs service, every publish kept."""
    import threading

    from ggdefender.local.cloud.jobs_service import JobsService
    from ggdefender.remediation.listener import RemediationListener
    from remediation.test_remediation_listener import T as LISTENER_THING
    from remediation.test_remediation_listener import FakeCore, LoopedIpc

    class RecordingIpc(LoopedIpc):
        def __init__(self, remediation):
            super().__init__(remediation)
            self.sent = []

        def publish_iot(self, topic, payload, qos=1):
            self.sent.append((topic, json.loads(payload)))
            super().publish_iot(topic, payload, qos)

    ipc = RecordingIpc({"AllowedOperations": ["collect-now"]})
    service = JobsService(FakeCore(ipc), tmp_path / "cloud", None)
    stop = threading.Event()
    thread = threading.Thread(target=RemediationListener(ipc, LISTENER_THING, tmp_path / "state").run,
                              args=(stop,), daemon=True)
    thread.start()
    try:
        service.create_job({"schema": "ggdefender.remediation/1", "steps": [
            {"operation": "stop-listener", "arguments": {"port": 9}}]}, "j-refused")
        assert service.wait_for("j-refused", ("SUCCEEDED", "FAILED", "REJECTED"), timeout=30)["status"] == "REJECTED"
    finally:
        stop.set()
        thread.join(10)
        service.close()
    prefix = f"$aws/things/{LISTENER_THING}/jobs/"
    requests = [(t, p) for t, p in ipc.sent if t.startswith(prefix)]
    assert {t[len(prefix):] for t, _ in requests} >= {"$next/get", "j-refused/update"}
    for topic, payload in requests:
        operation, document = as_http_input(Publish(topic, payload), thing=LISTENER_THING)
        aws_models.check(document, "iot-jobs-data", operation, path=topic)


def test_plugin_metric_names_and_types_are_the_models():
    from ggdefender.plugins.contract import SampleError, ValueType, check_metric_name

    for text in SAMPLES:
        try:
            ours = check_metric_name(text) == text
        except SampleError:
            ours = False
        assert ours == _model_accepts(text, "iot", "CreateCustomMetric", "metricName"), text
    enum = aws_models.input_shape("iot", "CreateCustomMetric", "metricType").metadata["enum"]
    assert sorted(t.metric_type for t in ValueType) == sorted(enum)


# -- violation events (iot ListViolationEvents' ViolationEvent, plus our documented additions) ----------------
# docs/detect.md ("Our additions to AWS's shape") lists these; every other member must be AWS's.
VIOLATION_ADDITIONS = ("violationStartTime", "suppressAlerts", "offendingValues", "thresholdValue",
                       "mitigationActions", "reason")


def violation_event_problems(event, path=""):
    aws_part = {k: v for k, v in event.items() if k not in VIOLATION_ADDITIONS}
    return aws_models.problems(aws_part, "iot", "ListViolationEvents", "violationEvents[]", path=path, output=True)


def test_the_additions_are_the_documented_ones():
    with open(os.path.join(os.path.dirname(FIXTURES), "..", "..", "..", "docs", "detect.md"), encoding="utf-8") as fh:
        text = " ".join(fh.read().split())
    documented = text[text.index("Our additions to AWS's shape"):][:700]
    assert all(f"`{name}`" in documented for name in VIOLATION_ADDITIONS), documented


def test_violation_events_of_every_kind_are_aws_violation_events():
    from ggdefender.detect.evaluator import INVALIDATE_AFTER, Evaluator
    from ggdefender.detect.statistics import History, StatsConfig

    profile = load_profile({"securityProfileName": "All-Kinds", "behaviors": [
        {"name": "ports", "metric": "aws:listening-tcp-ports",
         "criteria": {"comparisonOperator": "in-port-set", "value": {"ports": [22]}}},
        {"name": "peers", "metric": "aws:destination-ip-addresses",
         "criteria": {"comparisonOperator": "in-cidr-set", "value": {"cidrs": ["10.0.0.0/8"]}}},
        {"name": "conns", "metric": "aws:num-established-tcp-connections",
         "criteria": {"comparisonOperator": "less-than", "value": {"count": 100}}, "suppressAlerts": True},
        {"name": "cpu", "metric": "cpu_usage",
         "criteria": {"comparisonOperator": "less-than", "value": {"number": 90}}},
        {"name": "stat", "metric": "aws:all-packets-out", "criteria": {
            "comparisonOperator": "less-than-equals", "durationSeconds": 300,
            "statisticalThreshold": {"statistic": "p90"}}},
    ]}, {"cpu_usage": "number"})
    ev = Evaluator("gw-17", profile.behaviors, history=History(StatsConfig(warmup=2)))
    events = []
    for i, packets in enumerate([100, 110, 105, 5000]):
        events += ev.observe({"aws:listening-tcp-ports": (22, 8888), "aws:destination-ip-addresses": ("192.0.2.1",),
                              "aws:num-established-tcp-connections": 500, "cpu_usage": 95.5, "aws:all-packets-out": packets},
                             300.0 * i + 1)
    events += ev.tick(1500.0)
    events += ev.tick(1500.0 + INVALIDATE_AFTER + 1)  # no datapoints for two days: invalidated, with a reason
    kinds = {(e["behavior"]["name"], e["violationEventType"]) for e in events}
    assert {("ports", "in-alarm"), ("peers", "in-alarm"), ("conns", "in-alarm"), ("cpu", "in-alarm"),
            ("stat", "in-alarm"), ("ports", "alarm-invalidated")} <= kinds, kinds
    assert any("thresholdValue" in e for e in events) and any("reason" in e for e in events)
    problems = [p for i, e in enumerate(events) for p in violation_event_problems(e, path=f"events[{i}]")]
    assert problems == []


def test_a_broken_violation_event_is_refused():
    event = {"violationId": "v 1", "thingName": "gw", "securityProfileName": "P", "behavior": {"metric": "m"},
             "violationEventType": "in-alarm", "violationEventTime": 1.0, "offendingValues": [1], "extra": 1}
    problems = violation_event_problems(event)
    assert any(p.startswith("violationId: 'v 1' does not match") for p in problems), problems
    assert "behavior: required member 'name' is missing" in problems
    assert any(p.startswith("(document): unknown member 'extra'") for p in problems), problems


def test_verification_states_detect_accepts_are_aws_ones():
    """What the configuration accepts as a verification state ends up in violation events: AWS must take it."""
    from ggdefender.detect.config import parse_verification
    from ggdefender.settings import ConfigError

    vid = "0d5d6f8e-6a1e-4c60-9f0e-2f1b8b0c7d11"
    for description in ["lab rig", "caf\u00e9", "tab\there", "del\x7f", "x" * 1000, "x" * 1001]:
        for key in (vid, vid + "\n"):
            event = {"violationId": key.strip(), "thingName": "gw", "securityProfileName": "P",
                     "behavior": {"name": "b"}, "verificationStateDescription": description}
            aws_ok = key == key.strip() and violation_event_problems(event) == []
            try:
                parse_verification({key: {"State": "BENIGN_POSITIVE", "Description": description}})
                ours = True
            except ConfigError:
                ours = False
            assert ours == aws_ok, (key, description)
