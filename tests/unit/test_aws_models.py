"""The botocore-model validator itself: each rule accepts a known-good value and rejects known-bad ones,
with the path of the problem, so no format test built on it can pass vacuously."""

import copy

import botocore.session
import pytest
from botocore.model import ShapeResolver

import aws_models as M

PROFILE = {"securityProfileName": "ExpectedListeners", "securityProfileDescription": "listeners we expect",
           "behaviors": [{"name": "UnexpectedTcpListener-High", "metric": "aws:listening-tcp-ports",
                          "criteria": {"comparisonOperator": "in-port-set", "value": {"ports": [22, 38905]},
                                       "consecutiveDatapointsToAlarm": 2}}]}


def profile_problems(**changes):
    doc = copy.deepcopy(PROFILE)
    for path, value in changes.items():
        target, keys = doc, path.split("__")
        for key in keys[:-1]:
            target = target[int(key)] if isinstance(target, list) else target[key]
        last = int(keys[-1]) if isinstance(target, list) else keys[-1]
        if value is KeyError:
            del target[last]
        else:
            target[last] = value
    return M.problems(doc, "iot", "CreateSecurityProfile")


def test_a_valid_profile_has_no_problems():
    assert M.problems(PROFILE, "iot", "CreateSecurityProfile") == []
    M.check(PROFILE, "iot", "CreateSecurityProfile")


def test_check_raises_listing_every_problem():
    with pytest.raises(AssertionError, match="securityProfileName.*\n.*behaviors"):
        M.check({"securityProfileName": "a b", "behaviors": "x"}, "iot", "CreateSecurityProfile")


@pytest.mark.parametrize("changes, expected", [
    ({"colour": "red"}, "(document): unknown member 'colour'"),
    ({"behaviors__0__criteria__bogus": 1}, "behaviors[0].criteria: unknown member 'bogus'"),
    ({"securityProfileName": KeyError}, "(document): required member 'securityProfileName' is missing"),
    ({"behaviors__0__name": KeyError}, "behaviors[0]: required member 'name' is missing"),
])
def test_unknown_and_required_members(changes, expected):
    found = profile_problems(**changes)
    assert any(p.startswith(expected) for p in found), found


@pytest.mark.parametrize("changes, expected", [
    ({"behaviors__0__criteria__comparisonOperator": "bigger-than"},
     "behaviors[0].criteria.comparisonOperator: 'bigger-than' is not one of less-than"),
    ({"securityProfileName": "has space"}, "securityProfileName: 'has space' does not match the pattern"),
    ({"securityProfileDescription": "tab\there"}, "securityProfileDescription: 'tab\\there' does not match"),
    ({"securityProfileName": "x" * 129}, "securityProfileName: 129 characters, more than the maximum 128"),
    ({"securityProfileName": ""}, "securityProfileName: 0 characters, fewer than the minimum 1"),
    ({"behaviors__0__criteria__consecutiveDatapointsToAlarm": 0},
     "behaviors[0].criteria.consecutiveDatapointsToAlarm: 0 is below the minimum 1"),
    ({"behaviors__0__criteria__consecutiveDatapointsToAlarm": 11},
     "behaviors[0].criteria.consecutiveDatapointsToAlarm: 11 is above the maximum 10"),
    ({"behaviors": [PROFILE["behaviors"][0]] * 101}, "behaviors: 101 items, more than the maximum 100"),
])
def test_enum_pattern_length_and_range(changes, expected):
    found = profile_problems(**changes)
    assert any(p.startswith(expected) for p in found), found


def test_limits_are_inclusive():
    assert profile_problems(securityProfileName="x" * 128, behaviors=[PROFILE["behaviors"][0]] * 100) == []
    assert profile_problems(behaviors__0__criteria__consecutiveDatapointsToAlarm=10) == []


@pytest.mark.parametrize("changes, expected", [
    ({"behaviors": {"name": "x"}}, "behaviors: expected a list"),
    ({"behaviors__0": "x"}, "behaviors[0]: expected an object"),
    ({"behaviors__0__suppressAlerts": "true"}, "behaviors[0].suppressAlerts: expected a boolean"),
    ({"behaviors__0__criteria__durationSeconds": "300"}, "behaviors[0].criteria.durationSeconds: expected integer"),
    ({"behaviors__0__criteria__durationSeconds": 300.5}, "behaviors[0].criteria.durationSeconds: expected integer"),
    ({"behaviors__0__criteria__durationSeconds": True}, "behaviors[0].criteria.durationSeconds: expected integer"),
    ({"securityProfileName": None}, "securityProfileName: expected a string"),
    ({"alertTargets": []}, "alertTargets: expected a map"),
])
def test_types(changes, expected):
    found = profile_problems(**changes)
    assert any(p.startswith(expected) for p in found), found


def test_map_keys_and_values_are_checked():
    base = {"jobId": "j1", "thingName": "gw", "status": "SUCCEEDED"}
    assert M.problems(dict(base, statusDetails={"port": "8888"}), "iot-jobs-data", "UpdateJobExecution") == []
    found = M.problems(dict(base, statusDetails={"a b": "x", "ok": "", "c": "bell\x07"}),
                       "iot-jobs-data", "UpdateJobExecution")
    assert any(p.startswith("statusDetails<key 'a b'>: 'a b' does not match") for p in found), found
    assert "statusDetails['ok']: 0 characters, fewer than the minimum 1" in found
    assert any(p.startswith("statusDetails['c']: 'bell\\x07' does not match") for p in found), found


def test_a_list_item_path_reaches_nested_members():
    finding = {"Resources": [{"Type": " ", "Id": "x"}]}
    found = M.problems(finding, "securityhub", "BatchImportFindings", member="Findings[]", path="Findings[0]")
    assert any(p.startswith("Findings[0].Resources[0].Type: ' ' does not match") for p in found), found
    assert "Findings[0]: required member 'SchemaVersion' is missing" in found


def test_member_selection_errors_name_the_member():
    with pytest.raises(KeyError, match="nope"):
        M.input_shape("iot", "CreateJob", "nope")
    with pytest.raises(KeyError, match="not a list"):
        M.input_shape("iot", "CreateJob", "document[]")


# -- synthetic shapes for the kinds the operations above do not use ------------------------------------------
def synthetic(pattern="[a-z]+"):
    resolver = ShapeResolver({
        "Top": {"type": "structure", "members": {
            "U": {"shape": "Choice"}, "D": {"shape": "Doc"}, "T": {"shape": "Time"}, "B": {"shape": "Bytes"},
            "P": {"shape": "Pat"}, "F": {"shape": "Ratio"}}},
        "Choice": {"type": "structure", "union": True, "members": {"a": {"shape": "Pat"}, "b": {"shape": "Pat"}}},
        "Doc": {"type": "structure", "document": True, "members": {}},
        "Time": {"type": "timestamp"},
        "Bytes": {"type": "blob", "max": 4},
        "Pat": {"type": "string", "pattern": pattern},
        "Ratio": {"type": "double", "min": 0, "max": 1},
    })
    return resolver.get_shape_by_name("Top")


def walk(shape, value):
    found = []
    M._walk(shape, value, "", found)
    return found


def test_union_document_timestamp_blob_double():
    top = synthetic()
    good = {"U": {"a": "x"}, "D": {"any": [1, {"thing": None}]}, "T": "2026-01-24T10:00:00.000Z", "B": b"1234",
            "F": 0.5}
    assert walk(top, good) == []
    assert walk(top, dict(good, T=1764000310.5)) == []
    assert "U: a union (Choice) takes exactly one member, got 2" in walk(top, dict(good, U={"a": "x", "b": "y"}))
    assert any(p.startswith("T: expected a timestamp") for p in walk(top, dict(good, T="yesterday")))
    assert "B: 5 bytes, more than the maximum 4" in walk(top, dict(good, B=b"12345"))
    assert "F: 1.5 is above the maximum 1" in walk(top, dict(good, F=1.5))


def test_a_pattern_that_cannot_be_translated_fails_loudly():
    with pytest.raises(M.UnsupportedPattern, match="class intersection"):
        walk(synthetic("[a-z&&[^b]]+"), {"P": "a"})


@pytest.mark.parametrize("pattern, construct", [
    ("\\p{Foo}", "unknown Unicode class"), ("[a-z&&[^b]]", "intersection"), ("[a[b]]", "nested class"),
    ("(?<n>x)", "special group"), ("(?i)x", "special group"), ("\\Qx\\E", "escape \\\\Q"), ("[a-z", "unclosed"),
    ("\\pL", "one-letter"), ("[]a]", "first in a class"), ("[\\p{L}-z]", "range starting"), ("\\bx", "escape"),
    ("[\\P{L}]", "negated"), ("x\\", "trailing backslash"), ("\\1", "escape \\\\1"),
])
def test_unsupported_java_constructs_are_refused(pattern, construct):
    with pytest.raises(M.UnsupportedPattern, match=construct):
        M.compiled(pattern)


@pytest.mark.parametrize("pattern, good, bad", [
    # Java's `.` stops at \r and \u2028 too (\S, being ASCII, takes one \u2028 but not two)
    (".*\\S.*", ["a", " a ", "\u2028"], ["", "   ", "a\rb", "\u2028\u2028"]),
    ("\\w+", ["a_1"], ["\u00e9", "a-b"]),  # Java's \w is ASCII
    ("[\\p{Graph}\\x20]*", ["a b!~", ""], ["\u00e9", "a\tb"]),  # POSIX classes are ASCII in Java
    ("[^\\p{C}]+", ["caf\u00e9 1", "\u4e2d"], ["a\x00", "a\u200bb", "a\nb"]),  # C: Cc, Cf, Co, Cn, Cs
    ("^([\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*)$", ["\u00c9t\u00e9 2 a@b", ""], ["a!b", "a\tb"]),
    ("[\\s\\S]*", ["a\n\u00e9"], []),
    ("[\\S]+", ["a\u00e9"], ["a b", "\t"]),
    ("^(?!aws:)[a-zA-Z+-=._:/]+$", ["env"], ["aws:env"]),
    ("[a-zA-Z0-9_-]+|^\\$next", ["job-1", "$next"], ["$nextx", "a b", "x$next"]),
    ("[\\u0009\\u000A\\u000D\\u0020-\\u007E\\u00A1-\\u00FF]+", ["a\t\u00ff"], ["\u0100", "\x7f"]),
])
def test_java_meaning_of_patterns(pattern, good, bad):
    rx = M.compiled(pattern)
    for text in good:
        assert rx.fullmatch(text), (pattern, text)
    for text in bad:
        assert not rx.fullmatch(text), (pattern, text)


@pytest.mark.parametrize("service", ["iot", "securityhub", "iot-jobs-data", "greengrassv2"])
def test_every_pattern_of_the_services_we_check_translates(service):
    """No pattern of these services is left unchecked because the translator cannot read it."""
    model = botocore.session.get_session().get_service_model(service)
    patterns = {model.shape_for(n).metadata.get("pattern") for n in model.shape_names} - {None}
    assert patterns
    for pattern in patterns:
        M.compiled(pattern)


def test_an_idempotency_token_is_not_required_of_the_caller():
    base = {"metricName": "cpu_usage", "metricType": "number"}
    assert M.problems(base, "iot", "CreateCustomMetric") == []  # clientRequestToken: botocore fills it in
    assert "(document): required member 'metricType' is missing" in M.problems(
        {"metricName": "cpu_usage"}, "iot", "CreateCustomMetric")
    assert any(p.startswith("clientRequestToken: 'a b' does not match") for p in M.problems(
        dict(base, clientRequestToken="a b"), "iot", "CreateCustomMetric"))


def test_an_output_shape_member_can_be_checked():
    event = {"violationId": "v-1", "thingName": "gw", "securityProfileName": "P", "behavior": {"name": "b"},
             "violationEventType": "in-alarm", "violationEventTime": 1764000000.5}
    assert M.problems(event, "iot", "ListViolationEvents", "violationEvents[]", output=True) == []
    found = M.problems(dict(event, violationEventType="raised"), "iot", "ListViolationEvents",
                       "violationEvents[]", output=True)
    assert any(p.startswith("violationEventType: 'raised' is not one of") for p in found), found
    with pytest.raises(AssertionError, match="ListViolationEvents output violationEvents"):
        M.check({"bogus": 1}, "iot", "ListViolationEvents", "violationEvents[]", output=True)
