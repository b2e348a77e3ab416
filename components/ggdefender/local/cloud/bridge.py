"""Bridge the core's IoT Core traffic to a real MQTT broker (`local run --broker mqtt://127.0.0.1:1883`).

Every IoT Core message routed by the core (component publishes and the offline cloud's replies) is
published to the broker, so `mosquitto_sub -t '$aws/#' -v` shows it; every broker message comes in as an
IoT Core message from the cloud, so `mosquitto_pub` can drive components (and reach the offline Device
Defender). Echo loops are avoided on both sides: messages that came from the broker are not sent back, and
the broker subscription uses MQTT v5 No Local so our own publishes never return. mosquitto accepts topics
starting with `$aws/`; some brokers (amqtt) refuse every `$` topic.
"""

from __future__ import annotations

import logging
import threading
import urllib.parse
import uuid
from typing import Any, Callable, Iterable, Optional

from ggdefender.ipc import IOT_CORE_MAX_PAYLOAD

log = logging.getLogger("ggdefender.local.cloud.bridge")

SOURCE = "bridge"
MAX_PAYLOAD = IOT_CORE_MAX_PAYLOAD  # broker messages this big or bigger are dropped, not forwarded
CONNECT_TIMEOUT = 10.0


class BridgeError(RuntimeError):
    """The broker URL is invalid or the broker cannot be reached."""


def parse_broker_url(url: str) -> tuple:
    """mqtt://host[:port] -> (host, port). Only plain MQTT to a local broker is supported."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("mqtt", "tcp"):
        raise BridgeError(f"--broker {url!r}: expected mqtt://HOST[:PORT]")
    if not parsed.hostname:
        raise BridgeError(f"--broker {url!r}: no host")
    if parsed.path not in ("", "/") or parsed.query or parsed.username:
        raise BridgeError(f"--broker {url!r}: only mqtt://HOST[:PORT] is supported")
    try:
        port = parsed.port or 1883
    except ValueError:
        raise BridgeError(f"--broker {url!r}: bad port") from None
    return parsed.hostname, port


class Bridge:
    def __init__(self, core: Any, url: str, *, view: Any = None, client_id: Optional[str] = None):
        self.core = core
        self.url = url
        self.host, self.port = parse_broker_url(url)
        self.view = view
        self.client_id = client_id or f"ggdefender-local-{uuid.uuid4().hex[:8]}"
        self.sent = 0
        self.received = 0
        self._client: Any = None  # paho's mqtt.Client once connected
        self._unsubscribe: list = []
        self._connected = threading.Event()
        self._connect_error: Optional[str] = None

    def start(self) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.subscribeoptions import SubscribeOptions

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=mqtt.MQTTv5)
        options = SubscribeOptions(qos=1, noLocal=True)

        def on_connect(c, userdata, flags, reason_code, properties):
            if reason_code.is_failure:
                self._connect_error = str(reason_code)
                self._connected.set()
                return
            # everything, including the $aws/ tree that '#' does not match
            c.subscribe([("#", options), ("$aws/#", options)])
            self._connected.set()

        def on_message(c, userdata, msg):
            if len(msg.payload) >= MAX_PAYLOAD:
                self._note(f"dropped a {len(msg.payload)}-byte message on {msg.topic}: over the "
                           f"{MAX_PAYLOAD}-byte IoT Core limit", "warning")
                return
            self.received += 1
            self.core.publish_iot(msg.topic, bytes(msg.payload), source=SOURCE)

        def on_disconnect(c, userdata, flags, reason_code, properties):
            if self._client is not None:
                self._note(f"disconnected from {self.url} ({reason_code}); reconnecting", "warning")

        client.on_connect = on_connect
        client.on_message = on_message
        client.on_disconnect = on_disconnect
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        try:
            client.connect(self.host, self.port, keepalive=30)
        except OSError as exc:
            raise BridgeError(f"cannot reach the broker at {self.url}: {exc}") from None
        client.loop_start()
        if not self._connected.wait(CONNECT_TIMEOUT) or self._connect_error:
            client.loop_stop()
            client.disconnect()
            raise BridgeError(f"broker at {self.url} did not accept the connection: "
                              f"{self._connect_error or 'no answer'}")
        self._client = client
        for topic_filter in ("#", "$aws/#"):
            self._unsubscribe.append(self.core.subscribe_iot(topic_filter, self._outbound))
        self._note(f"bridging IoT Core traffic to {self.url}")

    def _outbound(self, topic: str, payload: bytes, source: str) -> None:
        if source == SOURCE or self._client is None:
            return  # it came from the broker: sending it back would loop
        self.sent += 1
        self._client.publish(topic, payload, qos=1)

    def _note(self, text: str, level: str = "info") -> None:
        if self.view is not None:
            self.view.note("bridge", text, level=level)
        else:
            log.info("%s", text)

    def stop(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()


class BrokerCore:
    """The IoT Core side of a real MQTT broker, for the offline cloud services (`cloud.services.declared()`).

    The services talk to a core through `thing_name`, `subscribe_iot(filter, callback)` and
    `publish_iot(topic, payload)`; this offers the same on a broker that stands in for IoT Core (e.g. the TLS
    mosquitto a real nucleus, Greengrass nucleus lite, connects to), so the same Device Defender and Jobs
    services answer a real nucleus's components. `thread_setup` runs first on the network thread (e.g. to join
    the network namespace the broker lives in: every (re)connection is made from that thread).
    """

    def __init__(self, host: str, port: int, thing_name: str, *, tls: Optional[tuple] = None,
                 thread_setup: Optional[Callable[[], None]] = None, client_id: Optional[str] = None):
        self.host, self.port, self.thing_name = host, port, thing_name
        self._tls = tls  # (ca, cert, key)
        self._thread_setup = thread_setup
        self._client_id = client_id or f"ggdefender-cloud-{uuid.uuid4().hex[:8]}"
        self._lock = threading.Lock()
        self._subs: list = []  # [filter, callback]
        self._connected = threading.Event()
        self._stopping = False
        self._client: Any = None  # paho's mqtt.Client once started
        self._thread: Optional[threading.Thread] = None
        self._error: Optional[BaseException] = None

    def start(self, timeout: float = CONNECT_TIMEOUT) -> "BrokerCore":
        import paho.mqtt.client as mqtt

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self._client_id, protocol=mqtt.MQTTv5)
        if self._tls:
            ca, cert, key = self._tls
            client.tls_set(ca_certs=ca, certfile=cert, keyfile=key)
        client.on_connect = self._on_connect
        client.on_disconnect = lambda *a: self._connected.clear()
        client.on_message = self._on_message
        client.reconnect_delay_set(min_delay=1, max_delay=5)
        self._client = client

        def network() -> None:
            try:
                if self._thread_setup is not None:
                    self._thread_setup()
                # a broker that is still starting is retried (within start()'s timeout), as later reconnects are
                client.connect_async(self.host, self.port, keepalive=30)
                client.loop_forever(retry_first_connection=True)
            except BaseException as exc:  # reported by start(); the thread ends
                self._error = exc
                self._connected.set()

        self._thread = threading.Thread(target=network, name="broker-core", daemon=True)
        self._thread.start()
        if not self._connected.wait(timeout) or self._error is not None:
            self.stop()
            raise BridgeError(f"broker at {self.host}:{self.port} did not accept the connection: "
                              f"{self._error or 'no answer'}")
        return self

    def _subscribe_all(self, c: Any, filters: Iterable[str]) -> None:
        from paho.mqtt.subscribeoptions import SubscribeOptions

        # No Local: a service's own replies never come back to it as requests
        for topic_filter in filters:
            c.subscribe(topic_filter, options=SubscribeOptions(qos=1, noLocal=True))

    def _on_connect(self, c: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self._error = BridgeError(str(reason_code))
        else:
            with self._lock:
                filters = {f for f, _ in self._subs}
            self._subscribe_all(c, filters)  # again after every reconnection (clean session)
        self._connected.set()

    def _on_message(self, c: Any, userdata: Any, msg: Any) -> None:
        import paho.mqtt.client as mqtt

        with self._lock:
            callbacks = [cb for f, cb in self._subs if mqtt.topic_matches_sub(f, msg.topic)]
        for callback in callbacks:
            try:
                callback(msg.topic, bytes(msg.payload), SOURCE)
            except Exception:
                log.exception("a cloud service failed on a message on %s", msg.topic)

    def subscribe_iot(self, topic_filter: str, callback: Callable[..., None]) -> Callable[[], None]:
        entry = [topic_filter, callback]
        with self._lock:
            self._subs.append(entry)
        if self._client is not None and self._connected.is_set():
            self._subscribe_all(self._client, [topic_filter])

        def unsubscribe() -> None:
            with self._lock:
                if entry in self._subs:
                    self._subs.remove(entry)
        return unsubscribe

    def publish_iot(self, topic: str, payload: Any, *, source: str = "cloud", qos: int = 1) -> None:
        if isinstance(payload, str):
            payload = payload.encode()
        if self._client is not None:
            self._client.publish(topic, bytes(payload), qos=qos)

    def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()  # ends loop_forever
        if self._thread is not None:
            self._thread.join(CONNECT_TIMEOUT)
