"""`ggdefender fleet act`: the Act handler once over a file of violations, against moto's AWS."""

import json

import boto3
from moto import mock_aws

from ggdefender import cli

REGION = "eu-west-1"


def _violation(i, **extra):
    v = {"violationId": f"v-{i}", "thingName": f"gw-{i}", "securityProfileName": "Seed",
         "behavior": {"name": "ports", "metric": "aws:listening-tcp-ports"}, "metricValue": {"ports": [8888]},
         "violationEventType": "in-alarm", "violationEventTime": 1764000000.0 + i}
    v.update(extra)
    return v


def test_fleet_act_imports_the_findings_of_a_json_lines_file(tmp_path, capsys):
    path = tmp_path / "violations.jsonl"
    path.write_text("\n".join(json.dumps(_violation(i)) for i in range(3)) + "\n")
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"Findings": {"AwsAccountId": "123456789012", "Region": REGION}}))
    with mock_aws():
        assert cli.main(["fleet", "act", str(path), "--settings", str(settings)]) == 0
        stored = boto3.client("securityhub", region_name=REGION).get_findings()["Findings"]
    assert sorted(f["ProductFields"]["ggdefender/violationId"] for f in stored) == ["v-0", "v-1", "v-2"]
    assert json.loads(capsys.readouterr().out)["securityHubCalls"] == 1


def test_fleet_act_names_bad_input(tmp_path, capsys):
    path = tmp_path / "violations.json"
    path.write_text(json.dumps([_violation(1, violationEventType="nope")]))
    with mock_aws():
        assert cli.main(["fleet", "act", str(path), "--region", REGION]) == 1
    assert "violationEventType" in json.loads(capsys.readouterr().out)["rejected"][0]["error"]
    path.write_text('{"violationId": 1}\nnot json\n')
    assert cli.main(["fleet", "act", str(path)]) == 2
    assert "line 2: not JSON" in capsys.readouterr().err
    path.write_text("[]")
    settings = tmp_path / "s.json"
    settings.write_text(json.dumps({"Remediation": {"Jobs": {"ports": "reboot"}}}))
    assert cli.main(["fleet", "act", str(path), "--settings", str(settings)]) == 2
    assert "Remediation.Jobs" in capsys.readouterr().err


def test_fleet_quarantine_setup_makes_the_group_and_job(tmp_path, capsys):
    doc = tmp_path / "doc.json"
    doc.write_text(json.dumps({"schema": "ggdefender.remediation/1", "steps": [{"operation": "collect-now"}]}))
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"Remediation": {"Quarantine": {"ThingGroup": "q", "Behaviors": ["ports"]}}}))
    with mock_aws():
        assert cli.main(["fleet", "quarantine-setup", str(doc), "--settings", str(settings), "--region", REGION]) == 0
        jobs = boto3.client("iot", region_name=REGION).list_jobs()["jobs"]
    out = json.loads(capsys.readouterr().out)
    assert (out["group"], out["job"]) == ("created", "created") and [j["jobId"] for j in jobs] == [out["jobId"]]
    doc.write_text(json.dumps({"version": "1.0", "steps": []}))
    assert cli.main(["fleet", "quarantine-setup", str(doc), "--settings", str(settings)]) == 2
    assert "must be ours" in capsys.readouterr().err
