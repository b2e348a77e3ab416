"""SubscribeToIoTCore: a component receives AWS IoT Core messages on a topic filter (mqttproxy), as a stream."""

from __future__ import annotations

from typing import Any, Callable, Tuple

from ..authz import MQTTPROXY
from ..core import Core, validate_filter
from .base import NS, OperationError, OperationSpec, Stream, b64, invalid, iot_topic, qos_field


def subscribe_to_iot_core(core: Core, principal: str, req: dict, stream: Stream) -> Tuple[dict, Callable[[], Any]]:
    topic_filter = iot_topic(req)
    if not core.is_authorized(principal, MQTTPROXY, NS + "SubscribeToIoTCore", topic_filter):
        raise OperationError("UnauthorizedError", "Not Authorized")
    qos = qos_field(req)
    reason = validate_filter(topic_filter)
    if reason:
        # IoT Core refuses such a SUBSCRIBE; the nucleus reports the failed subscription
        raise invalid(f"topicName {topic_filter!r} is not a valid MQTT topic filter: {reason}")
    shape = NS + "IoTCoreMessage"

    def deliver(topic: str, payload: bytes, source: str) -> None:
        stream.send_event(shape, {"message": {"topicName": topic, "payload": b64(payload)}})

    return {}, lambda: core.subscribe_iot_component(principal, topic_filter, qos, deliver)


DECLARATION = OperationSpec(NS + "SubscribeToIoTCore", NS + "SubscribeToIoTCoreResponse", subscribe_to_iot_core,
                            streaming=True)
