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
        class client:  # what close() reaches: client.client.close().result()
            @staticmethod
            def close():
                raise RuntimeError("not connected")

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
    from awsiot.greengrasscoreipc.model import ServiceError, UnauthorizedError

    from ggdefender.ipc import PublishRefused

    class Client:
        errors = [ServiceError(), UnauthorizedError(message="not authorized")]

        def publish_to_iot_core(self, **kwargs):
            raise self.errors.pop(0)

    made = []
    ipc = Ipc(retry_budget=0.01, client_factory=lambda: made.append(1) or Client())
    with pytest.raises(PublishRefused, match=r"\$aws/x refused by the nucleus: ServiceError \(the nucleus gave no "):
        ipc.publish_iot("$aws/x", b"{}")
    with pytest.raises(UnauthorizedError):  # the message's own refusal is not "not now"
        ipc.publish_iot("$aws/x", b"{}")
    assert len(made) == 1 and ipc.gone is None
