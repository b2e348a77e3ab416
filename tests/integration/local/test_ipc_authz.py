"""Authorization allowed/denied per service and wildcard rule, seen by the real client in a child process."""

import json

import pytest

from ipc_fixtures import RunningCore, run_client

pytestmark = pytest.mark.integration

CASES_CLIENT = r'''
import json, sys
from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
from awsiot.greengrasscoreipc import model as m
c = GreengrassCoreIPCClientV2()
calls = {
    "iot-pub": lambda t: c.publish_to_iot_core(topic_name=t, qos=m.QOS.AT_LEAST_ONCE, payload=b"x"),
    "iot-sub": lambda t: c.subscribe_to_iot_core(topic_name=t, qos=m.QOS.AT_LEAST_ONCE, on_stream_event=print)[1].close(),
    "pub": lambda t: c.publish_to_topic(topic=t, publish_message=m.PublishMessage(json_message=m.JsonMessage(message={}))),
    "sub": lambda t: c.subscribe_to_topic(topic=t, on_stream_event=print)[1].close(),
    "restart": lambda t: c.restart_component(component_name=t),
    "details": lambda t: c.get_component_details(component_name=t),
    "list": lambda t: c.list_components(),
    "get-config": lambda t: c.get_configuration(component_name=t, key_path=[]),
    "state": lambda t: c.update_state(state=m.ReportedLifecycleState.RUNNING),
}
results = []
for kind, resource in json.loads(sys.argv[1]):
    try:
        calls[kind](resource)
        results.append(["allowed", None])
    except m.UnauthorizedError as e:
        results.append(["denied", e.message])
    except Exception as e:
        results.append([type(e).__name__, str(e)])
print(json.dumps(results))
'''

POLICY = {
    "aws.greengrass.ipc.mqttproxy": {
        "com.example.App:mqttproxy:1": {
            "policyDescription": "publish telemetry and status",
            "operations": ["aws.greengrass#PublishToIoTCore"],
            "resources": ["devices/T/telemetry", "devices/T/+/status"]},
        "com.example.App:mqttproxy:2": {
            "Operations": ["aws.greengrass#SubscribeToIoTCore"],  # keys are case-insensitive
            "Resources": ["devices/T/cmd/#", "cfg/*"]},
    },
    "aws.greengrass.ipc.pubsub": {
        "com.example.App:pubsub:1": {"operations": ["aws.greengrass#PublishToTopic"], "resources": ["app/out/*"]},
        "com.example.App:pubsub:2": {"operations": ["aws.greengrass#SubscribeToTopic"],
                                     "resources": ["app/in/+", "app/in/x", "lit/${*}"]},
    },
    "aws.greengrass.Cli": {
        "com.example.App:cli:1": {"operations": ["aws.greengrass#RestartComponent"],
                                  "resources": ["com.example.Target"]},
    },
}

PUBSUB_DENY = "Principal com.example.App is not authorized to perform aws.greengrass.ipc.pubsub:{op} on resource {r}"
CLI_DENY = "Principal com.example.App is not authorized to perform aws.greengrass.Cli:{op} on resource {r}"

CASES = [
    # mqttproxy: MQTT-style matching, "Not Authorized"
    ("iot-pub", "devices/T/telemetry", "allowed"),
    ("iot-pub", "devices/T/other", "Not Authorized"),
    ("iot-pub", "devices/T/a/status", "allowed"),                 # '+' one level
    ("iot-pub", "devices/T/a/b/status", "Not Authorized"),        # '+' is not two levels
    ("iot-pub", "devices/T/cmd/x", "Not Authorized"),             # subscribe-only policy
    ("iot-sub", "devices/T/cmd/#", "allowed"),
    ("iot-sub", "devices/T/cmd/x/y", "allowed"),                  # '#' covers deeper levels
    ("iot-sub", "devices/T/cmd", "allowed"),                      # and the parent level
    ("iot-sub", "devices/T/cmd/+", "allowed"),                    # a requested filter matched as a string
    ("iot-sub", "devices/T/#", "Not Authorized"),                 # wider than the policy
    ("iot-sub", "cfg/a/b", "allowed"),                            # '*' crosses levels
    ("iot-sub", "devices/T/telemetry", "Not Authorized"),         # publish-only resource
    # pubsub: '*' only; '+' and '#' literal; full denial text
    ("pub", "app/out/x/y", "allowed"),
    ("pub", "app/in/x", PUBSUB_DENY.format(op="aws.greengrass#PublishToTopic", r="app/in/x")),
    ("sub", "app/in/+", "allowed"),                               # literal '+' in the policy and the request
    ("sub", "app/in/q", PUBSUB_DENY.format(op="aws.greengrass#SubscribeToTopic", r="app/in/q")),
    ("sub", "app/in/x", "allowed"),
    ("sub", "lit/*", "allowed"),                                  # ${*} is a literal '*'
    ("sub", "lit/abc", PUBSUB_DENY.format(op="aws.greengrass#SubscribeToTopic", r="lit/abc")),
    # aws.greengrass.Cli: component name as the resource
    ("restart", "com.example.Target", "allowed"),
    ("restart", "com.example.App", CLI_DENY.format(op="aws.greengrass#RestartComponent", r="com.example.App")),
    ("details", "com.example.Target", CLI_DENY.format(op="aws.greengrass#GetComponentDetails",
                                                      r="com.example.Target")),
    ("list", "", CLI_DENY.format(op="aws.greengrass#ListComponents", r="*")),
    # no policy needed
    ("get-config", "com.example.Target", "allowed"),
    ("state", "", "allowed"),
]


def outcome(result):
    return result[0] if result[0] == "allowed" else (result[1] if result[0] == "denied" else result)


def test_policy_rules_per_service():
    with RunningCore() as rc:
        rc.core.on_restart_request = lambda name: True
        rc.register("com.example.Target", {"x": 1})
        env = rc.register("com.example.App", {"accessControl": POLICY})
        denied_events = []
        rc.core.on_event = lambda e: e["kind"] == "denied" and denied_events.append(e)
        results = run_client(CASES_CLIENT, env, json.dumps([[k, r] for k, r, _ in CASES]))
    got = [outcome(r) for r in results]
    expected = [e for _, _, e in CASES]
    mismatches = [(c[:2], g, e) for c, g, e in zip(CASES, got, expected) if g != e]
    assert not mismatches
    assert len(denied_events) == sum(1 for e in expected if e != "allowed")


def test_component_without_policy_is_denied_everything_that_needs_one():
    cases = [("iot-pub", "a", "Not Authorized"), ("iot-sub", "#", "Not Authorized"),
             ("pub", "a", PUBSUB_DENY.replace("com.example.App", "com.example.Bare").format(
                 op="aws.greengrass#PublishToTopic", r="a")),
             ("get-config", "com.example.Bare", "allowed"), ("state", "", "allowed")]
    with RunningCore() as rc:
        env = rc.register("com.example.Bare", {"Some": "config"})
        results = run_client(CASES_CLIENT, env, json.dumps([[k, r] for k, r, _ in cases]))
    assert [outcome(r) for r in results] == [e for _, _, e in cases]


def test_invalid_policy_is_skipped_like_the_nucleus():
    bad = {"aws.greengrass.ipc.pubsub": {
        "bad": {"operations": ["*"], "resources": ["what?"]},      # bare '?' is rejected at load
        "good": {"operations": ["*"], "resources": ["ok/*"]}}}
    with RunningCore() as rc:
        env = rc.register("com.example.App", {"accessControl": bad})
        assert rc.core.components()["com.example.App"].policy_errors
        results = run_client(CASES_CLIENT, env, json.dumps([["pub", "ok/1"], ["pub", "what?"]]))
    assert [r[0] for r in results] == ["allowed", "denied"]
