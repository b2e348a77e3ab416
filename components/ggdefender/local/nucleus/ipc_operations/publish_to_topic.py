"""PublishToTopic: a component publishes a JSON or binary message on the local pub/sub bus."""

from __future__ import annotations

from typing import Any

from ..authz import PUBSUB, denial_message
from ..core import Core
from .base import NS, OperationError, OperationSpec, blob_field, invalid, str_field


def publish_to_topic(core: Core, principal: str, req: dict) -> dict:
    topic = req.get("topic")
    if topic is None:
        raise invalid("Publish topic must not be null")
    topic = str_field(req, "topic", required=False)
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
        message = blob_field(body, "message", required=False)
    core.publish_local(topic, message, source=principal)
    return {}


DECLARATION = OperationSpec(NS + "PublishToTopic", NS + "PublishToTopicResponse", publish_to_topic)
