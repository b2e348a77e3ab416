"""ggdefender.ipc.Ipc's connection budget: bounded retries, a gone connection stays gone, close() is prompt."""

import threading
import time

import pytest

from ggdefender.ipc import Ipc, IpcUnavailable


class Refused(ConnectionRefusedError):
    pass


def failing_factory(calls):
    def factory():
        calls.append(time.monotonic())
        raise Refused("connection refused")
    return factory


def test_outage_longer_than_the_budget_gives_up_for_good_and_tells_listeners():
    calls, told = [], []
    ipc = Ipc(retry_budget=0.3, initial_backoff=0.05, max_backoff=0.1, client_factory=failing_factory(calls))
    ipc.on_gone(told.append)
    with pytest.raises(IpcUnavailable, match="retry budget 0.3s"):
        ipc.connect()
    assert len(calls) >= 2 and len(told) == 1 and "connection refused" in told[0]
    before = len(calls)
    with pytest.raises(IpcUnavailable, match="retry budget"):
        ipc.connect()  # gone stays gone: no new attempt
    assert len(calls) == before
    late = []
    ipc.on_gone(late.append)  # a listener added afterwards hears it at once
    assert late == told


def test_close_ends_a_backoff_wait_at_once():
    calls = []
    ipc = Ipc(retry_budget=600, initial_backoff=30, max_backoff=30, client_factory=failing_factory(calls))
    errors = []
    t = threading.Thread(target=lambda: errors.append(pytest.raises(IpcUnavailable, ipc.connect)))
    t.start()
    deadline = time.monotonic() + 10
    while not calls and time.monotonic() < deadline:
        time.sleep(0.01)
    ipc.close()
    t.join(5)  # far below the 30 s backoff it was in
    assert not t.is_alive() and "closed" in str(errors[0].value) and ipc.gone is None


def test_a_connection_back_within_the_budget_resets_the_outage():
    class Client:
        @staticmethod
        def close():
            raise RuntimeError("not connected")  # Ipc.close() never lets a client's close fail it

    results = [Refused("refused"), Refused("refused"), Client()]

    def factory():
        item = results.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    ipc = Ipc(retry_budget=60, initial_backoff=0.01, max_backoff=0.02, client_factory=factory)
    assert ipc.connect() is ipc and ipc.gone is None and ipc._outage_since is None
    ipc.close()


def test_a_refused_publish_is_publish_refused_and_never_an_outage():
    # nucleus lite answers PublishToIoTCore with a ServiceError (no message) while it has no IoT Core
    # connection: the caller gets a named PublishRefused, the connection stays, the retry budget is untouched
    from ggdefender.ipc import PublishRefused
    from ggdefender.ipc_client import ServiceError, UnauthorizedError

    class Client:
        errors = [ServiceError(), UnauthorizedError("not authorized")]

        def publish_to_iot_core(self, topic, qos, payload):
            raise self.errors.pop(0)

    made = []
    ipc = Ipc(retry_budget=0.01, client_factory=lambda: made.append(1) or Client())
    with pytest.raises(PublishRefused, match=r"\$aws/x refused by the nucleus: ServiceError \(the nucleus gave no "):
        ipc.publish_iot("$aws/x", b"{}")
    with pytest.raises(UnauthorizedError):  # the message's own refusal is not "not now"
        ipc.publish_iot("$aws/x", b"{}")
    assert len(made) == 1 and ipc.gone is None


def test_the_iot_core_message_limit_is_lites_only_on_nucleus_lite():
    # lite's ggipcd drops the connection over a 10,000-byte IPC message: on lite (the only nucleus with
    # aws.greengrass.NucleusLite's configuration) a larger payload is refused here, before it reaches the nucleus
    from ggdefender.ipc import IOT_CORE_MAX_PAYLOAD, LITE_MAX_IOT_PAYLOAD, PayloadTooLarge
    from ggdefender.ipc_client import ResourceNotFoundError

    class Client:
        def __init__(self, lite):
            self.lite, self.published, self.asked = lite, [], 0

        def get_configuration(self, component, key_path):
            self.asked += 1
            if component == "aws.greengrass.NucleusLite" and self.lite:
                return {}
            raise ResourceNotFoundError("not found")

        def publish_to_iot_core(self, topic, qos, payload):
            self.published.append(len(payload))

    lite, classic = Client(lite=True), Client(lite=False)
    on_lite, on_classic = Ipc(client_factory=lambda: lite), Ipc(client_factory=lambda: classic)
    assert on_lite.known_max_iot_payload() == IOT_CORE_MAX_PAYLOAD - 1  # not asked yet
    on_lite.publish_iot("t", b"x" * LITE_MAX_IOT_PAYLOAD)
    with pytest.raises(PayloadTooLarge, match=f"{LITE_MAX_IOT_PAYLOAD + 1} bytes, over the {LITE_MAX_IOT_PAYLOAD}"):
        on_lite.publish_iot("t", b"x" * (LITE_MAX_IOT_PAYLOAD + 1))
    assert lite.published == [LITE_MAX_IOT_PAYLOAD] and lite.asked == 1  # asked once
    assert on_lite.known_max_iot_payload() == LITE_MAX_IOT_PAYLOAD
    on_classic.publish_iot("t", b"x" * 20000)
    assert classic.published == [20000] and on_classic.max_iot_payload() == IOT_CORE_MAX_PAYLOAD - 1


def test_an_iot_core_subscription_refused_for_now_is_kept_and_retried(caplog):
    # nucleus lite refuses SubscribeToIoTCore (ServiceError) while it has no IoT Core connection: a part that
    # starts before the network must not fail; the subscription is taken once the nucleus can
    from ggdefender.ipc_client import ServiceError, UnauthorizedError

    class Client:
        refusals = 3
        made = []

        def subscribe_to_iot_core(self, topic, qos, on_message, on_closed):
            if topic == "denied":
                raise UnauthorizedError("not authorized")
            if self.refusals:
                self.refusals -= 1
                raise ServiceError()
            self.made.append(topic)
            return object()

    client = Client()
    caplog.set_level("INFO", logger="ggdefender.ipc")
    ipc = Ipc(initial_backoff=0.01, max_backoff=0.05, client_factory=lambda: client)
    try:
        sub = ipc.subscribe_iot("$aws/things/t/jobs/notify-next", lambda t, p: None)
        deadline = time.monotonic() + 30
        while sub.operation is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sub.operation is not None and client.made == ["$aws/things/t/jobs/notify-next"]
        with pytest.raises(UnauthorizedError):  # the grant's refusal is for good
            ipc.subscribe_iot("denied", lambda t, p: None)
    finally:
        ipc.close()
    said = [r.getMessage() for r in caplog.records if "refused by the nucleus" in r.getMessage()]
    assert len(said) == 1 and "ServiceError (the nucleus gave no reason)" in said[0]
    assert any("taken by the nucleus again" in r.getMessage() for r in caplog.records)


def test_a_late_close_or_disconnect_of_an_earlier_connection_leaves_the_new_one_alone():
    # a stream's close and a connection's loss are reported on other threads: one from before a reconnect can
    # arrive after the new connection and its subscriptions are in place
    class Client:
        def __init__(self):
            self.closers = []

        def subscribe_to_topic(self, topic, on_message, on_closed):
            self.closers.append(on_closed)
            return object()

        def close(self):
            pass

    clients = []
    ipc = Ipc(initial_backoff=0.01, client_factory=lambda: clients.append(Client()) or clients[-1])
    try:
        sub = ipc.subscribe_local("t", lambda topic, payload: None)
        first = sub.operation
        ipc._on_disconnect("dropped", clients[0])  # the current connection goes: reconnect, re-subscribe
        deadline = time.monotonic() + 10
        while (len(clients) < 2 or sub.operation is None) and time.monotonic() < deadline:
            time.sleep(0.01)
        second = sub.operation
        assert len(clients) == 2 and second is not None and second is not first
        clients[0].closers[0]()  # the old stream's close, late
        ipc._on_disconnect("dropped long ago", clients[0])  # the old connection's loss, late
        assert sub.operation is second and ipc._client is clients[1] and len(clients) == 2
        clients[1].closers[0]()  # the current stream's close does clear it
        assert sub.operation is None
    finally:
        ipc.close()
