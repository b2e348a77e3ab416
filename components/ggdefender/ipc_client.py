"""The small Greengrass IPC client interface `ggdefender.ipc.Ipc` talks to, and the errors every client raises.

Two clients implement it: `ipc_awsiotsdk.AwsIotSdkClient` (awsiotsdk's GreengrassCoreIPCClientV2 on awscrt, the
default wherever awscrt installs) and `ipc_pure.PureClient` (pure Python on our eventstream codec, for platforms
with no awscrt wheel). Exactly the operations the component uses, with plain Python values in and out, so `Ipc`
(reconnect, subscriptions, refusals, limits) is written once. Stdlib only: nothing here loads a client.

Errors: a modeled Greengrass error (APPLICATION_ERROR with a `service-model-type`) is raised as the class of the
same name below, whichever client got it (so `error_text` and every log line read the same); a dropped
connection is `ConnectionLost`; a rejected CONNECT is `AccessDenied`.
"""

from __future__ import annotations

import datetime
from typing import Any, Callable, Optional, Protocol

SHAPE_PREFIX = "aws.greengrass#"

OnIotMessage = Callable[[str, bytes], None]  # topic, payload
OnLocalMessage = Callable[[str, Any], None]  # topic, JSON value (dict...) or bytes for a binary message
OnConfigUpdate = Callable[[list], None]  # key path of the changed node, relative to `configuration`
OnClosed = Callable[[], None]  # the stream ended (closed by either side, or the connection went)
OnDisconnect = Callable[[str], None]  # the connection dropped (never called after the client's own close())


class IpcError(Exception):
    """A modeled error the nucleus answered with. `message` (may be empty: lite often gives none), `context`."""

    shape = ""  # "aws.greengrass#<Name>", set on each subclass

    def __init__(self, message: str = "", context: Optional[dict] = None):
        super().__init__(message)
        self.message = message
        self.context = context


class ServiceError(IpcError):
    shape = SHAPE_PREFIX + "ServiceError"


class UnauthorizedError(IpcError):
    shape = SHAPE_PREFIX + "UnauthorizedError"


class InvalidArgumentsError(IpcError):
    shape = SHAPE_PREFIX + "InvalidArgumentsError"


class ResourceNotFoundError(IpcError):
    shape = SHAPE_PREFIX + "ResourceNotFoundError"


class ComponentNotFoundError(IpcError):
    shape = SHAPE_PREFIX + "ComponentNotFoundError"


class FailedUpdateConditionCheckError(IpcError):
    shape = SHAPE_PREFIX + "FailedUpdateConditionCheckError"


class ConflictError(IpcError):
    shape = SHAPE_PREFIX + "ConflictError"


class InvalidTokenError(IpcError):
    shape = SHAPE_PREFIX + "InvalidTokenError"


MODELED_ERRORS: dict[str, type[IpcError]] = {cls.shape: cls for cls in (
    ServiceError, UnauthorizedError, InvalidArgumentsError, ResourceNotFoundError, ComponentNotFoundError,
    FailedUpdateConditionCheckError, ConflictError, InvalidTokenError)}


def modeled_error(shape: str, message: str = "", context: Optional[dict] = None) -> IpcError:
    """The error class for a `service-model-type`; an error shape the component does not know (the model has a
    few more, for operations it never calls) is a ServiceError naming it."""
    cls = MODELED_ERRORS.get(shape)
    if cls is None:
        return ServiceError(f"{shape}: {message}" if message else shape, context)
    return cls(message, context)


class ConnectionLost(ConnectionError):
    """The IPC connection dropped (or a stream was closed under a pending call): `Ipc` reconnects."""


class AccessDenied(ConnectionError):
    """The nucleus refused the CONNECT (unknown SVCUID or wrong protocol version)."""


class MalformedAnswer(RuntimeError):
    """The nucleus answered with something that is not the shape the operation expects."""


class Stream(Protocol):
    """A subscription's stream; `close()` ends it (idempotent, never raises)."""

    def close(self) -> object: ...


class IpcClient(Protocol):
    """One connected IPC client. Calls block until answered (each bounded) and raise the errors above; stream
    callbacks run on the executor the client was made with, in arrival order."""

    name: str  # "awsiotsdk" | "pure", as the health document shows it

    def publish_to_iot_core(self, topic: str, qos: int, payload: bytes) -> None: ...

    def subscribe_to_iot_core(self, topic: str, qos: int, on_message: OnIotMessage, on_closed: OnClosed) -> Stream: ...

    def publish_to_topic(self, topic: str, message: Any) -> None:
        """`message`: bytes as a binary message, anything else as a JSON message."""

    def subscribe_to_topic(self, topic: str, on_message: OnLocalMessage, on_closed: OnClosed) -> Stream: ...

    def get_configuration(self, component: Optional[str], key_path: list) -> Any:
        """The value at key_path (a leaf K comes back as {K: v}); ResourceNotFoundError when it is not there."""

    def update_configuration(self, key_path: list, value_to_merge: dict, timestamp: datetime.datetime) -> None: ...

    def subscribe_to_configuration_update(self, component: Optional[str], on_update: OnConfigUpdate,
                                          on_closed: OnClosed) -> Stream: ...

    def update_state(self, state: str) -> None: ...

    def restart_component(self, component: str) -> str:
        """The restart status (SUCCEEDED / FAILED)."""

    def get_component_details(self, component: str) -> dict:
        """{"componentName", "version", "state", "configuration"}."""

    def close(self) -> None:
        """Close the connection (bounded, never raises); on_disconnect is not called for it."""
