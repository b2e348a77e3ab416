"""Greengrass v1 SDK compatible facade over `ggdefender.ipc.Ipc` (v2 IPC).

v1-era code ports by changing one import (`import greengrasssdk` -> `from ggdefender import greengrasssdk`):

    client = greengrasssdk.client('iot-data')
    client.publish(topic='my/topic', payload=json.dumps(msg), queueFullPolicy='AllOrException')
    client.get_thing_shadow(thingName='t')            # -> {'payload': b'{...}'}

Semantics kept from v1: `topic` required (ValueError otherwise), payload str/bytes/seekable file (default
b''), queueFullPolicy '' | 'BestEffort' | 'AllOrException' (ValueError otherwise), publish returns None,
shadow calls return {'payload': bytes} and raise ShadowError on a rejected request. v1's router picked
the destination from subscriptions; here publish goes to IoT Core (PublishToIoTCore) unless the client
was made with destination='local' (PublishToTopic). docs/greengrasssdk.md has the details.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from typing import TYPE_CHECKING, Any, Optional

from ggdefender.ipc import IOT_CORE_MAX_PAYLOAD

if TYPE_CHECKING:
    from ggdefender.ipc_port import IpcPort

customer_logger = logging.getLogger("ggdefender.greengrasssdk")

QUEUE_FULL_POLICIES = ("", "BestEffort", "AllOrException")
SHADOW_TIMEOUT = 10.0
MAX_PAYLOAD = IOT_CORE_MAX_PAYLOAD  # IoT Core's limit; v1's Lambda invoke limit was larger, the broker's is not

_shared_ipc: Optional[IpcPort] = None
_shared_lock = threading.Lock()


class ShadowError(Exception):
    pass


class PublishError(Exception):
    """AllOrException: the message could not be handed to Greengrass (v1 raised on a full queue)."""


def _default_ipc() -> IpcPort:
    global _shared_ipc
    with _shared_lock:
        if _shared_ipc is None:
            from ggdefender.ipc import Ipc

            _shared_ipc = Ipc()
        return _shared_ipc


def client(client_type: str, *args: Any, **kwargs: Any) -> Client:
    """v1's factory; only 'iot-data' exists on Greengrass v2 (no Lambda invoke, no v1 secrets client)."""
    if client_type == "iot-data":
        return Client(*args, **kwargs)
    raise Exception("Client type {!r} is not recognized.".format(client_type)
                    + (" (not available on Greengrass v2 through this facade)"
                       if client_type in ("lambda", "secretsmanager", "streammanager") else ""))


def _payload_bytes(payload: Any) -> bytes:
    if isinstance(payload, str):
        data = payload.encode("utf-8")
    elif isinstance(payload, (bytes, bytearray, memoryview)):
        data = bytes(payload)
    elif hasattr(payload, "read"):
        read = payload.read(MAX_PAYLOAD + 1)
        data = read.encode("utf-8") if isinstance(read, str) else bytes(read)
    else:
        raise TypeError(f"payload must be str, bytes or a file-like object, got {type(payload).__name__}")
    if len(data) >= MAX_PAYLOAD:
        raise ValueError(f"payload is {len(data)} bytes; IoT Core takes at most {MAX_PAYLOAD - 1}")
    return data


class Client:
    """The v1 'iot-data' client."""

    def __init__(self, *, ipc: Optional[IpcPort] = None, destination: str = "iotcore", shadow_timeout: float = SHADOW_TIMEOUT):
        if destination not in ("iotcore", "local"):
            raise ValueError("destination must be 'iotcore' or 'local'")
        self._ipc = ipc
        self.destination = destination
        self.shadow_timeout = shadow_timeout

    @property
    def ipc(self) -> IpcPort:
        if self._ipc is None:
            self._ipc = _default_ipc()
        return self._ipc

    @staticmethod
    def _get_required_parameter(parameter_name: str, **kwargs: Any) -> Any:
        if parameter_name not in kwargs:
            raise ValueError('Parameter "{}" is a required parameter but was not provided.'.format(parameter_name))
        return kwargs[parameter_name]

    def publish(self, **kwargs: Any) -> None:
        topic = self._get_required_parameter("topic", **kwargs)
        payload = kwargs.get("payload", b"")
        policy = kwargs.get("queueFullPolicy", "")
        if policy not in QUEUE_FULL_POLICIES:
            raise ValueError("Invalid value for queueFullPolicy: {}".format(policy))
        if not isinstance(topic, str) or not topic:
            raise ValueError('Parameter "topic" must be a non-empty string')
        data = _payload_bytes(payload)
        customer_logger.debug('Publishing message on topic "%s" (%d bytes)', topic, len(data))
        try:
            if self.destination == "local":
                self.ipc.publish_local(topic, data)
            else:
                # AllOrException wants to know it got through: at-least-once; BestEffort is fire-and-forget
                self.ipc.publish_iot(topic, data, qos=1 if policy == "AllOrException" else 0)
        except Exception as exc:
            if policy == "AllOrException":
                raise PublishError(f"publish to {topic!r} failed: {exc}") from exc
            # v1 published as an asynchronous event: a dropped message never raised
            customer_logger.warning('Publish to "%s" dropped (BestEffort): %s', topic, exc)

    # -- shadows over the shadow MQTT topics -------------------------------------------------------
    def get_thing_shadow(self, **kwargs: Any) -> dict:
        thing = self._get_required_parameter("thingName", **kwargs)
        return self._shadow_op("get", thing, b"", kwargs.get("shadowName"))

    def update_thing_shadow(self, **kwargs: Any) -> dict:
        thing = self._get_required_parameter("thingName", **kwargs)
        payload = _payload_bytes(self._get_required_parameter("payload", **kwargs))
        return self._shadow_op("update", thing, payload, kwargs.get("shadowName"))

    def delete_thing_shadow(self, **kwargs: Any) -> dict:
        thing = self._get_required_parameter("thingName", **kwargs)
        return self._shadow_op("delete", thing, b"", kwargs.get("shadowName"))

    def _shadow_op(self, op: str, thing: str, payload: bytes, shadow: Optional[str]) -> dict:
        for label, value in (("thingName", thing), ("shadowName", shadow)):
            if value is not None and (not isinstance(value, str) or not value or any(c in value for c in "/+#")):
                raise ValueError(f'Parameter "{label}" must be a non-empty name without "/", "+" or "#"')
        base = f"$aws/things/{thing}/shadow" + (f"/name/{shadow}" if shadow else "")
        token = uuid.uuid4().hex
        if op == "update":
            try:
                doc = json.loads(payload)
            except ValueError:
                raise ShadowError("update_thing_shadow payload is not JSON") from None
            if not isinstance(doc, dict):
                raise ShadowError("update_thing_shadow payload must be a JSON object")
            doc.setdefault("clientToken", token)
            token = doc["clientToken"]
            payload = json.dumps(doc, separators=(",", ":")).encode()
        else:
            payload = json.dumps({"clientToken": token}).encode()
        done = threading.Event()
        result: dict = {}

        def on_reply(topic: str, data: bytes) -> None:
            try:
                msg = json.loads(data)
            except ValueError:
                return
            if isinstance(msg, dict) and msg.get("clientToken") not in (None, token):
                return  # someone else's request on the same shadow
            result["topic"], result["payload"], result["msg"] = topic, data, msg
            done.set()

        subs = [self.ipc.subscribe_iot(f"{base}/{op}/{outcome}", on_reply) for outcome in ("accepted", "rejected")]
        try:
            self.ipc.publish_iot(f"{base}/{op}", payload, qos=1)
            if not done.wait(self.shadow_timeout):
                raise ShadowError(f"no reply to shadow {op} on {base} within {self.shadow_timeout:g} s")
        finally:
            for sub in subs:
                sub.close()
        if result["topic"].endswith("/rejected"):
            msg = result["msg"] if isinstance(result["msg"], dict) else {}
            raise ShadowError('Request for shadow state returned error code {} with message "{}"'.format(
                msg.get("code"), msg.get("message")))
        return {"payload": result["payload"]}
