import pytest

from ggdefender.detect import findings as F
from ggdefender.settings import ConfigError

EVENT = {
    "violationId": "0b6a3a0e-1111-4222-8333-944455556666", "thingName": "gw-17", "securityProfileName": "Seed",
    "behavior": {"name": "ports", "metric": "aws:listening-tcp-ports",
                 "criteria": {"comparisonOperator": "in-port-set", "value": {"ports": [22, 25, 38905]}}},
    "metricValue": {"ports": [22, 8888]}, "violationEventType": "in-alarm", "violationEventTime": 1764000000.0,
    "violationStartTime": 1764000000.0, "verificationState": "UNKNOWN", "offendingValues": [8888],
}
REQUIRED = ("SchemaVersion", "Id", "ProductArn", "GeneratorId", "AwsAccountId", "CreatedAt", "UpdatedAt", "Title",
            "Description", "Resources", "Severity", "Types")


def test_new_finding_has_all_required_fields_and_is_valid():
    cfg = F.FindingsConfig(account="123456789012", region="eu-west-1")
    f = F.new_finding(EVENT, cfg, 1764000001.25)
    assert all(k in f for k in REQUIRED)
    assert F.validate_finding(f) == []
    assert f["Id"] == "arn:aws:iot-device-defender:eu-west-1:123456789012:detect/violation/" + EVENT["violationId"]
    assert f["ProductArn"] == "arn:aws:securityhub:eu-west-1:123456789012:product/123456789012/default"
    assert f["GeneratorId"] == "Seed/ports"
    assert f["Resources"][0] == {"Type": "Other", "Id": "arn:aws:iot:eu-west-1:123456789012:thing/gw-17",
                                 "Partition": "aws", "Region": "eu-west-1"}
    assert f["CreatedAt"] == f["UpdatedAt"] == "2025-11-24T16:00:01.250Z"
    assert f["Types"] == ["Unusual Behaviors/Device/aws:listening-tcp-ports"]
    assert (f["Severity"]["Label"], f["Workflow"]["Status"], f["RecordState"]) == ("MEDIUM", "NOTIFIED", "ACTIVE")
    assert "8888" in f["Description"]


def test_validation_catches_missing_and_bad_fields():
    f = F.new_finding(EVENT, F.FindingsConfig(), 1.0)
    del f["Types"]
    f["AwsAccountId"] = "12"
    f["Severity"] = {"Label": "SEVERE"}
    problems = " ".join(F.validate_finding(f))
    assert "Types" in problems and "AwsAccountId" in problems and "SEVERE" in problems


@pytest.mark.parametrize("name,profile,overrides,label", [
    ("ports-Critical", "P", {}, "CRITICAL"),
    ("ports_low", "P", {}, "LOW"),
    ("ports", "P", {"P/ports": "HIGH"}, "HIGH"),
    ("ports", "P", {"ports": "LOW"}, "LOW"),
    ("threat-list-x", "ggdefender-threat-intel", {}, "HIGH"),
    ("ports", "P", {}, "MEDIUM"),
])
def test_severity_from_the_behavior(name, profile, overrides, label):
    assert F.severity_for(profile, name, F.FindingsConfig(severity_overrides=overrides)) == label


def test_updates_grow_updated_at_and_clear_archives():
    f = F.new_finding(EVENT, F.FindingsConfig(), 100.0)
    g = F.set_verification(f, "BENIGN_POSITIVE", "lab test", 100.0)   # same clock: still strictly later
    assert g["UpdatedAt"] > f["UpdatedAt"] and g["CreatedAt"] == f["CreatedAt"]
    assert g["Workflow"]["Status"] == "SUPPRESSED"
    assert g["ProductFields"]["ggdefender/verificationStateDescription"] == "lab test"
    h = F.record_actions(g, [{"operation": "stop-listener", "arguments": {"port": 8888}, "status": "SUCCEEDED",
                              "detail": "stopped pid 42"}], 50.0)
    assert h["UpdatedAt"] > g["UpdatedAt"]
    assert "stop-listener" in h["Remediation"]["Recommendation"]["Text"]
    assert "SUCCEEDED" in h["ProductFields"]["ggdefender/mitigation/0"]
    closed = F.close_finding(h, dict(EVENT, violationEventType="alarm-cleared", violationEventTime=400.0), 400.0)
    assert closed["RecordState"] == "ARCHIVED" and closed["UpdatedAt"] > h["UpdatedAt"]
    assert closed["ProductFields"]["ggdefender/violationEventType"] == "alarm-cleared"
    for x in (g, h, closed):
        assert F.validate_finding(x) == []
    assert F.set_verification(f, "TRUE_POSITIVE", None, 200.0)["Workflow"]["Status"] == "NOTIFIED"
    assert F.set_verification(f, "FALSE_POSITIVE", None, 200.0)["Workflow"]["Status"] == "SUPPRESSED"


def test_findings_config_errors():
    with pytest.raises(ConfigError, match="AwsAccountId"):
        F.parse_config({"AwsAccountId": "abc"})
    with pytest.raises(ConfigError, match="SeverityOverrides.x"):
        F.parse_config({"SeverityOverrides": {"x": "SEVERE"}})
    assert F.parse_config({"AwsAccountId": 123456789012.0}).account == "123456789012"
    assert F.parse_config({"AwsAccountId": 12345}).account == "000000012345"
