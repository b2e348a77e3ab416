"""The fleet tier's Act handler (ggdefender/fleet/act.py) against moto's IoT, IoT Jobs and Security Hub, and
botocore's Stubber where moto does not answer as AWS does (throttling, FailedFindings, ResourceAlreadyExists).
What each call carries is checked against botocore's service models (tests/aws_models.py) and the job
document against our remediation JSON schema."""

import base64
import json
from importlib import resources

import aws_models
import boto3
import jsonschema
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from ggdefender.detect import findings as F
from ggdefender.fleet import act
from ggdefender.settings import ConfigError

ACCOUNT, REGION = "123456789012", "eu-west-1"  # moto's default account
SCHEMA = json.loads(resources.files("ggdefender.remediation").joinpath("job_document.schema.json").read_text())


def violation(i=0, kind="in-alarm", thing=None, behavior="ports", **extra):
    v = {"violationId": f"0b6a3a0e-1111-4222-8333-{i:012d}", "thingName": thing or f"gw-{i}",
         "securityProfileName": "Seed",
         "behavior": {"name": behavior, "metric": "aws:listening-tcp-ports",
                      "criteria": {"comparisonOperator": "in-port-set", "value": {"ports": [22]}}},
         "metricValue": {"ports": [22, 8888]}, "violationEventType": kind, "violationEventTime": 1764000000.0 + i,
         "violationStartTime": 1764000000.0 + i, "verificationState": "UNKNOWN", "offendingValues": [8888]}
    v.update(extra)
    return v


def settings(**remediation):
    return act.parse_settings({"Findings": {"AwsAccountId": ACCOUNT, "Region": REGION},
                               "Remediation": remediation})


@pytest.fixture
def aws():
    with mock_aws():
        sh = boto3.client("securityhub", region_name=REGION)
        iot = boto3.client("iot", region_name=REGION)
        calls = {"BatchImportFindings": [], "CreateJob": []}
        for op, seen in calls.items():
            sh_or_iot = sh if op == "BatchImportFindings" else iot
            sh_or_iot.meta.events.register(f"provide-client-params.*.{op}",
                                           lambda params, seen=seen, **_: seen.append(params))
        yield act.Clients(sh, iot), calls


def stubbed():
    kw = {"region_name": REGION, "aws_access_key_id": "x", "aws_secret_access_key": "x"}
    sh, iot = boto3.client("securityhub", **kw), boto3.client("iot", **kw)
    return act.Clients(sh, iot), Stubber(sh), Stubber(iot)


def test_250_violations_take_three_calls_each_valid_for_botocores_model(aws):
    clients, calls = aws
    report = act.handle([violation(i) for i in range(250)], clients, settings())
    assert [len(c["Findings"]) for c in calls["BatchImportFindings"]] == [100, 100, 50]
    for call in calls["BatchImportFindings"]:
        aws_models.check(call, "securityhub", "BatchImportFindings")
        assert all(F.validate_finding(f) == [] for f in call["Findings"])
    assert report["securityHubCalls"] == 3 and report["failed"] == [] and report["rejected"] == []
    assert all(r["finding"] == "imported" for r in report["results"])
    pages = clients.securityhub.get_paginator("get_findings").paginate(PaginationConfig={"PageSize": 100})
    stored = [f for page in pages for f in page["Findings"]]
    assert len(stored) == 250 and stored[0]["Title"] == "Device Defender Detect (fleet): ports violated on gw-0"


def test_the_device_builds_its_findings_as_before():
    f = F.new_finding(violation(), F.FindingsConfig(), 1.0)
    assert f["Title"] == "Device Defender Detect (on device): ports violated on gw-0"
    assert F.record_actions(f, [{"operation": "x", "status": "y"}], 1.0)["Remediation"]["Recommendation"][
        "Text"].startswith("Local mitigation: ")


def test_a_job_with_our_document_for_the_violating_thing_and_a_retry_creates_no_second(aws):
    clients, calls = aws
    clients.iot.create_thing(thingName="gw-7")
    s = settings(Jobs={"Seed/ports": "stop-listener"})
    first = act.handle([violation(7)], clients, s)
    again = act.handle([violation(7)], clients, s)   # the same record delivered again
    (call,) = {c["jobId"]: c for c in calls["CreateJob"]}.values()   # both calls named the same job
    assert len(calls["CreateJob"]) == 2 and len(clients.iot.list_jobs()["jobs"]) == 1
    aws_models.check(call, "iot", "CreateJob")
    doc = json.loads(call["document"])
    jsonschema.validate(doc, SCHEMA)
    assert doc["steps"] == [{"name": "1-stop-listener", "operation": "stop-listener",
                             "arguments": {"port": 8888, "protocol": "tcp"}}]
    assert call["targets"] == [f"arn:aws:iot:{REGION}:{ACCOUNT}:thing/gw-7"]
    assert call["jobId"] == act.job_id(violation(7)["violationId"])
    assert first["results"][0]["actions"][0]["status"] == "created"
    assert again["results"][0]["actions"][0]["status"] in ("created", "exists")
    text = clients.securityhub.get_findings()["Findings"][0]["Remediation"]["Recommendation"]["Text"]
    assert text.startswith("Fleet remediation: create-job") and call["jobId"] in text


def test_resource_already_exists_means_the_job_is_done():
    clients, sh, iot = stubbed()
    iot.add_client_error("create_job", "ResourceAlreadyExistsException", "exists", 409)
    sh.add_response("batch_import_findings", {"FailedCount": 0, "SuccessCount": 1, "FailedFindings": []})
    with sh, iot:
        report = act.handle([violation(1)], clients, settings(Jobs={"ports": "stop-listener"}))
    assert report["results"][0]["actions"][0]["status"] == "exists" and report["failed"] == []
    sh.assert_no_pending_responses()


def test_only_allow_listed_behaviors_get_a_job_and_only_for_named_targets(aws):
    clients, calls = aws
    s = settings(Jobs={"Other/ports": "stop-listener", "conns": {"Operation": "block-ip"}})
    report = act.handle([violation(1), violation(2, behavior="conns", offendingValues=[]),
                         violation(3, behavior="conns", offendingValues=["not-an-ip", 7])], clients, s)
    assert calls["CreateJob"] == [] and all(r["actions"] == [] for r in report["results"])
    with pytest.raises(ConfigError, match="Jobs.*kill-process"):
        settings(Jobs={"ports": "kill-process"})   # targets no one can check: jobs by hand only


def test_suppressed_alerts_get_no_finding_and_no_remediation(aws):
    clients, calls = aws
    clients.iot.create_thing_group(thingGroupName="quarantine")
    s = settings(Jobs={"ports": "stop-listener"}, Quarantine={"ThingGroup": "quarantine", "Behaviors": ["ports"]})
    report = act.handle([violation(1, suppressAlerts=True)], clients, s)
    assert report["results"][0]["actions"] == [] and "finding" not in report["results"][0]
    assert calls == {"BatchImportFindings": [], "CreateJob": []}


def test_quarantine_membership_added_kept_on_clear_and_released_when_configured(aws):
    clients, _ = aws
    clients.iot.create_thing(thingName="gw-1")
    clients.iot.create_thing(thingName="gw-2")
    clients.iot.create_thing_group(thingGroupName="quarantine")

    def members():
        return sorted(clients.iot.list_things_in_thing_group(thingGroupName="quarantine")["things"])

    keep = settings(Quarantine={"ThingGroup": "quarantine", "Behaviors": ["Seed/ports"]})
    act.handle([violation(1), violation(2, behavior="other"), violation(1)], clients, keep)
    assert members() == ["gw-1"]
    act.handle([violation(1, kind="alarm-cleared")], clients, keep)
    assert members() == ["gw-1"]
    release = settings(Quarantine={"ThingGroup": "quarantine", "Behaviors": ["ports"], "ReleaseOnClear": True})
    report = act.handle([violation(1, kind="alarm-invalidated")], clients, release)
    assert members() == [] and report["results"][0]["actions"][0]["operation"] == "remove-from-thing-group"


def test_cleared_violation_archives_the_finding_from_its_own_times(aws):
    clients, calls = aws
    act.handle([violation(1)], clients, settings())
    cleared = violation(1, kind="alarm-cleared", violationEventTime=1764000900.0)
    act.handle([cleared], clients, settings())
    new, closed = (c["Findings"][0] for c in calls["BatchImportFindings"])
    assert closed["Id"] == new["Id"] and closed["CreatedAt"] == new["CreatedAt"]
    assert closed["UpdatedAt"] > new["UpdatedAt"] and closed["RecordState"] == "ARCHIVED"
    aws_models.check(calls["BatchImportFindings"][1], "securityhub", "BatchImportFindings")


def test_malformed_violations_are_skipped_and_named_never_failing_the_batch(aws):
    clients, calls = aws
    bad = ["text", {}, violation(1, thingName="gw 1"), violation(2, violationEventType="alarm"),
           violation(3, violationEventTime="yesterday"), violation(4, behavior=None)]
    bad[5]["behavior"] = {"metric": "x"}
    report = act.handle(bad + [violation(9)], clients, settings())
    errors = [r["error"] for r in report["rejected"]]
    assert [r["index"] for r in report["rejected"]] == [0, 1, 2, 3, 4, 5]
    for word, err in zip(["JSON object", "violationId", "thingName", "violationEventType", "violationEventTime",
                          "behavior"], errors):
        assert word in err
    assert [r["violationId"] for r in report["results"]] == [violation(9)["violationId"]]
    assert len(calls["BatchImportFindings"]) == 1 and report["failed"] == []


def test_throttling_is_retried_with_bounded_backoff_then_reported():
    clients, sh, _ = stubbed()
    sh.add_client_error("batch_import_findings", "LimitExceededException", "slow down", 429)
    sh.add_client_error("batch_import_findings", "LimitExceededException", "slow down", 429)
    sh.add_response("batch_import_findings", {"FailedCount": 0, "SuccessCount": 1, "FailedFindings": []})
    slept = []
    with sh:
        report = act.handle([violation(1)], clients, settings(), sleep=slept.append)
    assert report["results"][0]["finding"] == "imported" and report["retries"] == 2 and slept == [0.25, 0.5]
    clients, sh, _ = stubbed()
    for _ in range(3):
        sh.add_client_error("batch_import_findings", "LimitExceededException", "slow down", 429)
    with sh:
        report = act.handle([violation(1)], clients, act.parse_settings({"MaxAttempts": 3}), sleep=slept.append)
    assert report["failed"] == [0] and report["results"][0]["finding"].startswith("failed: LimitExceededException")
    sh.assert_no_pending_responses()


def test_findings_the_service_fails_are_sent_once_more_then_reported():
    clients, sh, _ = stubbed()
    vs = [violation(1), violation(2), violation(3)]
    ids = [act.finding_for(v, [], act.parse_settings({}).findings)["Id"] for v in vs]
    fail = {"FailedCount": 2, "SuccessCount": 1, "FailedFindings": [
        {"Id": ids[0], "ErrorCode": "InternalError", "ErrorMessage": "try again"},
        {"Id": ids[2], "ErrorCode": "InvalidInput", "ErrorMessage": "no"}]}
    sh.add_response("batch_import_findings", fail)
    again = {"FailedCount": 1, "SuccessCount": 1, "FailedFindings": [fail["FailedFindings"][1]]}
    sh.add_response("batch_import_findings", again, {"Findings": [act.finding_for(vs[i], [], act.parse_settings(
        {}).findings) for i in (0, 2)]})
    with sh:
        report = act.handle(vs, clients, act.parse_settings({}))
    assert [r["finding"] for r in report["results"]] == ["imported", "imported", "failed: InvalidInput: no"]
    assert report["failed"] == [2] and report["securityHubCalls"] == 2
    sh.assert_no_pending_responses()


def test_limits_bound_the_invocation_and_calls(aws):
    clients, calls = aws
    s = act.parse_settings({"MaxViolationsPerInvocation": 5, "MaxFindingsPerCall": 2})
    report = act.handle([violation(i) for i in range(7)], clients, s)
    assert [len(c["Findings"]) for c in calls["BatchImportFindings"]] == [2, 2, 1]
    assert [(r["index"], r["retryable"]) for r in report["rejected"]] == [(5, True), (6, True)]
    with pytest.raises(ConfigError, match="MaxFindingsPerCall"):
        act.parse_settings({"MaxFindingsPerCall": 101})


def test_lambda_handler_reads_kinesis_and_sqs_records_and_returns_only_retryable_failures(aws, monkeypatch):
    clients, calls = aws
    monkeypatch.setattr(act, "_default_clients", lambda: clients)
    monkeypatch.setenv(act.SETTINGS_ENV, json.dumps({"MaxViolationsPerInvocation": 3}))
    act._settings_from.cache_clear()

    def kinesis(seq, data):
        return {"eventSource": "aws:kinesis", "kinesis": {"sequenceNumber": seq, "data": data}}

    event = {"Records": [kinesis("1", base64.b64encode(json.dumps(violation(1)).encode()).decode()),
                         kinesis("2", "%%%"), kinesis("3", base64.b64encode(b"{").decode()),
                         kinesis("4", base64.b64encode(json.dumps(violation(4)).encode()).decode())]}
    out = act.lambda_handler(event, None)
    assert out["batchItemFailures"] == [{"itemIdentifier": "4"}]  # over the limit: later; malformed: never
    assert [r["index"] for r in out["report"]["rejected"]] == [1, 2, 3]
    assert "base64" in out["report"]["rejected"][0]["error"] and "not JSON" in out["report"]["rejected"][1]["error"]
    sqs = {"Records": [{"eventSource": "aws:sqs", "messageId": "m1", "body": json.dumps(violation(5))}]}
    assert act.lambda_handler(sqs, None)["batchItemFailures"] == []
    assert act.lambda_handler({"violations": [violation(6)]}, None)["report"]["results"][0]["finding"] == "imported"
    with pytest.raises(ValueError, match="Records"):
        act.lambda_handler({"nothing": 1}, None)
    act._settings_from.cache_clear()


def test_quarantine_setup_creates_the_group_and_its_continuous_job_once(aws):
    clients, calls = aws
    s = settings(Quarantine={"ThingGroup": "quarantine", "Behaviors": ["ports"]})
    doc = {"schema": "ggdefender.remediation/1", "steps": [{"operation": "collect-now"}]}
    groups = []
    clients.iot.meta.events.register("provide-client-params.iot.CreateThingGroup",
                                     lambda params, **_: groups.append(params))
    first = act.setup_quarantine(clients, s, doc)
    again = act.setup_quarantine(clients, s, doc)
    assert (first["group"], first["job"]) == ("created", "created") and again["jobId"] == first["jobId"]
    aws_models.check(groups[0], "iot", "CreateThingGroup")
    call = calls["CreateJob"][0]
    aws_models.check(call, "iot", "CreateJob")
    assert call["targetSelection"] == "CONTINUOUS" and call["targets"] == [first["thingGroupArn"]]
    jsonschema.validate(json.loads(call["document"]), SCHEMA)
    assert len(clients.iot.list_jobs()["jobs"]) == 1
    with pytest.raises(ValueError, match="steps/0"):
        act.setup_quarantine(clients, s, {"schema": "ggdefender.remediation/1", "steps": [{"operation": "rm"}]})
    with pytest.raises(ConfigError, match="Quarantine"):
        act.setup_quarantine(clients, settings(), doc)


def test_an_existing_group_and_job_are_reported_not_errors():
    clients, _, iot = stubbed()
    arn = f"arn:aws:iot:{REGION}:{ACCOUNT}:thinggroup/quarantine"
    iot.add_client_error("create_thing_group", "ResourceAlreadyExistsException", "other properties", 409)
    iot.add_response("describe_thing_group", {"thingGroupName": "quarantine", "thingGroupArn": arn})
    iot.add_client_error("create_job", "ResourceAlreadyExistsException", "exists", 409)
    with iot:
        out = act.setup_quarantine(clients, settings(Quarantine={"ThingGroup": "quarantine", "Behaviors": ["x"]}),
                                   {"schema": "ggdefender.remediation/1", "steps": [{"operation": "collect-now"}]})
    assert (out["group"], out["job"], out["thingGroupArn"]) == ("exists", "exists", arn)


def test_no_retry_past_the_deadline_and_botocore_retries_off(monkeypatch):
    clients, sh, _ = stubbed()
    sh.add_client_error("batch_import_findings", "LimitExceededException", "slow down", 429)
    slept = []
    with sh:   # the function's remaining time is used up: the throttled call is reported, not slept on
        report = act.handle([violation(1)], clients, settings(), sleep=slept.append, deadline=0.0)
    assert slept == [] and report["failed"] == [0]
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    act._default_clients.cache_clear()
    try:   # only Caller retries: botocore's own retries would multiply its bound
        made = act._default_clients()
        assert made.securityhub.meta.config.retries["total_max_attempts"] == 1
        assert made.iot.meta.config.retries["total_max_attempts"] == 1
    finally:
        act._default_clients.cache_clear()


def test_the_settings_example_in_the_docs_is_accepted():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[3] / "docs" / "fleet.md").read_text()
    section = text[text.index("## Acting on violations"):]
    example = section[section.index("```json") + 7:section.index("```", section.index("```json") + 7)]
    s = act.parse_settings(json.loads(example))
    assert s.quarantine and s.quarantine.thing_group == "ggdefender-quarantine" and s.jobs.rules
