"""SubscribeToTopic: a component receives local pub/sub messages on a topic, as a stream."""

from __future__ import annotations

from typing import Any, Callable, Tuple

from ..authz import PUBSUB, denial_message
from ..core import RECEIVE_ALL, RECEIVE_FROM_OTHERS, Core
from .base import NS, OperationError, OperationSpec, Stream, b64, invalid, str_field


def subscribe_to_topic(core: Core, principal: str, req: dict, stream: Stream) -> Tuple[dict, Callable[[], Any]]:
    topic = str_field(req, "topic", required=False) or ""
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
            stream.send_event(shape, {"binaryMessage": {"message": b64(message), "context": context}})
        else:
            stream.send_event(shape, {"jsonMessage": {"message": message, "context": context}})

    # the nucleus answers an empty SubscribeToTopicResponse
    return {}, lambda: core.subscribe_local(principal, topic, deliver, mode)


DECLARATION = OperationSpec(NS + "SubscribeToTopic", NS + "SubscribeToTopicResponse", subscribe_to_topic, streaming=True)
