"""PublishToIoTCore: a component publishes to AWS IoT Core through the core (mqttproxy)."""

from __future__ import annotations

import re
from typing import Optional

from ggdefender.ipc import IOT_CORE_MAX_PAYLOAD

from ..authz import MQTTPROXY
from ..core import Core
from .base import NS, OperationError, OperationSpec, blob_field, invalid, iot_topic, qos_field


# What the nucleus's MQTT client checks before it spools a PublishToIoTCore (MqttClient.isValidPublishRequest):
# payload below mqtt.maxMessageSizeInBytes (default 128 KiB), at most 7 '/' and 256 bytes of topic, not counting
# a Basic Ingest prefix `$aws/rules/<rule>/`. A component that breaks them fails on a device, so it fails here.
MAX_IOT_PAYLOAD_BYTES = IOT_CORE_MAX_PAYLOAD
MAX_IOT_TOPIC_BYTES = 256
MAX_IOT_TOPIC_SLASHES = 7
_BASIC_INGEST_PREFIX = re.compile(r"\$aws/rules/[^/\s]+/(?=\S)", re.IGNORECASE)


def publish_to_iot_core(core: Core, principal: str, req: dict) -> dict:
    # the nucleus's order: topic present, authorization, payload, QoS
    topic = iot_topic(req)
    if not core.is_authorized(principal, MQTTPROXY, NS + "PublishToIoTCore", topic):
        raise OperationError("UnauthorizedError", "Not Authorized")
    payload = blob_field(req, "payload", required=True)
    qos = qos_field(req)
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


DECLARATION = OperationSpec(NS + "PublishToIoTCore", NS + "PublishToIoTCoreResponse", publish_to_iot_core)
