import copy
import json
import os

import pytest

from ggdefender.detect import metrics as M
from ggdefender.detect.profile import ProfileError, lint, load_profile, read_profile_file, validate_behaviors

from detect_helpers import FIXTURES, behavior


def _errors(doc, custom_types=None):
    with pytest.raises(ProfileError) as exc:
        load_profile(doc, custom_types)
    return exc.value.errors


def _one(b):
    return {"securityProfileName": "P", "behaviors": [b]}


def test_seed_002_data_exfiltration_profile_loads_unchanged():
    path = os.path.join(FIXTURES, "seed-002-data-exfiltration.json")
    with open(path) as fh:
        original = json.load(fh)
    doc = copy.deepcopy(original)
    prof = load_profile(doc)
    assert doc == original  # nothing was rewritten
    (b,) = prof.behaviors
    assert (prof.name, b.name, b.metric) == ("DataExfiltrationCheck", "PacketExfiltration", "aws:all-packets-out")
    assert (b.criteria_type, b.statistic, b.quantile, b.duration) == ("STATISTICAL", "p99.99", 99.99, 300)
    assert (b.to_alarm, b.to_clear, b.operator) == (1, 1, "greater-than")
    assert b.source is doc["behaviors"][0]
    assert read_profile_file(path).name == "DataExfiltrationCheck"
    # valid, but it says normal traffic is above p99.99: the lint says so
    assert "less-than-equals p99.99" in lint(prof)[0]


@pytest.mark.parametrize("metric,operator,value", [
    ("aws:all-bytes-out", "less-than", {"count": 1}),
    ("aws:all-bytes-in", "less-than-equals", {"count": 1}),
    ("aws:all-packets-out", "greater-than", {"count": 1}),
    ("aws:all-packets-in", "greater-than-equals", {"count": 0}),
    ("aws:num-listening-tcp-ports", "less-than", {"count": 5}),
    ("aws:listening-tcp-ports", "in-port-set", {"ports": [22]}),
    ("aws:listening-udp-ports", "not-in-port-set", {"ports": [0, 65535]}),
    ("aws:destination-ip-addresses", "in-cidr-set", {"cidrs": ["10.0.0.0/8", "2001:db8::/32"]}),
    ("aws:destination-ip-addresses", "not-in-cidr-set", {"cidrs": ["192.0.2.1"]}),
    ("aws:message-byte-size", "less-than", {"count": 1500}),
    ("aws:num-established-tcp-connections", "less-than", {"count": 10}),
])
def test_every_operator_and_value_type_is_accepted_where_valid(metric, operator, value):
    crit = {"durationSeconds": 300} if M.CATALOGUE[metric].duration == M.REQUIRED else {}
    prof = load_profile(_one(behavior(metric, operator, value, **crit)))
    assert prof.behaviors[0].operator == operator


@pytest.mark.parametrize("ctype,operator,value", [
    ("number", "less-than", {"number": 1.5}),
    ("number-list", "in-set", {"numbers": [1, 2.5]}),
    ("number-list", "not-in-set", {"numbers": [3]}),
    ("string-list", "in-set", {"strings": ["a"]}),
    ("string-list", "not-in-set", {"strings": ["b"]}),
    ("ip-address-list", "in-cidr-set", {"cidrs": ["10.0.0.0/8"]}),
    ("ip-address-list", "not-in-cidr-set", {"cidrs": ["10.0.0.0/8"]}),
])
def test_custom_metric_types(ctype, operator, value):
    prof = load_profile(_one(behavior("myMetric", operator, value)), {"myMetric": ctype})
    assert prof.behaviors[0].spec.custom_type == ctype


def test_integer_fields_accept_floats_and_strings_from_greengrass_configuration():
    b = behavior("aws:all-bytes-out", "less-than", {"count": 4096.0}, durationSeconds=300.0,
                 consecutiveDatapointsToAlarm="2", consecutiveDatapointsToClear=3.0)
    (beh,) = load_profile(_one(b)).behaviors
    assert (beh.duration, beh.to_alarm, beh.to_clear, beh.threshold) == (300, 2, 3, 4096)


@pytest.mark.parametrize("b,field,fragment", [
    (behavior("aws:all-bytes-out", "in-port-set", {"count": 1}, durationSeconds=300),
     "criteria.comparisonOperator", "not valid for aws:all-bytes-out"),
    (behavior("aws:all-bytes-out", "less-than", {"ports": [1]}, durationSeconds=300),
     "criteria.value", "compares against value.count"),
    (behavior("aws:all-bytes-out", "less-than", {"count": 1}),
     "criteria.durationSeconds", "required"),
    (behavior("aws:all-bytes-out", "less-than", {"count": 1}, durationSeconds=120),
     "criteria.durationSeconds", "expected one of 300"),
    (behavior("aws:listening-tcp-ports", "in-port-set", {"ports": [1]}, durationSeconds=300),
     "criteria.durationSeconds", "not allowed for list metric"),
    (behavior("aws:all-bytes-out", "less-than", {"count": 1}, durationSeconds=300, consecutiveDatapointsToAlarm=11),
     "criteria.consecutiveDatapointsToAlarm", "above the maximum 10"),
    (behavior("aws:all-bytes-out", "less-than", {"count": 1}, durationSeconds=300, consecutiveDatapointsToClear=0),
     "criteria.consecutiveDatapointsToClear", "below the minimum 1"),
    (behavior("aws:all-bytes-out", "less-than", durationSeconds=300, statisticalThreshold={"statistic": "p95"}),
     "criteria.statisticalThreshold.statistic", "expected one of Average, p0"),
    (behavior("aws:listening-tcp-ports", "in-port-set", statisticalThreshold={"statistic": "p90"}),
     "criteria.statisticalThreshold", "not supported"),
    (behavior("aws:destination-ip-addresses", mlDetectionConfig={"confidenceLevel": "HIGH"}),
     "criteria.mlDetectionConfig", "does not support"),
    (behavior("aws:all-bytes-out", mlDetectionConfig={"confidenceLevel": "High"}),
     "criteria.mlDetectionConfig.confidenceLevel", "one of LOW, MEDIUM, HIGH"),
    (behavior("aws:all-bytes-out", "less-than", {"count": 1}, mlDetectionConfig={"confidenceLevel": "LOW"}),
     "criteria.comparisonOperator", "not allowed with mlDetectionConfig"),
    (behavior("aws:bogus-metric", "less-than", {"count": 1}), "metric", "unknown metric"),
    (behavior("aws:listening-tcp-ports", "in-port-set", {"ports": [70000]}), "criteria.value.ports", "0-65535"),
    (behavior("aws:destination-ip-addresses", "in-cidr-set", {"cidrs": ["not-an-ip"]}),
     "criteria.value.cidrs[0]", "expected a CIDR"),
    (behavior("aws:destination-ip-addresses", "in-cidr-set", {"cidrs": ["999.1.1.1/8"]}),
     "criteria.value.cidrs[0]", "not a valid"),
    (behavior("aws:all-bytes-out", "less-than", {"count": -1}, durationSeconds=300), "criteria.value.count", ">= 0"),
    (behavior("aws:all-bytes-out", "less-than", {"count": 1}, durationSeconds=300, bogus=1), "criteria", "unknown field"),
    (behavior("aws:all-bytes-out", "foo-bar", {"count": 1}, durationSeconds=300), "criteria.comparisonOperator",
     "unknown operator"),
    (behavior("aws:all-bytes-out", "less-than", durationSeconds=300), "criteria.value", "required"),
])
def test_errors_name_the_behavior_and_the_field(b, field, fragment):
    errors = _errors(_one(b))
    assert any(e.startswith(f"behaviors[0] (b).{field}:") and fragment in e for e in errors), errors


def test_custom_metric_errors():
    errs = _errors(_one(behavior("cpu", "in-set", {"strings": ["x"]})), {"cpu": "number"})
    assert any("criteria.comparisonOperator" in e and "less-than" in e for e in errs)
    errs = _errors(_one({"name": "b", "metric": "cpu", "metricDimension": {"dimensionName": "d"},
                         "criteria": {"comparisonOperator": "less-than", "value": {"number": 1}}}))
    assert any("metricDimension" in e and "custom metrics" in e for e in errs)


def test_profile_level_errors():
    errs = _errors({"securityProfileName": "bad name!", "behaviors": "x", "foo": 1})
    assert any(e.startswith("securityProfileName:") for e in errs)
    assert any(e.startswith("behaviors:") for e in errs)
    assert any("unknown field(s) foo" in e for e in errs)
    b = behavior("aws:listening-tcp-ports", "in-port-set", {"ports": [1]})
    errs = _errors({"securityProfileName": "P", "behaviors": [b, dict(b)]})
    assert any("duplicate behavior name" in e for e in errs)
    errs = _errors({"securityProfileName": "P", "behaviors": [dict(b, name=f"b{i}") for i in range(101)]})
    assert any("at most 100" in e for e in errs)


def test_validate_behaviors_answers_like_the_api():
    ok = validate_behaviors([behavior("aws:listening-tcp-ports", "in-port-set", {"ports": [22]})])
    assert ok == {"valid": True, "validationErrors": []}
    bad = validate_behaviors([behavior("aws:listening-tcp-ports", "less-than", {"count": 1})])
    assert bad["valid"] is False and "comparisonOperator" in bad["validationErrors"][0]["errorMessage"]


def test_read_profile_file_errors(tmp_path):
    p = tmp_path / "p.json"
    p.write_text("{nope")
    with pytest.raises(ProfileError, match="not valid JSON"):
        read_profile_file(str(p))
    with pytest.raises(ProfileError, match="cannot read"):
        read_profile_file(str(tmp_path / "missing.json"))


def test_ml_behavior_without_duration_is_valid():
    (b,) = load_profile(_one(behavior("aws:all-bytes-out", mlDetectionConfig={"confidenceLevel": "HIGH"},
                                      consecutiveDatapointsToAlarm=2))).behaviors
    assert (b.criteria_type, b.confidence, b.duration, b.to_alarm) == ("MACHINE_LEARNING", "HIGH", None, 2)
