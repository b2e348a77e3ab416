"""`ggdefender.ipc.Ipc` over the real protocol with each IPC client (awsiotsdk, and the pure-Python one for
platforms without awscrt) against `ggdefender local`'s IPC server: the same checks (tests/integration/ipc_check.py)
and the same answers, plus reconnect with subscriptions re-made, and giving up when the core is gone."""

import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # ipc_check, shared with the lite tests

import ipc_check  # noqa: E402
from ipc_fixtures import RunningCore  # noqa: E402

from ggdefender.ipc import IOT_CORE_MAX_PAYLOAD, Ipc, IpcUnavailable  # noqa: E402

pytestmark = pytest.mark.integration

THING = "ipc-thing"
COMPONENT = "test.IpcCheck"
CLIENTS = ["awsiotsdk", "pure"]

# what `ggdefender local` answers (docs/local-core.md lists where lite differs)
EXPECTED = {
    "get-own": "ok {'Value': '5'}",
    "get-missing": "ok",  # ResourceNotFoundError: get_config answers None
    "max-iot-payload": IOT_CORE_MAX_PAYLOAD - 1,
    "update-config": "ok",
    "config-event": [("Check", "Changed")],

    "publish-local-json": "ok",
    "publish-local-binary": "ok",
    "local-received": [[f"ggdefender/ipc-check/{THING}/local", {"n": 1, "s": "é"}],
                       [f"ggdefender/ipc-check/{THING}/local", "AP9iaW4="]],
    "publish-local-after-close": "ok",
    "local-after-close": 2,
    "publish-iot": "ok",
    "iot-received": [[f"ggdefender/ipc-check/{THING}/iot", True, 1024]],
    "publish-iot-over-limit": "PayloadTooLarge",
    "update-state": "ok",
    "still-connected": "ok {'Value': '5'}",
}


def _env(monkeypatch, env: dict, client: str) -> None:
    for key in ("SVCUID", "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT", "AWS_IOT_THING_NAME"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.setenv("GGDEFENDER_IPC_CLIENT", client)


@pytest.fixture(scope="module")
def outcomes():
    """The checks, once per client, against one core (each client gets a fresh component configuration)."""
    results = {}
    with RunningCore(THING) as rc:
        for client in CLIENTS:
            name = f"{COMPONENT}.{client}"
            env = rc.register(name, {**ipc_check.CONFIG, "accessControl": ipc_check.policy(THING)})
            with pytest.MonkeyPatch.context() as mp:
                _env(mp, env, client)
                ipc = Ipc(connect_attempts=3)
                try:
                    results[client] = ipc_check.run(ipc, name, THING)
                finally:
                    ipc.close()
        assert rc.wait_disconnected()
        results["subscriptions-left"] = rc.on_loop(rc.core.subscription_counts)
    return results


@pytest.mark.parametrize("client", CLIENTS)
def test_every_operation_the_component_uses(outcomes, client):
    got = outcomes[client]
    assert got["client"] == client
    assert {k: got[k] for k in EXPECTED} == EXPECTED
    assert got["get-changed"] == f"ok {{'Changed': '{client}'}}"
    for name in ("publish-local-denied", "subscribe-local-denied"):
        assert got[name].startswith("UnauthorizedError: Principal test.IpcCheck"), got[name]
    for name in ("publish-iot-denied", "subscribe-iot-denied"):
        assert got[name].startswith("UnauthorizedError"), got[name]
    assert got["details-missing"].startswith(("ResourceNotFoundError", "ComponentNotFoundError")), got
    assert got["restart-missing"].startswith("ComponentNotFoundError"), got
    assert outcomes["subscriptions-left"] == {"local": 0, "iot": 0, "config": 0}  # close() and EOF ended them


def test_both_clients_give_the_same_answers(outcomes):
    # each client ran as its own component (test.IpcCheck.<client>) and wrote its name into the configuration
    assert ipc_check.same(outcomes["awsiotsdk"], outcomes["pure"])


def _wait(predicate, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.mark.parametrize("client", CLIENTS)
def test_a_dropped_connection_is_reconnected_and_subscriptions_come_back(monkeypatch, client):
    with RunningCore(THING) as rc:
        env = rc.register(COMPONENT, {**ipc_check.CONFIG, "accessControl": ipc_check.policy(THING)})
        _env(monkeypatch, env, client)
        topic = ipc_check.topics(THING)["local"]
        got, lost = [], threading.Event()
        ipc = Ipc(initial_backoff=0.05, max_backoff=0.2)
        try:
            ipc.subscribe_local(topic, lambda t, p: got.append(p))
            ipc.subscribe_iot(ipc_check.topics(THING)["iot"], lambda t, p: got.append(p))
            _wait(lambda: rc.on_loop(rc.core.subscription_counts) == {"local": 1, "iot": 1, "config": 0},
                  "both subscriptions")
            first = rc.on_loop(lambda: list(rc.server.connections))
            rc.on_loop(lambda: [c.transport.abort() for c in first])  # the nucleus drops the connection
            # Ipc reconnects by itself (nothing to send) and makes both subscriptions again
            _wait(lambda: rc.on_loop(lambda: bool(rc.server.connections) and not set(rc.server.connections) &
                                     set(first)) and rc.on_loop(rc.core.subscription_counts)["local"] == 1
                  and rc.on_loop(rc.core.subscription_counts)["iot"] == 1, "a new connection with both subscriptions")
            rc.on_loop(rc.core.publish_iot, ipc_check.topics(THING)["iot"], b"from the cloud")
            ipc.publish_local(topic, {"after": "reconnect"})
            _wait(lambda: len(got) == 2, "both deliveries after the reconnect")
            assert sorted(map(str, got)) == sorted(map(str, [b"from the cloud", {"after": "reconnect"}]))
            assert ipc.gone is None
        finally:
            ipc.close()
            lost.set()


@pytest.mark.parametrize("client", CLIENTS)
def test_a_core_that_stays_away_is_given_up_within_the_budget(monkeypatch, client):
    with RunningCore(THING) as rc:
        env = rc.register(COMPONENT, {**ipc_check.CONFIG, "accessControl": ipc_check.policy(THING)})
        _env(monkeypatch, env, client)
        told = []
        ipc = Ipc(retry_budget=1.0, initial_backoff=0.05, max_backoff=0.2)
        ipc.on_gone(told.append)
        try:
            ipc.subscribe_local(ipc_check.topics(THING)["local"], lambda t, p: None)
            rc.call(rc.server.stop())  # the core goes away for good (socket removed, connections closed)
            _wait(lambda: told, "on_gone", timeout=30)
            assert "retry budget 1s" in told[0]
            with pytest.raises(IpcUnavailable):
                ipc.publish_local("x", {})
        finally:
            ipc.close()
            rc.call(rc.server.start())  # RunningCore's exit stops it
