"""The Greengrass IPC operations served by the local core: request validation, JSON shapes, modeled errors.

Shapes and field names follow the awsiotsdk model (`awsiot/greengrasscoreipc/model.py`); semantics and
error texts follow the nucleus's service agents. Each handler receives the `Core`, the caller (principal)
and the parsed request object, and returns the response object; streaming handlers also get a `Stream`
and return a `start` callable that the server runs right after the initial response is queued (so no
event can precede it) and that returns the unsubscribe function.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol

from .authz import CLI, MQTTPROXY, PUBSUB, denial_message
from ggdefender.ipc import IOT_CORE_MAX_PAYLOAD

from .core import RECEIVE_ALL, RECEIVE_FROM_OTHERS, Core, FailedUpdateCondition, validate_filter

NS = "aws.greengrass#"
MAX_TOPIC_CHARS = 65535  # the MQTT limit on a topic's UTF-8 length, applied to every topic we accept
MAX_KEY_PATH = 64
# What the nucleus's MQTT client checks before it spools a PublishToIoTCore (MqttClient.isValidPublishRequest):
# payload below mqtt.maxMessageSizeInBytes (default 128 KiB), at most 7 '/' and 256 bytes of topic, not counting
# a Basic Ingest prefix `$aws/rules/<rule>/`. A component that breaks them fails on a device, so it fails here.
MAX_IOT_PAYLOAD_BYTES = IOT_CORE_MAX_PAYLOAD
MAX_IOT_TOPIC_BYTES = 256
MAX_IOT_TOPIC_SLASHES = 7
_BASIC_INGEST_PREFIX = re.compile(r"\$aws/rules/[^/\s]+/(?=\S)", re.IGNORECASE)
# Nesting of a request (the request object is level 1). Deeper documents would hit Python's recursion limit
# later, in a config merge or copy, half-way through an update.
MAX_JSON_DEPTH = 100


class OperationError(Exception):
    """A modeled error: sent as APPLICATION_ERROR with `shape` as its service-model-type."""

    def __init__(self, shape: str, message: str, **extra: Any):
        super().__init__(message)
        self.shape = shape if shape.startswith(NS) else NS + shape
        self.message = message
        self.extra = extra

    def payload(self) -> bytes:
        body = {"message": self.message}
        body.update(self.extra)
        return json.dumps(body).encode()


def invalid(message: str) -> OperationError:
    return OperationError("InvalidArgumentsError", message)


class Stream(Protocol):
    def send_event(self, shape: str, body: dict) -> bool: ...  # False once the stream or connection is gone
    def close(self) -> None: ...


@dataclass(frozen=True)
class OperationSpec:
    name: str
    response_shape: str
    handler: Callable
    streaming: bool = False
    blocking: bool = False  # runs in a worker thread (it calls into the runtime and may wait)


# -- request field readers ----------------------------------------------------------------------------------

def _str(req: dict, key: str, *, required: bool = True, max_len: int = MAX_TOPIC_CHARS) -> Optional[str]:
    value = req.get(key)
    if value is None:
        if required:
            raise invalid(f"{key} is required")
        return None
    if not isinstance(value, str):
        raise invalid(f"{key} must be a string, got {type(value).__name__}")
    if required and not value:
        raise invalid(f"{key} must not be empty")
    if len(value) > max_len:
        raise invalid(f"{key} is longer than {max_len} characters")
    return value


def _blob(req: dict, key: str, *, required: bool) -> bytes:
    value = req.get(key)
    if value is None:
        if required:
            raise invalid(f"{key[:1].upper()}{key[1:]} is required")
        return b""
    if not isinstance(value, str):
        raise invalid(f"{key} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise invalid(f"{key} is not valid base64") from None


def _key_path(req: dict) -> list[str]:
    path = req.get("keyPath")
    if path is None:
        return []
    if not isinstance(path, list) or not all(isinstance(k, str) for k in path):
        raise invalid("keyPath must be a list of strings")
    if len(path) > MAX_KEY_PATH:
        raise invalid(f"keyPath is deeper than {MAX_KEY_PATH}")
    return path


def _qos(req: dict) -> int:
    q = req.get("qos")
    if q is None:
        raise invalid("QoS is required")
    if q not in ("0", "1"):
        raise invalid(f"Invalid QoS value: {q}")
    return int(q)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# -- IoT Core (mqttproxy) ------------------------------------------------------------------------------------

def _iot_topic(req: dict) -> str:
    if req.get("topicName") is None:
        raise invalid("Topic is required")
    return _str(req, "topicName", required=False)


def publish_to_iot_core(core: Core, principal: str, req: dict) -> dict:
    # the nucleus's order: topic present, authorization, payload, QoS
    topic = _iot_topic(req)
    if not core.is_authorized(principal, MQTTPROXY, NS + "PublishToIoTCore", topic):
        raise OperationError("UnauthorizedError", "Not Authorized")
    payload = _blob(req, "payload", required=True)
    qos = _qos(req)
    if not topic or "+" in topic or "#" in topic:
        raise invalid(f"topicName {topic!r} is not a valid topic to publish to (empty or with MQTT wildcards)")
    problem = iot_publish_problem(topic, payload)
    if problem:
        raise OperationError("ServiceError", problem)
    core.publish_iot(topic, payload, source=principal, qos=qos)
    return {}


def iot_publish_problem(topic: str, payload: bytes) -> Optional[str]:
    """Why the nucleus would refuse to publish this to IoT Core, or None."""
    if len(payload) >= MAX_IOT_PAYLOAD_BYTES:
        return (f"The publishing message size {len(payload)} bytes exceeds the configured limit of "
                f"{MAX_IOT_PAYLOAD_BYTES} bytes")
    counted = _BASIC_INGEST_PREFIX.sub("", topic, count=1) if topic[:1] == "$" else topic
    if counted.count("/") > MAX_IOT_TOPIC_SLASHES:
        return (f"The topic of request must have no more than {MAX_IOT_TOPIC_SLASHES} forward slashes (/), "
                f"not counting a $aws/rules/<rule>/ prefix")
    if len(counted.encode("utf-8")) > MAX_IOT_TOPIC_BYTES:
        return (f"The topic size of request must be no larger than {MAX_IOT_TOPIC_BYTES} bytes of UTF-8 encoded "
                f"characters, not counting a $aws/rules/<rule>/ prefix")
    return None


def subscribe_to_iot_core(core: Core, principal: str, req: dict, stream: Stream):
    topic_filter = _iot_topic(req)
    if not core.is_authorized(principal, MQTTPROXY, NS + "SubscribeToIoTCore", topic_filter):
        raise OperationError("UnauthorizedError", "Not Authorized")
    qos = _qos(req)
    reason = validate_filter(topic_filter)
    if reason:
        # IoT Core refuses such a SUBSCRIBE; the nucleus reports the failed subscription
        raise invalid(f"topicName {topic_filter!r} is not a valid MQTT topic filter: {reason}")
    shape = NS + "IoTCoreMessage"

    def deliver(topic: str, payload: bytes, source: str) -> None:
        stream.send_event(shape, {"message": {"topicName": topic, "payload": _b64(payload)}})

    return {}, lambda: core.subscribe_iot_component(principal, topic_filter, qos, deliver)


# -- local pub/sub ------------------------------------------------------------------------------------------

def publish_to_topic(core: Core, principal: str, req: dict) -> dict:
    topic = req.get("topic")
    if topic is None:
        raise invalid("Publish topic must not be null")
    topic = _str(req, "topic", required=False)
    # the nucleus authorizes first, then validates the topic and the message
    if not core.is_authorized(principal, PUBSUB, NS + "PublishToTopic", topic):
        raise OperationError("UnauthorizedError", denial_message(principal, PUBSUB, NS + "PublishToTopic", topic))
    if any(c in topic for c in "+#*"):
        raise invalid("Publish topic must not contain a wildcard.")
    msg = req.get("publishMessage")
    if not isinstance(msg, dict):
        raise invalid("publishMessage is required")
    keys = [k for k in ("jsonMessage", "binaryMessage") if msg.get(k) is not None]
    if len(keys) != 1:
        raise invalid("publishMessage must set exactly one of jsonMessage or binaryMessage")
    body = msg[keys[0]]
    if not isinstance(body, dict):
        raise invalid(f"publishMessage.{keys[0]} must be an object")
    if keys[0] == "jsonMessage":
        message: Any = body.get("message")
        if not isinstance(message, dict):  # the model's message is a map (Java: Map<String, Object>)
            raise invalid("publishMessage.jsonMessage.message must be a JSON object")
    else:
        message = _blob(body, "message", required=False)
    core.publish_local(topic, message, source=principal)
    return {}


def subscribe_to_topic(core: Core, principal: str, req: dict, stream: Stream):
    topic = _str(req, "topic", required=False) or ""
    mode = req.get("receiveMode")
    if mode is not None and mode not in (RECEIVE_ALL, RECEIVE_FROM_OTHERS):
        raise invalid(f"receiveMode must be {RECEIVE_ALL} or {RECEIVE_FROM_OTHERS}, got {mode!r}")
    if not core.is_authorized(principal, PUBSUB, NS + "SubscribeToTopic", topic):
        raise OperationError("UnauthorizedError", denial_message(principal, PUBSUB, NS + "SubscribeToTopic", topic))
    if not topic:
        raise invalid("Subscribe topic must not be empty")
    shape = NS + "SubscriptionResponseMessage"

    def deliver(published_topic: str, message: Any, source: str) -> None:
        context = {"topic": published_topic}
        if isinstance(message, bytes):
            stream.send_event(shape, {"binaryMessage": {"message": _b64(message), "context": context}})
        else:
            stream.send_event(shape, {"jsonMessage": {"message": message, "context": context}})

    # the nucleus answers an empty SubscribeToTopicResponse
    return {}, lambda: core.subscribe_local(principal, topic, deliver, mode)


# -- configuration -----------------------------------------------------------------------------------------

def get_configuration(core: Core, principal: str, req: dict) -> dict:
    name = _str(req, "componentName", required=False) or principal
    path = _key_path(req)
    try:
        value = core.get_config(name, path)
    except KeyError:
        raise OperationError("ResourceNotFoundError", "Key not found", resourceType="configuration",
                             resourceName=name) from None
    if path and not isinstance(value, dict):
        value = {path[-1]: value}  # a leaf comes back as {key: value}, as the nucleus does
    return {"componentName": name, "value": value}


def update_configuration(core: Core, principal: str, req: dict) -> dict:
    path = _key_path(req)
    ts = req.get("timestamp")
    if ts is None:
        raise invalid("Timestamp is required")
    if isinstance(ts, bool) or not isinstance(ts, (int, float)):
        raise invalid("timestamp must be a number (epoch seconds)")
    if "valueToMerge" not in req or req["valueToMerge"] is None:
        raise invalid("ValueToMerge is required")
    try:
        core.update_configuration(principal, path, req["valueToMerge"], float(ts))
    except FailedUpdateCondition as exc:
        raise OperationError("FailedUpdateConditionCheckError", str(exc)) from None
    except KeyError:
        raise OperationError("ResourceNotFoundError", "Component not found", resourceType="component",
                             resourceName=principal) from None
    except ValueError as exc:
        raise invalid(str(exc)) from None
    return {}


def subscribe_to_configuration_update(core: Core, principal: str, req: dict, stream: Stream):
    name = _str(req, "componentName", required=False) or principal
    path = _key_path(req)
    try:
        core.get_config(name, path)  # the nucleus subscribes to an existing node only
    except KeyError:
        raise OperationError("ResourceNotFoundError", "Key not found", resourceType="configuration",
                             resourceName=name) from None
    shape = NS + "ConfigurationUpdateEvents"

    def deliver(component: str, changed: list) -> None:
        stream.send_event(shape, {"configurationUpdateEvent": {"componentName": component, "keyPath": changed}})

    return {}, lambda: core.subscribe_config(name, path, deliver)


# -- lifecycle and the Greengrass CLI's operations ---------------------------------------------------------

def update_state(core: Core, principal: str, req: dict) -> dict:
    state = req.get("state")
    if state not in ("RUNNING", "ERRORED"):
        raise invalid(f"state must be RUNNING or ERRORED, got {state!r}")
    try:
        core.set_state(principal, state)
    except KeyError:
        raise OperationError("ResourceNotFoundError", f"Component {principal} not found",
                             resourceType="component", resourceName=principal) from None
    return {}


def _cli_authorize(core: Core, principal: str, op: str, resource: str) -> None:
    if not core.is_authorized(principal, CLI, NS + op, resource):
        raise OperationError("UnauthorizedError", denial_message(principal, CLI, NS + op, resource))


def _details(core: Core, name: str) -> dict:
    record = core.component(name)
    try:
        configuration = core.get_config(name, ())
    except KeyError:
        configuration = {}
    return {"componentName": record.name, "version": record.version, "state": record.state,
            "configuration": configuration}


def get_component_details(core: Core, principal: str, req: dict) -> dict:
    name = _str(req, "componentName")
    _cli_authorize(core, principal, "GetComponentDetails", name)
    try:
        return {"componentDetails": _details(core, name)}
    except KeyError:
        raise OperationError("ResourceNotFoundError", f"Component {name} not found", resourceType="component",
                             resourceName=name) from None


def list_components(core: Core, principal: str, req: dict) -> dict:
    _cli_authorize(core, principal, "ListComponents", "*")
    out = []
    for name in sorted(core.components()):
        try:
            out.append(_details(core, name))
        except KeyError:  # unregistered meanwhile
            continue
    return {"components": out}


def restart_component(core: Core, principal: str, req: dict) -> dict:
    name = _str(req, "componentName")
    _cli_authorize(core, principal, "RestartComponent", name)
    try:
        ok = core.request_restart(name)
    except KeyError:
        raise OperationError("ComponentNotFoundError", f"Component with name {name} not found") from None
    if ok:
        return {"restartStatus": "SUCCEEDED", "message": f"Component {name} restart requested"}
    return {"restartStatus": "FAILED", "message": f"Component {name} could not be restarted"}


OPERATIONS: dict[str, OperationSpec] = {
    spec.name: spec for spec in (
        OperationSpec(NS + "PublishToIoTCore", NS + "PublishToIoTCoreResponse", publish_to_iot_core),
        OperationSpec(NS + "SubscribeToIoTCore", NS + "SubscribeToIoTCoreResponse", subscribe_to_iot_core,
                      streaming=True),
        OperationSpec(NS + "PublishToTopic", NS + "PublishToTopicResponse", publish_to_topic),
        OperationSpec(NS + "SubscribeToTopic", NS + "SubscribeToTopicResponse", subscribe_to_topic, streaming=True),
        OperationSpec(NS + "GetConfiguration", NS + "GetConfigurationResponse", get_configuration),
        OperationSpec(NS + "UpdateConfiguration", NS + "UpdateConfigurationResponse", update_configuration),
        OperationSpec(NS + "SubscribeToConfigurationUpdate", NS + "SubscribeToConfigurationUpdateResponse",
                      subscribe_to_configuration_update, streaming=True),
        OperationSpec(NS + "UpdateState", NS + "UpdateStateResponse", update_state),
        OperationSpec(NS + "RestartComponent", NS + "RestartComponentResponse", restart_component, blocking=True),
        OperationSpec(NS + "GetComponentDetails", NS + "GetComponentDetailsResponse", get_component_details),
        OperationSpec(NS + "ListComponents", NS + "ListComponentsResponse", list_components),
    )
}


def parse_request(payload: bytes) -> dict:
    """The request object; InvalidArgumentsError when the payload is not a JSON object."""
    if not payload:
        return {}
    try:
        req = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise invalid("request payload is not valid JSON") from None
    except RecursionError:
        raise invalid(f"request payload is nested deeper than {MAX_JSON_DEPTH} levels") from None
    if not isinstance(req, dict):
        raise invalid("request payload must be a JSON object")
    if _depth_exceeds(req, MAX_JSON_DEPTH):
        raise invalid(f"request payload is nested deeper than {MAX_JSON_DEPTH} levels")
    return req


def _depth_exceeds(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def unsupported(operation: str) -> OperationError:
    return OperationError("ServiceError", f"Operation {operation} is not supported by Greengrass")


def internal_error(exc: BaseException) -> OperationError:
    return OperationError("ServiceError", f"Internal error: {type(exc).__name__}: {exc}")


__all__ = ["OPERATIONS", "OperationError", "OperationSpec", "Stream", "parse_request", "unsupported",
           "internal_error"]
