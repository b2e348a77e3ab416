"""The one Greengrass IPC layer every part of process A uses (process B's goes through A's relay).

`Ipc` gives a long-running part what it needs on top of one IPC client (ipc_client.IpcClient): connect with
retry and backoff, transparent reconnect after the nucleus drops the connection (subscriptions are
re-established), and small typed helpers for IoT Core and local pub/sub, configuration and lifecycle calls.
The client is awsiotsdk's (ipc_awsiotsdk.py) where awscrt imports, else the pure-Python one (ipc_pure.py);
`GGDEFENDER_IPC_CLIENT` (auto | awsiotsdk | pure) chooses (docs/deploy.md, "IPC client").
"""

from __future__ import annotations

import concurrent.futures
import datetime
import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Optional

from ggdefender import defaults, ratelog
from ggdefender.ipc_client import ConnectionLost, IpcClient, ResourceNotFoundError, ServiceError, Stream
from ggdefender.ipc_port import CollectorChannel, ConfigHandler, IotHandler, LocalHandler

log = logging.getLogger("ggdefender.ipc")


# A nucleus refuses PublishToIoTCore payloads of this many bytes or more (mqtt.maxMessageSizeInBytes, default
# 128 KiB); every size check on IoT Core payloads in the project uses this one number.
IOT_CORE_MAX_PAYLOAD = 128 * 1024


# How long an IPC outage may last before a part gives up (Supervisor.IpcRetryBudgetSeconds overrides it in
# process A): long enough for a nucleus restart, short enough that an orphan of a dead core does not linger.
DEFAULT_RETRY_BUDGET = 300.0


class IpcUnavailable(RuntimeError):
    """The Greengrass IPC socket could not be reached within the retry budget."""


CLIENT_ENV = "GGDEFENDER_IPC_CLIENT"
CLIENT_CHOICES = ("auto", "awsiotsdk", "pure")


class IpcClientChoiceError(ValueError):
    """GGDEFENDER_IPC_CLIENT names no client, or one that cannot load here."""


def choose_client(environ: Optional[dict] = None) -> tuple[str, str]:
    """(client, why) for GGDEFENDER_IPC_CLIENT: `auto` (the default) is awsiotsdk when awscrt and awsiotsdk
    import, else pure. Raises IpcClientChoiceError for an unknown value or an awsiotsdk that does not import."""
    env = os.environ if environ is None else environ
    value = (env.get(CLIENT_ENV) or "auto").strip().lower()
    if value not in CLIENT_CHOICES:
        raise IpcClientChoiceError(f"{CLIENT_ENV}={env.get(CLIENT_ENV)!r} is not an IPC client: use one of "
                                   f"{', '.join(CLIENT_CHOICES)}")
    if value == "pure":
        return "pure", f"{CLIENT_ENV}=pure"
    try:
        import awscrt  # noqa: F401  (the native library: the reason there are two clients)
        import awsiot.greengrasscoreipc.clientv2  # noqa: F401
    except Exception as exc:  # ImportError, or a wheel for another platform (OSError from the loader)
        if value == "awsiotsdk":
            raise IpcClientChoiceError(f"{CLIENT_ENV}=awsiotsdk, but awsiotsdk/awscrt do not import here: "
                                       f"{type(exc).__name__}: {exc}") from None
        return "pure", f"awsiotsdk/awscrt do not import ({type(exc).__name__}: {exc})"[:300]
    version = getattr(awscrt, "__version__", "")
    return "awsiotsdk", (f"{CLIENT_ENV}=awsiotsdk" if value == "awsiotsdk" else "awscrt imports") + \
        (f" (awscrt {version})" if version else "")


# Nucleus lite's ggipcd takes IPC messages of at most GGL_IPC_MAX_MSG_LEN = 10000 bytes (a build-time constant in
# its modules/ggipcd/src/ipc_server.h) and closes the whole connection, subscriptions and all, on a bigger one. A
# PublishToIoTCore payload travels base64-encoded inside that message: measured on lite, 7,200 bytes pass and
# 7,400 drop the connection. Reports, violations and findings are kept at or under this on lite.
LITE_MAX_IOT_PAYLOAD = 7000
MAX_IOT_PAYLOAD_ENV = "GGDEFENDER_MAX_IOT_PAYLOAD"  # process A tells process B (whose relay cannot ask the nucleus)
LITE_COMPONENT = "aws.greengrass.NucleusLite"  # only nucleus lite has this component's configuration


class PayloadTooLarge(ValueError):
    """A PublishToIoTCore payload over what this nucleus takes (refused here: lite would drop the connection)."""


class PublishRefused(RuntimeError):
    """The nucleus answered a PublishToIoTCore with an error while the IPC connection itself is fine. Nucleus
    lite does so at once while its iotcored has no IoT Core connection (no spooler: iotcored_mqtt_publish in
    lite's modules/iotcored/src/mqtt.c hands each message straight to coreMQTT's MQTT_Publish; the Java
    nucleus queues it in its spooler instead). Not an IPC outage: it never counts against the retry budget,
    and the caller tries again later."""


def error_text(exc: BaseException) -> str:
    """`Type: message` of an IPC error (ipc_client's modeled errors keep theirs in `.message`); lite's
    ServiceError often carries none at all."""
    text = str(exc) or str(getattr(exc, "message", "") or "")
    return f"{type(exc).__name__}: {text}" if text else f"{type(exc).__name__} (the nucleus gave no reason)"


class Subscription:
    """A live subscription; survives reconnects until closed."""

    def __init__(self, ipc: "Ipc", kind: str, topic: str, handler: Callable, qos: int = 1):
        self._ipc = ipc
        self.kind = kind
        self.topic = topic
        self.handler = handler
        self.qos = qos
        self.operation: Optional[Stream] = None
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
        connect_attempts: Optional[int] = None,
        retry_budget: float = DEFAULT_RETRY_BUDGET,
        initial_backoff: float = 0.5,
        max_backoff: float = 30.0,
        timeout: float = 10.0,
        client_factory: Optional[Callable[[], IpcClient]] = None,
    ):
        """`retry_budget`: seconds an outage may last (counted from the first failed connect) before the
        connection is declared gone for good: every later call raises IpcUnavailable at once and the
        `on_gone` listeners run, so a part whose core died exits instead of retrying forever.

        The client (awsiotsdk or pure) is GGDEFENDER_IPC_CLIENT's choice (`choose_client`, which raises
        IpcClientChoiceError for a value it does not know); `client_factory` replaces it (tests)."""
        self.connect_attempts = connect_attempts
        self.retry_budget = retry_budget
        self._max_iot_payload: Optional[int] = None  # max_iot_payload(), once the nucleus has answered
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.timeout = timeout
        if client_factory is not None:
            self.client_name, self.client_reason = "custom", "client_factory"
        else:
            self.client_name, self.client_reason = choose_client()
        self._client_factory = client_factory or self._default_client
        self._client: Optional[IpcClient] = None  # the connected client, made by _client_factory
        self._announced = False
        self._lock = threading.RLock()  # guards state only; never held while waiting
        self._connect_lock = threading.Lock()  # one connection attempt at a time
        self._closing = threading.Event()  # close() interrupts a backoff wait at once
        self._subs: list[Subscription] = []
        self._closed = False
        self._outage_since: Optional[float] = None  # monotonic time of the first failed connect
        self.gone: Optional[str] = None  # why the connection was given up for good
        self._gone_listeners: list = []
        self._reconnector: Optional[threading.Thread] = None
        self._refused: list[Subscription] = []  # IoT Core subscriptions the nucleus refused for now: retried
        self._refused_retrier: Optional[threading.Thread] = None
        self._refusals = ratelog.RateLimitedLog(log)
        self._collector: Optional[CollectorChannel] = None  # see attach_collector
        self._collector_attached = threading.Condition(self._lock)
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
    def _default_client(self) -> IpcClient:
        made: list = []  # the disconnect of a client that is no longer ours is not this connection's

        def on_disconnect(reason: str) -> None:
            self._on_disconnect(reason, made[0] if made else None)

        client: IpcClient
        if self.client_name == "pure":
            from ggdefender.ipc_pure import PureClient

            client = PureClient(on_disconnect=on_disconnect, executor=self._executor, timeout=self.timeout)
        else:
            from ggdefender.ipc_awsiotsdk import AwsIotSdkClient

            client = AwsIotSdkClient(on_disconnect=on_disconnect, executor=self._executor, timeout=self.timeout)
        made.append(client)
        return client

    def on_gone(self, listener: Callable[[str], None]) -> None:
        """Call listener(reason) once when the retry budget runs out (at once if it already has)."""
        with self._lock:
            gone = self.gone
            if gone is None:
                self._gone_listeners.append(listener)
        if gone is not None:
            listener(gone)

    def connect(self) -> "Ipc":
        """Connect (or reconnect) with exponential backoff.

        Raises IpcUnavailable when closed, when the outage outlasts `retry_budget` (then for good, see
        `on_gone`) or after `connect_attempts` attempts of this call when that is set. No lock is held while
        waiting, so close() (SIGTERM) ends a backoff at once; an attempt itself is bounded by `timeout`.
        """
        with self._connect_lock:
            delay = self.initial_backoff
            attempt = 0
            while True:
                with self._lock:
                    if self._closed:
                        raise IpcUnavailable("IPC client closed")
                    if self.gone is not None:
                        raise IpcUnavailable(self.gone)
                    if self._client is not None:
                        return self
                attempt += 1
                try:
                    client = self._client_factory()
                except Exception as exc:  # OSError, TimeoutError, AccessDenied, awscrt's errors
                    now = time.monotonic()
                    with self._lock:
                        if self._outage_since is None:
                            self._outage_since = now
                        out_for = now - self._outage_since
                    left = self.retry_budget - out_for
                    if left <= 0:
                        self._give_up(f"Greengrass IPC unreachable for {out_for:.0f}s (retry budget "
                                      f"{self.retry_budget:g}s): {exc}")
                        raise IpcUnavailable(self.gone) from None
                    if self.connect_attempts is not None and attempt >= self.connect_attempts:
                        raise IpcUnavailable(f"cannot connect to Greengrass IPC after {attempt} attempts: "
                                             f"{exc}") from None
                    log.warning("IPC connect attempt %d failed (%s); retrying in %.1fs (gives up in %.0fs)",
                                attempt, exc, min(delay, left), left)
                    if self._closing.wait(min(delay, left)):
                        raise IpcUnavailable("IPC client closed") from None
                    delay = min(delay * 2, self.max_backoff)
                    continue
                with self._lock:
                    if self._closed:
                        _close_quietly(client)
                        raise IpcUnavailable("IPC client closed")
                    self._client = client
                    self._outage_since = None
                    for sub in list(self._subs):
                        try:
                            self._activate(sub)
                        except Exception as exc:  # that one subscription is retried on the next reconnect
                            log.warning("IPC: could not re-subscribe to %s %r: %s", sub.kind, sub.topic, exc)
                if not self._announced:  # once per Ipc: which client this process speaks IPC with, and why
                    self._announced = True
                    log.info("IPC client: %s (%s)", self.client_name, self.client_reason)
                if attempt > 1:
                    log.info("IPC connection re-established after %d attempts", attempt)
                return self

    def _give_up(self, reason: str) -> None:
        with self._lock:
            if self.gone is not None:
                return
            self.gone = reason
            listeners, self._gone_listeners = self._gone_listeners, []
        log.error("%s; giving up", reason)
        for listener in listeners:
            try:
                listener(reason)
            except Exception:
                log.exception("IPC gone listener failed")

    def _on_disconnect(self, reason: Any, client: Optional[IpcClient] = None) -> None:
        if self._closed:
            return
        with self._lock:
            if client is not None and self._client is not client and self._client is not None:
                return  # an earlier connection, already replaced
        log.warning("IPC connection lost (%s); reconnecting", reason)
        with self._lock:
            self._client = None
            for sub in self._subs:
                sub.operation = None
            if self._reconnector is not None and self._reconnector.is_alive():
                return
            # reconnect now rather than on next use: subscriptions come back, and a core that is gone is
            # noticed within the retry budget even when this part has nothing to send
            self._reconnector = threading.Thread(target=self._reconnect, name="ipc-reconnect", daemon=True)
            self._reconnector.start()

    def _reconnect(self) -> None:
        try:
            self.connect()
        except IpcUnavailable:
            pass  # closed, or gone (listeners told)

    def _call(self, fn: Callable[[IpcClient], Any]) -> Any:
        """Run fn(client); on a dropped connection reconnect once and retry."""
        for attempt in (1, 2):
            client = self._connected_client()
            try:
                return fn(client)
            except ConnectionLost as exc:
                if attempt == 2:
                    raise
                log.warning("IPC call failed on a dropped connection (%s); reconnecting", exc)
                with self._lock:
                    dropped = self._client is client
                    if dropped:
                        self._client = None
                if dropped:
                    _close_quietly(client)  # what is left of it (a stream closed under the call leaves it open)
        raise AssertionError("unreachable")  # pragma: no cover

    def _connected_client(self) -> IpcClient:
        while True:  # a disconnect can land between connect() and reading the client
            self.connect()
            with self._lock:
                if self._client is not None:
                    return self._client

    def close(self) -> None:
        self._closed = True
        self._closing.set()
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            _close_quietly(client)
        self._executor.shutdown(wait=False)

    # -- IoT Core ----------------------------------------------------------------------------------
    def publish_iot(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        limit = self.max_iot_payload()
        if len(data) > limit:
            raise PayloadTooLarge(f"PublishToIoTCore on {topic}: {len(data)} bytes, over the {limit} bytes this "
                                  "nucleus takes over IPC")
        try:
            self._call(lambda c: c.publish_to_iot_core(topic, qos, data))
        except Exception as exc:
            # only ServiceError means "not now"; UnauthorizedError and invalid requests are the message's own
            if not isinstance(exc, ServiceError):
                raise
            raise PublishRefused(f"PublishToIoTCore on {topic} refused by the nucleus: {error_text(exc)}") from None

    def max_iot_payload(self) -> int:
        """The largest PublishToIoTCore payload this nucleus takes over IPC: IoT Core's limit, less on nucleus
        lite (asked once: only lite has aws.greengrass.NucleusLite's configuration)."""
        if self._max_iot_payload is None:
            try:
                self._call(lambda c: c.get_configuration(LITE_COMPONENT, []))
                self._max_iot_payload = LITE_MAX_IOT_PAYLOAD
                log.info("nucleus lite: IoT Core messages are kept at or under %d bytes (its IPC message limit)",
                         LITE_MAX_IOT_PAYLOAD)
            except ResourceNotFoundError:
                self._max_iot_payload = IOT_CORE_MAX_PAYLOAD - 1
            except IpcUnavailable:
                raise
            except Exception as exc:  # not known yet: IoT Core's limit this time, ask again next time
                log.debug("could not tell the nucleus's IPC message limit: %s", exc)
                return IOT_CORE_MAX_PAYLOAD - 1
        return self._max_iot_payload

    def known_max_iot_payload(self) -> int:
        """max_iot_payload() without asking the nucleus: IoT Core's limit until it has answered."""
        return self._max_iot_payload or IOT_CORE_MAX_PAYLOAD - 1

    def subscribe_iot(self, topic_filter: str, handler: IotHandler, qos: int = 1) -> Subscription:
        return self._subscribe(Subscription(self, "iot", topic_filter, handler, qos))

    # -- local pub/sub -----------------------------------------------------------------------------
    def publish_local(self, topic: str, message: Any) -> None:
        """Publish a JSON-able object (JSON message) or bytes (binary message) on a local topic."""
        self._call(lambda c: c.publish_to_topic(topic, message))

    def subscribe_local(self, topic: str, handler: LocalHandler) -> Subscription:
        return self._subscribe(Subscription(self, "local", topic, handler))

    # -- configuration -----------------------------------------------------------------------------
    def get_config(self, key_path: Optional[list] = None, component: Optional[str] = None) -> Any:
        """The component's configuration (or the node at key_path); None when the key does not exist. For the
        own component the code defaults (defaults.py) are merged under it: the recipe carries none."""
        try:
            value = self._call(lambda c: c.get_configuration(component, key_path or []))
        except ResourceNotFoundError:
            value = None
        return defaults.with_defaults(key_path or [], value) if component is None else value

    def update_config(self, key_path: list, value_to_merge: dict) -> None:
        now = datetime.datetime.now(datetime.timezone.utc)
        self._call(lambda c: c.update_configuration(key_path, value_to_merge, now))

    def subscribe_config(self, handler: ConfigHandler, component: Optional[str] = None) -> Subscription:
        sub = Subscription(self, "config", component or "", handler)
        return self._subscribe(sub)

    # -- process B's collector, over the private relay (not the Greengrass bus) ---------------------------
    def attach_collector(self, channel: CollectorChannel) -> None:
        """The relay server of the running collector process; set by supervisor.relay_server.RelayServer."""
        with self._lock:
            self._collector = channel
            self._collector_attached.notify_all()

    def detach_collector(self, channel: CollectorChannel) -> None:
        with self._lock:
            if self._collector is channel:
                self._collector = None

    def collect_now(self, request_id: str, timeout: float) -> dict:
        """Waits (within `timeout`) for a collector process that is starting or restarting to attach."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._collector_attached.wait_for(lambda: self._collector is not None, timeout)
            channel = self._collector
        if channel is None:
            raise IpcUnavailable(f"no collector process running (waited {timeout:g}s for one)")
        return channel.collect_now(request_id, max(0.0, deadline - time.monotonic()))

    # -- lifecycle -----------------------------------------------------------------------------------
    def update_state(self, state: str) -> None:
        self._call(lambda c: c.update_state(state))

    def restart_component(self, component: str) -> str:
        return self._call(lambda c: c.restart_component(component))

    def component_details(self, component: str) -> dict:
        return self._call(lambda c: c.get_component_details(component))

    # -- subscriptions ---------------------------------------------------------------------------------
    def _subscribe(self, sub: Subscription) -> Subscription:
        with self._lock:
            self._subs.append(sub)
        try:
            self.connect()
            with self._lock:
                if sub.operation is None and self._client is not None:
                    try:
                        self._activate(sub)
                    except Exception as exc:
                        if not self._refused_for_now(sub, exc):
                            raise
        except Exception:
            self._forget(sub)
            raise
        return sub

    def _refused_for_now(self, sub: Subscription, exc: BaseException) -> bool:
        """A SubscribeToIoTCore the nucleus answered with ServiceError: nucleus lite does so while it has no IoT
        Core connection (iotcored refuses a new subscription then; those it has it renews after a reconnect).
        The subscription is kept and retried with backoff until the nucleus takes it, so a part started before
        the network does not fail. Called with the lock held."""
        # an unanswered subscribe (TimeoutError: the client gave up and ended the stream) is "not now" as well
        if sub.kind != "iot" or not isinstance(exc, (ServiceError, TimeoutError)):
            return False
        self._refusals.failed("subscribe", "IoT Core subscription %s refused by the nucleus (%s); retrying until it "
                              "takes it", sub.topic, error_text(exc))
        if sub not in self._refused:
            self._refused.append(sub)
        if self._refused_retrier is None or not self._refused_retrier.is_alive():
            self._refused_retrier = threading.Thread(target=self._retry_refused, name="ipc-subscribe-retry",
                                                     daemon=True)
            self._refused_retrier.start()
        return True

    def _retry_refused(self) -> None:
        delay = self.initial_backoff
        while not self._closing.wait(delay):
            with self._lock:
                for sub in list(self._refused):
                    if sub.closed or sub not in self._subs:
                        self._refused.remove(sub)
                        continue
                    if sub.operation is not None:  # a reconnect activated it meanwhile
                        self._refused.remove(sub)
                        continue
                    if self._client is None:
                        break  # the reconnect activates every subscription
                    try:
                        self._activate(sub)
                        self._refused.remove(sub)
                    except Exception as exc:
                        log.debug("IoT Core subscription %s still refused: %s", sub.topic, error_text(exc))
                if not self._refused:
                    self._refusals.recovered("subscribe", "IoT Core subscriptions taken by the nucleus again")
                    return
            delay = min(delay * 2, self.max_backoff)

    def _forget(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    def _activate(self, sub: Subscription) -> None:
        client = self._client
        assert client is not None  # called with the lock held, right after a connect
        made: list = []

        def on_closed():
            # only this stream's end: the close of a stream from before a reconnect can arrive after the new one
            if made and sub.operation is made[0]:
                sub.operation = None

        stream: Stream
        if sub.kind == "iot":
            stream = client.subscribe_to_iot_core(
                sub.topic, sub.qos, lambda topic, payload: self._dispatch(sub, topic, payload), on_closed)
        elif sub.kind == "local":
            stream = client.subscribe_to_topic(
                sub.topic, lambda topic, payload: self._dispatch(sub, topic, payload), on_closed)
        elif sub.kind == "config":
            stream = client.subscribe_to_configuration_update(
                sub.topic or None, lambda key_path: self._dispatch(sub, None, key_path), on_closed)
        else:  # pragma: no cover - programming error
            raise ValueError(sub.kind)
        made.append(stream)
        sub.operation = stream

    @staticmethod
    def _dispatch(sub: Subscription, topic: Optional[str], payload: Any) -> None:
        if sub.closed:
            return
        try:
            if sub.kind == "config":
                sub.handler(payload)
            else:
                sub.handler(topic, payload)
        except Exception:  # a handler bug must never kill the IPC callback thread
            log.exception("handler for %s subscription %r failed", sub.kind, sub.topic)


def _close_quietly(client: Any) -> None:
    try:
        client.close()
    except Exception:
        pass


if TYPE_CHECKING:  # checked by mypy (tests/unit/test_typecheck.py): Ipc is process A's port
    from ggdefender.ipc_port import SupervisorPort

    _port: SupervisorPort = Ipc()
