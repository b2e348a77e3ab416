"""Operation handlers without sockets: request validation, nucleus error texts, response and event shapes."""

import base64
import json

import pytest

from ggdefender.local.nucleus.core import Core
from ggdefender.local.nucleus.ipc_operations import OPERATIONS
from ggdefender.local.nucleus.ipc_operations.base import OperationError, parse_request, unsupported

NS = "aws.greengrass#"
ALL = {"aws.greengrass.ipc.pubsub": {"p": {"operations": ["*"], "resources": ["*"]}},
       "aws.greengrass.ipc.mqttproxy": {"p": {"operations": ["*"], "resources": ["#"]}},
       "aws.greengrass.Cli": {"p": {"operations": ["*"], "resources": ["*"]}}}


class FakeStream:
    def __init__(self):
        self.events = []

    def send_event(self, shape, body):
        self.events.append((shape, json.loads(json.dumps(body))))
        return True

    def close(self):
        pass


@pytest.fixture
def core():
    c = Core(thing_name="T")
    c.register_component("C", "1.0.0", {"k": {"leaf": 1}, "accessControl": ALL})
    c.register_component("Bare", "1.0.0", {})
    return c


def call(core, op, req, principal="C"):
    spec = OPERATIONS[NS + op]
    if spec.streaming:
        stream = FakeStream()
        response, start = spec.handler(core, principal, req, stream)
        start()
        return response, stream
    return spec.handler(core, principal, req)


def error(core, op, req, principal="C"):
    with pytest.raises(OperationError) as info:
        call(core, op, req, principal)
    return info.value.shape.split("#")[1], info.value.message


@pytest.mark.parametrize("op,req,expected", [
    ("PublishToIoTCore", {"qos": "1", "payload": ""}, ("InvalidArgumentsError", "Topic is required")),
    ("PublishToIoTCore", {"topicName": "a", "qos": "1"}, ("InvalidArgumentsError", "Payload is required")),
    ("PublishToIoTCore", {"topicName": "a", "payload": ""}, ("InvalidArgumentsError", "QoS is required")),
    ("PublishToIoTCore", {"topicName": "a", "payload": "", "qos": "2"}, ("InvalidArgumentsError", "Invalid QoS value: 2")),
    ("PublishToIoTCore", {"topicName": "a", "payload": "%%%", "qos": "1"}, ("InvalidArgumentsError", "payload is not valid base64")),
    ("PublishToIoTCore", {"topicName": "a", "qos": "1", "payload": base64.b64encode(b"x" * 131072).decode()},
     ("ServiceError", "The publishing message size 131072 bytes exceeds the configured limit of 131072 bytes")),
    ("PublishToIoTCore", {"topicName": "a/1/2/3/4/5/6/7/8", "qos": "1", "payload": ""},
     ("ServiceError", "The topic of request must have no more than 7 forward slashes (/), not counting a "
                      "$aws/rules/<rule>/ prefix")),
    ("PublishToIoTCore", {"topicName": "t" * 257, "qos": "1", "payload": ""},
     ("ServiceError", "The topic size of request must be no larger than 256 bytes of UTF-8 encoded characters, "
                      "not counting a $aws/rules/<rule>/ prefix")),
    ("PublishToTopic", {"publishMessage": {}}, ("InvalidArgumentsError", "Publish topic must not be null")),
    ("PublishToTopic", {"topic": "a/+", "publishMessage": {}}, ("InvalidArgumentsError", "Publish topic must not contain a wildcard.")),
    ("PublishToTopic", {"topic": "a", "publishMessage": {"jsonMessage": {"message": [1]}}},
     ("InvalidArgumentsError", "publishMessage.jsonMessage.message must be a JSON object")),
    ("PublishToTopic", {"topic": "a", "publishMessage": {"jsonMessage": {"message": {}}, "binaryMessage": {}}},
     ("InvalidArgumentsError", "publishMessage must set exactly one of jsonMessage or binaryMessage")),
    ("SubscribeToTopic", {"topic": ""}, ("InvalidArgumentsError", "Subscribe topic must not be empty")),
    ("SubscribeToTopic", {"topic": "a", "receiveMode": "X"}, ("InvalidArgumentsError",
                                                            "receiveMode must be RECEIVE_ALL_MESSAGES or RECEIVE_MESSAGES_FROM_OTHERS, got 'X'")),
    ("UpdateConfiguration", {"valueToMerge": {}}, ("InvalidArgumentsError", "Timestamp is required")),
    ("UpdateConfiguration", {"timestamp": 1.0}, ("InvalidArgumentsError", "ValueToMerge is required")),
    ("UpdateConfiguration", {"timestamp": 1.0, "keyPath": ["k"], "valueToMerge": {"leaf": 2}},
     ("FailedUpdateConditionCheckError", "Proposed timestamp is older than the config's latest modified timestamp")),
    ("GetConfiguration", {"keyPath": "k"}, ("InvalidArgumentsError", "keyPath must be a list of strings")),
    ("GetConfiguration", {"keyPath": ["zz"]}, ("ResourceNotFoundError", "Key not found")),
    ("UpdateState", {"state": "BROKEN"}, ("InvalidArgumentsError", "state must be RUNNING or ERRORED, got 'BROKEN'")),
    ("RestartComponent", {}, ("InvalidArgumentsError", "componentName is required")),
    ("RestartComponent", {"componentName": "Nope"}, ("ComponentNotFoundError", "Component with name Nope not found")),
    ("GetComponentDetails", {"componentName": "Nope"}, ("ResourceNotFoundError", "Component Nope not found")),
])
def test_validation_errors(core, op, req, expected):
    assert error(core, op, req) == expected


def test_authorization_comes_before_argument_checks(core):
    # like the nucleus: an unauthorized caller learns nothing about its arguments
    assert error(core, "PublishToIoTCore", {"topicName": "a"}, "Bare") == ("UnauthorizedError", "Not Authorized")
    assert error(core, "PublishToTopic", {"topic": "a/+"}, "Bare")[0] == "UnauthorizedError"


def test_publish_shapes_and_events(core):
    resp, stream = call(core, "SubscribeToTopic", {"topic": "a/b", "receiveMode": "RECEIVE_ALL_MESSAGES"})
    assert resp == {}
    call(core, "PublishToTopic", {"topic": "a/b", "publishMessage": {"jsonMessage": {"message": {"x": 1}}}})
    call(core, "PublishToTopic", {"topic": "a/b", "publishMessage": {"binaryMessage": {"message": "AAE="}}})
    assert stream.events == [
        (NS + "SubscriptionResponseMessage", {"jsonMessage": {"message": {"x": 1}, "context": {"topic": "a/b"}}}),
        (NS + "SubscriptionResponseMessage", {"binaryMessage": {"message": "AAE=", "context": {"topic": "a/b"}}}),
    ]
    resp, iot = call(core, "SubscribeToIoTCore", {"topicName": "d/#", "qos": "0"})
    assert resp == {}
    call(core, "PublishToIoTCore", {"topicName": "d/x", "qos": "1", "payload": base64.b64encode(b"\xff").decode()})
    assert iot.events == [(NS + "IoTCoreMessage", {"message": {"topicName": "d/x", "payload": "/w=="}})]


def test_configuration_shapes(core):
    assert call(core, "GetConfiguration", {"keyPath": ["k", "leaf"]}) == {"componentName": "C", "value": {"leaf": 1}}
    assert call(core, "GetConfiguration", {"componentName": "Bare"}) == {"componentName": "Bare", "value": {}}
    resp, stream = call(core, "SubscribeToConfigurationUpdate", {"keyPath": ["k"]})
    assert resp == {}
    call(core, "UpdateConfiguration", {"keyPath": ["k"], "timestamp": 4e9, "valueToMerge": {"leaf": 2, "new": 3}})
    assert sorted(e[1]["configurationUpdateEvent"]["keyPath"] for e in stream.events) == [["k", "leaf"], ["k", "new"]]
    assert all(e[0] == NS + "ConfigurationUpdateEvents" and e[1]["configurationUpdateEvent"]["componentName"] == "C"
               for e in stream.events)


def test_cli_shapes(core):
    core.set_state("C", "RUNNING")
    details = call(core, "GetComponentDetails", {"componentName": "C"})["componentDetails"]
    assert details["componentName"] == "C" and details["version"] == "1.0.0" and details["state"] == "RUNNING"
    assert details["configuration"]["k"] == {"leaf": 1}
    assert [c["componentName"] for c in call(core, "ListComponents", {})["components"]] == ["Bare", "C"]
    assert call(core, "RestartComponent", {"componentName": "Bare"})["restartStatus"] == "FAILED"  # no runtime hook
    core.on_restart_request = lambda name: True
    assert call(core, "RestartComponent", {"componentName": "Bare"})["restartStatus"] == "SUCCEEDED"


def test_parse_request_and_unsupported():
    assert parse_request(b"") == {}
    with pytest.raises(OperationError, match="not valid JSON"):
        parse_request(b"{")
    with pytest.raises(OperationError, match="must be a JSON object"):
        parse_request(b"[1]")
    err = unsupported(NS + "PauseComponent")
    assert err.shape == NS + "ServiceError" and json.loads(err.payload())["message"] == (
        "Operation aws.greengrass#PauseComponent is not supported by Greengrass")


@pytest.mark.parametrize("depth", [150, 100_000])
def test_deeply_nested_requests_are_invalid_arguments(depth):
    # 150 levels parse, but would break a config merge or copy half-way; 100,000 break json itself
    body = '{"keyPath": [], "valueToMerge": ' + '{"a": ' * depth + "1" + "}" * depth + "}"
    with pytest.raises(OperationError, match="nested deeper than 100 levels") as info:
        parse_request(body.encode())
    assert info.value.shape == NS + "InvalidArgumentsError"
    ok = '{"valueToMerge": ' + '{"a": ' * 90 + "1" + "}" * 90 + "}"
    assert parse_request(ok.encode())["valueToMerge"]


def test_iot_publish_limits_are_the_nucleus_ones():
    from ggdefender.local.nucleus.ipc_operations.publish_to_iot_core import iot_publish_problem

    assert iot_publish_problem("$aws/things/T/defender/metrics/json", b"x" * 131071) is None
    assert iot_publish_problem("a/1/2/3/4/5/6/7", b"") is None  # 7 slashes
    assert iot_publish_problem("$aws/rules/myRule/a/1/2/3/4/5/6/7", b"") is None  # the prefix is not counted
    assert iot_publish_problem("$AWS/Rules/myRule/" + "t" * 256, b"") is None
    assert "forward slashes" in iot_publish_problem("$aws/things/T/a/1/2/3/4/5", b"")


def test_the_served_operations_are_the_declared_modules():
    # one module per operation under local/nucleus/ipc_operations/, each declaring its OperationSpec
    assert sorted(OPERATIONS) == sorted(NS + op for op in (
        "PublishToIoTCore", "SubscribeToIoTCore", "PublishToTopic", "SubscribeToTopic", "GetConfiguration",
        "UpdateConfiguration", "SubscribeToConfigurationUpdate", "UpdateState", "RestartComponent",
        "GetComponentDetails", "ListComponents"))
    streaming = {name.split("#")[1] for name, spec in OPERATIONS.items() if spec.streaming}
    assert streaming == {"SubscribeToIoTCore", "SubscribeToTopic", "SubscribeToConfigurationUpdate"}
    assert [name.split("#")[1] for name, spec in OPERATIONS.items() if spec.blocking] == ["RestartComponent"]
    assert all(spec.response_shape == spec.name + "Response" for spec in OPERATIONS.values())
