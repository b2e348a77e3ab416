"""The awsiotsdk IPC client behind `ipc_client.IpcClient`: the only module that imports awsiotsdk or awscrt.

awsiotsdk's `GreengrassCoreIPCClientV2` on awscrt's native eventstream-RPC, the default wherever awscrt installs.
Its model objects and exceptions stay in here: callers get plain values, and awsiotsdk's modeled errors are
re-raised as the `ipc_client` class of the same shape, its connection errors as `ConnectionLost`.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import logging
from typing import Any, Callable, Optional

from ggdefender.ipc_client import (AccessDenied, ConnectionLost, OnClosed, OnConfigUpdate, OnDisconnect, OnIotMessage,
                                   OnLocalMessage, modeled_error)

log = logging.getLogger("ggdefender.ipc")

# awsiotsdk's names for a connection that went away under a call (eventstreamrpc.py), and awscrt's error texts
_CONNECTION_ERRORS = ("StreamClosedError", "ConnectionClosedError", "EventStreamError")
_CONNECTION_TEXTS = ("AWS_ERROR_EVENT_STREAM_RPC_CONNECTION_CLOSED", "AWS_IO_SOCKET_CLOSED")


def _mapped(exc: BaseException) -> BaseException:
    """awsiotsdk's exception as the one every client raises (ipc_client), or itself."""
    from awsiot.eventstreamrpc import AccessDeniedError
    from awsiot.greengrasscoreipc.model import GreengrassCoreIPCError

    if isinstance(exc, AccessDeniedError):
        return AccessDenied(str(exc))
    if isinstance(exc, GreengrassCoreIPCError):
        context = getattr(exc, "context", None)
        return modeled_error(exc._model_name(), getattr(exc, "message", None) or "",
                             context if isinstance(context, dict) else None)
    text = str(exc)
    if type(exc).__name__ in _CONNECTION_ERRORS or any(t in text for t in _CONNECTION_TEXTS):
        return ConnectionLost(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)
    if isinstance(exc, concurrent.futures.TimeoutError):
        return TimeoutError(text or "no answer from the nucleus in time")
    return exc


class AwsIotSdkClient:
    """`ipc_client.IpcClient` on awsiotsdk. Every call waits at most `timeout` seconds for its answer."""

    name = "awsiotsdk"

    def __init__(self, *, on_disconnect: OnDisconnect, executor: concurrent.futures.Executor, timeout: float = 10.0):
        from awsiot.eventstreamrpc import LifecycleHandler
        from awsiot.greengrasscoreipc import connect
        from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2

        self.timeout = timeout
        self._closed = False
        owner = self

        class _Lifecycle(LifecycleHandler):
            def on_disconnect(self, reason):
                if not owner._closed:  # our own close() is not a lost connection
                    on_disconnect(str(reason))

            def on_error(self, error):
                log.warning("IPC connection error: %s", error)
                return True  # close; Ipc reconnects

        try:
            raw = connect(lifecycle_handler=_Lifecycle(), timeout=timeout)
        except Exception as exc:
            raise _mapped(exc) from None
        self._client = GreengrassCoreIPCClientV2(client=raw, executor=executor)

    def _wait(self, call: Callable[[], Any]) -> Any:
        """Run an `*_async` call and wait for its answer, bounded; a subscription's result is (response, op)."""
        op = None
        try:
            started = call()
            if isinstance(started, tuple):
                future, op = started
                return future.result(self.timeout), op
            return started.result(self.timeout)
        except Exception as exc:
            if op is not None and isinstance(exc, concurrent.futures.TimeoutError):
                _Operation(op).close()  # a subscription answered too late must not live on unseen
            raise _mapped(exc) from None

    # -- IoT Core ------------------------------------------------------------------------------------------
    @staticmethod
    def _qos(qos: int) -> str:
        from awsiot.greengrasscoreipc.model import QOS

        return QOS.AT_LEAST_ONCE if qos else QOS.AT_MOST_ONCE

    def publish_to_iot_core(self, topic: str, qos: int, payload: bytes) -> None:
        self._wait(lambda: self._client.publish_to_iot_core_async(topic_name=topic, qos=self._qos(qos),
                                                                  payload=payload))

    def subscribe_to_iot_core(self, topic: str, qos: int, on_message: OnIotMessage, on_closed: OnClosed) -> _Operation:
        def on_event(event):
            msg = event.message
            on_message(msg.topic_name, bytes(msg.payload or b""))

        _, op = self._wait(lambda: self._client.subscribe_to_iot_core_async(
            topic_name=topic, qos=self._qos(qos), on_stream_event=on_event, on_stream_closed=on_closed))
        return _Operation(op)

    # -- local pub/sub -------------------------------------------------------------------------------------
    def publish_to_topic(self, topic: str, message: Any) -> None:
        from awsiot.greengrasscoreipc.model import BinaryMessage, JsonMessage, PublishMessage

        if isinstance(message, (bytes, bytearray)):
            msg = PublishMessage(binary_message=BinaryMessage(message=bytes(message)))
        else:
            msg = PublishMessage(json_message=JsonMessage(message=message))
        self._wait(lambda: self._client.publish_to_topic_async(topic=topic, publish_message=msg))

    def subscribe_to_topic(self, topic: str, on_message: OnLocalMessage, on_closed: OnClosed) -> _Operation:
        def on_event(event):
            if event.json_message is not None:
                context = event.json_message.context
                on_message(context.topic if context else topic, event.json_message.message)
            elif event.binary_message is not None:
                context = event.binary_message.context
                on_message(context.topic if context else topic, bytes(event.binary_message.message or b""))

        _, op = self._wait(lambda: self._client.subscribe_to_topic_async(
            topic=topic, on_stream_event=on_event, on_stream_closed=on_closed))
        return _Operation(op)

    # -- configuration -------------------------------------------------------------------------------------
    def get_configuration(self, component: Optional[str], key_path: list) -> Any:
        return self._wait(lambda: self._client.get_configuration_async(component_name=component,
                                                                       key_path=key_path)).value

    def update_configuration(self, key_path: list, value_to_merge: dict, timestamp: datetime.datetime) -> None:
        self._wait(lambda: self._client.update_configuration_async(key_path=key_path, value_to_merge=value_to_merge,
                                                                   timestamp=timestamp))

    def subscribe_to_configuration_update(self, component: Optional[str], on_update: OnConfigUpdate,
                                          on_closed: OnClosed) -> _Operation:
        def on_event(event):
            on_update(list(event.configuration_update_event.key_path or []))

        _, op = self._wait(lambda: self._client.subscribe_to_configuration_update_async(
            component_name=component, key_path=[], on_stream_event=on_event, on_stream_closed=on_closed))
        return _Operation(op)

    # -- lifecycle -----------------------------------------------------------------------------------------
    def update_state(self, state: str) -> None:
        self._wait(lambda: self._client.update_state_async(state=state))

    def restart_component(self, component: str) -> str:
        return str(self._wait(lambda: self._client.restart_component_async(component_name=component)).restart_status)

    def get_component_details(self, component: str) -> dict:
        d = self._wait(lambda: self._client.get_component_details_async(component_name=component)).component_details
        return {"componentName": d.component_name, "version": d.version, "state": d.state,
                "configuration": d.configuration}

    def close(self) -> None:
        # Close the connection only, never clientv2.close(): awsiotsdk 1.31's clientv2.close() stops the executor
        # (Ipc's callback worker, which outlives connections) and then raises on every stream-closed callback.
        self._closed = True
        try:
            self._client.client.close().result(timeout=2)
        except Exception:
            pass


class _Operation:
    """A subscription's awsiotsdk operation; close() sends TERMINATE and never raises (the connection may be gone)."""

    def __init__(self, op: Any):
        self._op = op

    def close(self) -> None:
        try:
            self._op.close()
        except Exception:
            pass
