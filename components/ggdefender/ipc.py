"""The one Greengrass IPC layer every part uses (the only module that imports awsiotsdk's IPC client).

`Ipc` wraps `GreengrassCoreIPCClientV2` with what a long-running part needs: connect with retry and
backoff, transparent reconnect after the nucleus drops the connection (subscriptions are re-established),
and small typed helpers for IoT Core and local pub/sub, configuration and lifecycle calls.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import logging
import os
import threading
import time
from typing import Any, Callable, Optional

log = logging.getLogger("ggdefender.ipc")

IotHandler = Callable[[str, bytes], None]
LocalHandler = Callable[[str, Any], None]  # payload: dict for JSON messages, bytes for binary ones
ConfigHandler = Callable[[list], None]  # key path of the changed node, relative to `configuration`


# A nucleus refuses PublishToIoTCore payloads of this many bytes or more (mqtt.maxMessageSizeInBytes, default
# 128 KiB); every size check on IoT Core payloads in the project uses this one number.
IOT_CORE_MAX_PAYLOAD = 128 * 1024


class IpcUnavailable(RuntimeError):
    """The Greengrass IPC socket could not be reached within the retry budget."""


class Subscription:
    """A live subscription; survives reconnects until closed."""

    def __init__(self, ipc: "Ipc", kind: str, topic: str, handler: Callable, qos: int = 1):
        self._ipc = ipc
        self.kind = kind
        self.topic = topic
        self.handler = handler
        self.qos = qos
        self.operation = None
        self.closed = False

    def close(self) -> None:
        self.closed = True
        self._ipc._forget(self)
        op, self.operation = self.operation, None
        if op is not None:
            try:
                op.close()
            except Exception:  # already closed by a disconnect
                pass


class Ipc:
    """Greengrass IPC client with reconnect. Thread-safe; callbacks run on one worker thread, in order."""

    def __init__(
        self,
        *,
        connect_attempts: int = 10,
        initial_backoff: float = 0.5,
        max_backoff: float = 30.0,
        timeout: float = 10.0,
        client_factory: Optional[Callable[[], Any]] = None,
    ):
        self.connect_attempts = connect_attempts
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.timeout = timeout
        self._client_factory = client_factory or self._default_client
        self._client = None
        self._lock = threading.RLock()
        self._subs: list[Subscription] = []
        self._closed = False
        # one worker keeps stream callbacks in arrival order (gotcha 11 of the wire protocol)
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="ipc-callbacks")

    # -- environment -------------------------------------------------------------------------
    @property
    def thing_name(self) -> str:
        return os.environ.get("AWS_IOT_THING_NAME", "")

    @staticmethod
    def available() -> bool:
        """True when this process was started by a Greengrass core (real or `ggdefender local`)."""
        return bool(os.environ.get("SVCUID") and os.environ.get("AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"))

    # -- connection ------------------------------------------------------------------------------
    def _default_client(self):
        from awsiot.eventstreamrpc import LifecycleHandler
        from awsiot.greengrasscoreipc import connect
        from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2

        ipc = self

        class _Lifecycle(LifecycleHandler):
            def on_disconnect(self, reason):
                ipc._on_disconnect(reason)

            def on_error(self, error):
                log.warning("IPC connection error: %s", error)
                return True  # close; reconnect happens on next use

        raw = connect(lifecycle_handler=_Lifecycle(), timeout=self.timeout)
        return GreengrassCoreIPCClientV2(client=raw, executor=self._executor)

    def connect(self) -> "Ipc":
        """Connect (or reconnect) with exponential backoff; raises IpcUnavailable when out of attempts."""
        with self._lock:
            if self._client is not None:
                return self
            delay = self.initial_backoff
            last: Optional[BaseException] = None
            for attempt in range(1, self.connect_attempts + 1):
                if self._closed:
                    raise IpcUnavailable("IPC client closed")
                try:
                    self._client = self._client_factory()
                    break
                except Exception as exc:  # awscrt raises RuntimeError/AwsCrtError/TimeoutError
                    last = exc
                    log.warning("IPC connect attempt %d/%d failed: %s", attempt, self.connect_attempts, exc)
                    if attempt < self.connect_attempts:
                        time.sleep(delay)
                        delay = min(delay * 2, self.max_backoff)
            else:
                raise IpcUnavailable(f"cannot connect to Greengrass IPC after {self.connect_attempts} attempts: {last}")
            for sub in list(self._subs):
                self._activate(sub)
            return self

    def _on_disconnect(self, reason) -> None:
        if self._closed:
            return
        log.warning("IPC connection lost (%s); will reconnect on next use", reason)
        with self._lock:
            self._client = None
            for sub in self._subs:
                sub.operation = None

    def _call(self, fn: Callable[[Any], Any]):
        """Run fn(client); on a dropped connection reconnect once and retry."""
        for attempt in (1, 2):
            client = self.connect()._client
            try:
                return fn(client)
            except Exception as exc:
                if attempt == 2 or not _is_connection_error(exc):
                    raise
                log.warning("IPC call failed on a dropped connection (%s); reconnecting", exc)
                with self._lock:
                    if self._client is client:
                        self._client = None

    def close(self) -> None:
        self._closed = True
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            # Close the connection first and only then stop the callback worker: awsiotsdk 1.31's
            # clientv2.close() stops the executor first and then raises on every stream-closed callback.
            try:
                client.client.close().result(timeout=2)
            except Exception:
                pass
        self._executor.shutdown(wait=False)

    # -- IoT Core ----------------------------------------------------------------------------------
    def publish_iot(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        from awsiot.greengrasscoreipc.model import QOS

        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        q = QOS.AT_LEAST_ONCE if qos else QOS.AT_MOST_ONCE
        self._call(lambda c: c.publish_to_iot_core(topic_name=topic, qos=q, payload=data))

    def subscribe_iot(self, topic_filter: str, handler: IotHandler, qos: int = 1) -> Subscription:
        return self._subscribe(Subscription(self, "iot", topic_filter, handler, qos))

    # -- local pub/sub -----------------------------------------------------------------------------
    def publish_local(self, topic: str, message: Any) -> None:
        """Publish a JSON-able object (JSON message) or bytes (binary message) on a local topic."""
        from awsiot.greengrasscoreipc.model import BinaryMessage, JsonMessage, PublishMessage

        if isinstance(message, (bytes, bytearray)):
            msg = PublishMessage(binary_message=BinaryMessage(message=bytes(message)))
        else:
            msg = PublishMessage(json_message=JsonMessage(message=message))
        self._call(lambda c: c.publish_to_topic(topic=topic, publish_message=msg))

    def subscribe_local(self, topic: str, handler: LocalHandler) -> Subscription:
        return self._subscribe(Subscription(self, "local", topic, handler))

    # -- configuration -----------------------------------------------------------------------------
    def get_config(self, key_path: Optional[list] = None, component: Optional[str] = None) -> Any:
        """The component's configuration (or the node at key_path); None when the key does not exist."""
        from awsiot.greengrasscoreipc.model import ResourceNotFoundError

        try:
            resp = self._call(lambda c: c.get_configuration(component_name=component, key_path=key_path or []))
        except ResourceNotFoundError:
            return None
        return resp.value

    def update_config(self, key_path: list, value_to_merge: dict) -> None:
        now = datetime.datetime.now(datetime.timezone.utc)
        self._call(lambda c: c.update_configuration(key_path=key_path, value_to_merge=value_to_merge, timestamp=now))

    def subscribe_config(self, handler: ConfigHandler, component: Optional[str] = None) -> Subscription:
        sub = Subscription(self, "config", component or "", handler)
        return self._subscribe(sub)

    # -- lifecycle -----------------------------------------------------------------------------------
    def update_state(self, state: str) -> None:
        self._call(lambda c: c.update_state(state=state))

    def restart_component(self, component: str) -> str:
        resp = self._call(lambda c: c.restart_component(component_name=component))
        return str(resp.restart_status)

    def component_details(self, component: str) -> dict:
        resp = self._call(lambda c: c.get_component_details(component_name=component))
        d = resp.component_details
        return {"componentName": d.component_name, "version": d.version, "state": d.state,
                "configuration": d.configuration}

    # -- subscriptions ---------------------------------------------------------------------------------
    def _subscribe(self, sub: Subscription) -> Subscription:
        with self._lock:
            self._subs.append(sub)
        try:
            self.connect()
            with self._lock:
                if sub.operation is None and self._client is not None:
                    self._activate(sub)
        except Exception:
            self._forget(sub)
            raise
        return sub

    def _forget(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    def _activate(self, sub: Subscription) -> None:
        client = self._client

        def on_closed():
            sub.operation = None

        if sub.kind == "iot":
            from awsiot.greengrasscoreipc.model import QOS

            def on_iot(event):
                msg = event.message
                self._dispatch(sub, msg.topic_name, bytes(msg.payload or b""))

            q = QOS.AT_LEAST_ONCE if sub.qos else QOS.AT_MOST_ONCE
            _, sub.operation = client.subscribe_to_iot_core(
                topic_name=sub.topic, qos=q, on_stream_event=on_iot, on_stream_closed=on_closed)
        elif sub.kind == "local":
            def on_local(event):
                if event.json_message is not None:
                    topic = event.json_message.context.topic if event.json_message.context else sub.topic
                    self._dispatch(sub, topic, event.json_message.message)
                elif event.binary_message is not None:
                    topic = event.binary_message.context.topic if event.binary_message.context else sub.topic
                    self._dispatch(sub, topic, bytes(event.binary_message.message or b""))

            _, sub.operation = client.subscribe_to_topic(
                topic=sub.topic, on_stream_event=on_local, on_stream_closed=on_closed)
        elif sub.kind == "config":
            def on_config(event):
                self._dispatch(sub, None, list(event.configuration_update_event.key_path or []))

            _, sub.operation = client.subscribe_to_configuration_update(
                component_name=sub.topic or None, key_path=[], on_stream_event=on_config,
                on_stream_closed=on_closed)
        else:  # pragma: no cover - programming error
            raise ValueError(sub.kind)

    @staticmethod
    def _dispatch(sub: Subscription, topic, payload) -> None:
        if sub.closed:
            return
        try:
            if sub.kind == "config":
                sub.handler(payload)
            else:
                sub.handler(topic, payload)
        except Exception:  # a handler bug must never kill the IPC callback thread
            log.exception("handler for %s subscription %r failed", sub.kind, sub.topic)


def _is_connection_error(exc: BaseException) -> bool:
    name = type(exc).__name__
    text = str(exc)
    return (
        name in ("StreamClosedError", "ConnectionClosedError", "EventStreamError")
        or "AWS_ERROR_EVENT_STREAM_RPC_CONNECTION_CLOSED" in text
        or "AWS_IO_SOCKET_CLOSED" in text
        or "connection" in text.lower() and "closed" in text.lower()
    )
