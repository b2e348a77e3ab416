"""What every IPC operation module shares: the modeled error, the spec each module declares, the request-field
readers and limits, and request parsing (the server's side of every operation).

Shapes and field names follow the awsiotsdk model (`awsiot/greengrasscoreipc/model.py`); semantics and error
texts follow the nucleus's service agents.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal, Optional, Protocol, overload

from ..authz import CLI, denial_message
from ..core import Core

NS = "aws.greengrass#"
MAX_TOPIC_CHARS = 65535  # the MQTT limit on a topic's UTF-8 length, applied to every topic we accept
MAX_KEY_PATH = 64
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
    """What an IPC operation module declares (its `DECLARATION`); the served set is derived from these."""

    name: str
    response_shape: str
    handler: Callable
    streaming: bool = False
    blocking: bool = False  # runs in a worker thread (it calls into the runtime and may wait)


# -- request field readers ----------------------------------------------------------------------------------

@overload
def str_field(req: dict, key: str, *, required: Literal[True] = True, max_len: int = MAX_TOPIC_CHARS) -> str: ...


@overload
def str_field(req: dict, key: str, *, required: bool, max_len: int = MAX_TOPIC_CHARS) -> Optional[str]: ...


def str_field(req: dict, key: str, *, required: bool = True, max_len: int = MAX_TOPIC_CHARS) -> Optional[str]:
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


def blob_field(req: dict, key: str, *, required: bool) -> bytes:
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


def key_path(req: dict) -> list[str]:
    path = req.get("keyPath")
    if path is None:
        return []
    if not isinstance(path, list) or not all(isinstance(k, str) for k in path):
        raise invalid("keyPath must be a list of strings")
    if len(path) > MAX_KEY_PATH:
        raise invalid(f"keyPath is deeper than {MAX_KEY_PATH}")
    return path


def qos_field(req: dict) -> int:
    q = req.get("qos")
    if q is None:
        raise invalid("QoS is required")
    if q not in ("0", "1"):
        raise invalid(f"Invalid QoS value: {q}")
    return int(q)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def iot_topic(req: dict) -> str:
    topic = str_field(req, "topicName", required=False)
    if topic is None:
        raise invalid("Topic is required")
    return topic


def cli_authorize(core: Core, principal: str, op: str, resource: str) -> None:
    if not core.is_authorized(principal, CLI, NS + op, resource):
        raise OperationError("UnauthorizedError", denial_message(principal, CLI, NS + op, resource))


def component_details(core: Core, name: str) -> dict:
    record = core.component(name)
    try:
        configuration = core.get_config(name, ())
    except KeyError:
        configuration = {}
    return {"componentName": record.name, "version": record.version, "state": record.state,
            "configuration": configuration}


# -- the request as a whole ---------------------------------------------------------------------------------

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
        children: Iterable[Any]
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
