"""accessControl parsing and matching, rule by rule, as the nucleus does it."""

import pytest

from ggdefender.local.nucleus.authz import (CLI, MQTTPROXY, PUBSUB, Authorizer, PolicyError, compile_resource,
                                    denial_message, parse_access_control, parse_policy)

PUB_IOT = "aws.greengrass#PublishToIoTCore"
SUB_IOT = "aws.greengrass#SubscribeToIoTCore"
PUB = "aws.greengrass#PublishToTopic"
SUB = "aws.greengrass#SubscribeToTopic"


def authorizer(service, resources, operations=("*",), component="C"):
    a = Authorizer()
    errors = a.load(component, {"accessControl": {service: {"p1": {"operations": list(operations),
                                                                   "resources": list(resources)}}}})
    assert errors == []
    return a


@pytest.mark.parametrize("pattern,resource,allowed", [
    ("a/b", "a/b", True),
    ("a/b", "a/c", False),
    ("a/*", "a/b/c", True),          # '*' crosses levels
    ("*", "anything/at/all", True),
    ("a/*/c", "a/x/y/c", True),      # '*' in the middle (nucleus >= 2.6)
    ("a/*/c", "a/x/y/d", False),
    ("a*", "a", True),
    ("a/+", "a/b", True),            # MQTT single level
    ("a/+", "a/b/c", False),
    ("a/+/c", "a/b/c", True),
    ("a/+", "a/+", True),            # a requested filter is matched as a string
    ("a/b+", "a/bx", False),         # '+' inside a level is literal
    ("a/b+", "a/b+", True),
    ("a/#", "a", True),              # '#' also matches the parent
    ("a/#", "a/b/c", True),
    ("a/#", "a/#", True),
    ("a/#", "ab", False),
    ("#", "x/y", True),
    ("a#", "a#", True),              # '#' not a whole level: literal
    ("a#", "ab", False),
    ("$aws/things/t1/#", "$aws/things/t1/defender/metrics/json", True),
    ("a/${*}", "a/*", True),         # escapes
    ("a/${*}", "a/b", False),
    ("a${$}b", "a$b", True),
    ("what${?}", "what?", True),
    ("${a}b/+", "ab/x", True),       # any character may be escaped
    ("a${/}+", "a/+", True),         # an escaped '/' is no level separator, so this '+' is literal
    ("a${/}+", "a/x", False),
    ("a/${+}", "a/x", False),        # an escaped '+' is literal
    ("a/${#}", "a/#", True),
    ("a/${#}", "a", False),
    ("+/b", "x/b", True),            # '+' as the first level
    ("a/+/#", "a/x", True),
    ("a/*xy/#", "a/12xy", True),     # the nucleus's own example
])
def test_mqttproxy_matching(pattern, resource, allowed):
    a = authorizer(MQTTPROXY, [pattern])
    assert a.is_authorized("C", MQTTPROXY, PUB_IOT, resource) is allowed


@pytest.mark.parametrize("pattern,resource,allowed", [
    ("a/*", "a/b/c", True),
    ("a/+", "a/b", False),           # '+' is literal for pubsub
    ("a/+", "a/+", True),
    ("a/#", "a/b", False),           # '#' is literal for pubsub (the docs say the same)
    ("a/#", "a/#", True),
    ("a/#", "a", False),
    ("*", "x", True),
    ("a/${*}", "a/*", True),
])
def test_pubsub_matching_is_standard(pattern, resource, allowed):
    a = authorizer(PUBSUB, [pattern])
    assert a.is_authorized("C", PUBSUB, SUB, resource) is allowed


def test_operations_must_match_unless_star():
    a = authorizer(PUBSUB, ["x"], operations=[PUB])
    assert a.is_authorized("C", PUBSUB, PUB, "x")
    assert not a.is_authorized("C", PUBSUB, SUB, "x")
    b = authorizer(PUBSUB, ["x"], operations=["*"])
    assert b.is_authorized("C", PUBSUB, SUB, "x")


def test_principal_and_service_are_separate():
    a = authorizer(PUBSUB, ["*"])
    assert not a.is_authorized("Other", PUBSUB, PUB, "x")      # a policy grants only its own component
    assert not a.is_authorized("C", MQTTPROXY, PUB_IOT, "x")   # and only for its service
    assert not Authorizer().is_authorized("C", PUBSUB, PUB, "x")


def test_any_policy_of_the_component_may_allow():
    a = Authorizer()
    a.load("C", {"accessControl": {PUBSUB: {
        "p1": {"operations": [PUB], "resources": ["a"]},
        "p2": {"operations": [SUB], "resources": ["b/*"]}}}})
    assert a.is_authorized("C", PUBSUB, PUB, "a")
    assert a.is_authorized("C", PUBSUB, SUB, "b/c")
    assert not a.is_authorized("C", PUBSUB, PUB, "b/c")


def test_keys_are_case_insensitive():
    p, errors = parse_policy("C", PUBSUB, "p", {"Operations": [PUB], "RESOURCES": ["a"], "PolicyDescription": "d"})
    assert p.allows(PUB, "a") and errors == []


def test_bare_question_mark_rejected_at_load():
    with pytest.raises(PolicyError, match=r"'\?' is not allowed"):
        compile_resource("a/?", mqtt_style=False)
    policies, errors = parse_access_control("C", {PUBSUB: {"p": {"operations": ["*"], "resources": ["a?", "b"]},
                                                            "q": {"operations": ["*"], "resources": ["c?"]}}})
    # like the nucleus, only the bad resource is left out; the rest of the policy still grants
    p, q = policies
    assert p.allows(PUB, "b") and not p.allows(PUB, "a?")
    assert not q.allows(PUB, "c?") and not q.allows(PUB, "")
    assert len(errors) == 2 and "accessControl.aws.greengrass.ipc.pubsub.p: resource 'a?'" in errors[0]


def test_unknown_operation_is_reported_but_the_policy_loads():
    p, errors = parse_policy("C", PUBSUB, "p", {"operations": [PUB, "aws.greengrass#PublishToIoTCore"],
                                                "resources": ["a"]})
    assert p.allows(PUB, "a") and "not supported by aws.greengrass.ipc.pubsub" in errors[0]


@pytest.mark.parametrize("body,problem", [
    ({"resources": ["a"]}, "operations must be a non-empty list"),
    ({"operations": [], "resources": ["a"]}, "operations must be a non-empty list"),
    ({"operations": ["*"]}, "resources must be a non-empty list"),
    ({"operations": [3], "resources": ["a"]}, "not a string"),
    ("nope", "must be an object"),
])
def test_invalid_policies_name_the_problem(body, problem):
    with pytest.raises(PolicyError, match=problem):
        parse_policy("C", PUBSUB, "p", body)


def test_non_string_resource_is_reported():
    p, errors = parse_policy("C", PUBSUB, "p", {"operations": ["*"], "resources": [5, "x"]})
    assert p.allows(PUB, "x") and "must be a string" in errors[0]


def test_unknown_services_are_kept_unvalidated():
    policies, errors = parse_access_control("C", {"aws.greengrass.SecretManager": {
        "s": {"operations": ["aws.greengrass#GetSecretValue"], "resources": ["arn:*"]}}})
    assert errors == [] and policies[0].allows("aws.greengrass#GetSecretValue", "arn:aws:x")


def test_cli_service():
    a = authorizer(CLI, ["ggdefender.Defender"], operations=["aws.greengrass#RestartComponent"])
    assert a.is_authorized("C", CLI, "aws.greengrass#RestartComponent", "ggdefender.Defender")
    assert not a.is_authorized("C", CLI, "aws.greengrass#RestartComponent", "other")
    assert not a.is_authorized("C", CLI, "aws.greengrass#GetComponentDetails", "ggdefender.Defender")


def test_reload_replaces_policies_and_clears_cache():
    a = authorizer(PUBSUB, ["a"])
    assert a.is_authorized("C", PUBSUB, PUB, "a")
    a.load("C", {})
    assert not a.is_authorized("C", PUBSUB, PUB, "a")


def test_malformed_access_control_shapes():
    assert parse_access_control("C", None) == ([], [])
    assert "must be an object" in parse_access_control("C", [1])[1][0]
    assert "object of policies" in parse_access_control("C", {PUBSUB: [1]})[1][0]


def test_denial_message_text():
    assert denial_message("C", PUBSUB, PUB, "t") == (
        "Principal C is not authorized to perform aws.greengrass.ipc.pubsub:aws.greengrass#PublishToTopic "
        "on resource t")


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

pattern_text = st.text(alphabet="ab/+#*?${}", max_size=20)


@settings(max_examples=400, deadline=None)
@given(pattern_text, st.text(alphabet="ab/+#*?$", max_size=20), st.booleans())
def test_any_pattern_compiles_or_names_the_problem(pattern, resource, mqtt):
    import re
    try:
        source = compile_resource(pattern, mqtt_style=mqtt)
    except PolicyError as exc:
        assert "?" in str(exc)
        return
    re.compile(source).fullmatch(resource)  # never raises


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="abc/.-_", min_size=1, max_size=30), st.booleans())
def test_plain_patterns_match_only_themselves(text, mqtt):
    a = authorizer(MQTTPROXY if mqtt else PUBSUB, [text])
    service, op = (MQTTPROXY, PUB_IOT) if mqtt else (PUBSUB, PUB)
    assert a.is_authorized("C", service, op, text)
    assert not a.is_authorized("C", service, op, text + "x")
