"""`ggdefender.ipc.Ipc` with each IPC client (awsiotsdk, pure) against the real nucleus lite: the same checks as
against `ggdefender local` (tests/integration/ipc_check.py), the answers lite gives, and both clients agreeing;
then the whole component on lite with GGDEFENDER_IPC_CLIENT=pure, its reports accepted."""

import json
import time

import pytest

import ipc_check
from lite_session import DEFENDER, IPC_CHECK, report_of

from ggdefender.ipc import LITE_MAX_IOT_PAYLOAD, Ipc

pytestmark = pytest.mark.integration

CLIENTS = ["awsiotsdk", "pure"]


@pytest.fixture(scope="module")
def outcomes(lite):
    results = {}
    env = {"SVCUID": lite.core.svcuid(IPC_CHECK),
           "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT": str(lite.core.socket),
           "AWS_IOT_THING_NAME": lite.thing}
    for client in CLIENTS:
        with pytest.MonkeyPatch.context() as mp:
            for key, value in dict(env, GGDEFENDER_IPC_CLIENT=client).items():
                mp.setenv(key, value)
            ipc = Ipc(connect_attempts=3)
            try:
                results[client] = ipc_check.run(ipc, IPC_CHECK, lite.thing)
            finally:
                ipc.close()
    return results


@pytest.mark.parametrize("client", CLIENTS)
def test_every_operation_the_component_uses(outcomes, lite, client):
    got = outcomes[client]
    t = ipc_check.topics(lite.thing)
    assert got["client"] == client
    assert got["get-own"] == "ok {'Value': '5'}" and got["get-missing"] == "ok"
    assert got["max-iot-payload"] == LITE_MAX_IOT_PAYLOAD  # lite's IPC message limit, detected
    assert got["update-config"] == "ok" and got["config-event"] == [("Check", "Changed")]
    assert got["get-changed"] == f"ok {{'Changed': '{client}'}}"
    assert got["local-received"] == [[t["local"], {"n": 1, "s": "é"}], [t["local"], "AP9iaW4="]]
    assert got["local-after-close"] == 2
    assert got["publish-iot"] == "ok" and got["iot-received"] == [[t["iot"], True, 1024]]  # through the broker
    assert got["publish-iot-over-limit"] == "PayloadTooLarge"
    for name in ("publish-local-denied", "subscribe-local-denied", "publish-iot-denied", "subscribe-iot-denied"):
        assert got[name].startswith("UnauthorizedError"), (name, got[name])
    # this harness runs lite without gghealthd (systemd): UpdateState and GetComponentDetails fail with a
    # ServiceError; lite answers a restart of a component it does not have with restartStatus FAILED
    for name in ("update-state", "details-missing"):
        assert got[name].startswith("ServiceError"), (name, got[name])
    assert got["restart-missing"] == "ok 'FAILED'"
    assert got["still-connected"] == "ok {'Value': '5'}"


def test_both_clients_give_the_same_answers(outcomes):
    assert ipc_check.same(outcomes["awsiotsdk"], outcomes["pure"])


def test_the_component_runs_on_the_pure_client_and_its_reports_are_accepted(lite):
    """The whole component (process A's IPC, B through A's relay) with GGDEFENDER_IPC_CLIENT=pure; then back."""
    topic = f"$aws/things/{lite.thing}/defender/metrics/json"
    health = f"ggdefender/things/{lite.thing}/health"
    lite.core.stop_component(DEFENDER)
    lite.core.env["GGDEFENDER_IPC_CLIENT"] = "pure"
    try:
        since = time.time()
        lite.core.launch(DEFENDER, "run")
        at, _, payload = lite.observer.wait_for(lambda at, t, p: at >= since and t == topic, 90,
                                                "a report from the component on the pure IPC client")
        rid = report_of(topic, payload)["header"]["report_id"]
        lite.observer.wait_for(lambda at, t, p: t == topic + "/accepted" and json.loads(p).get("reportId") == rid,
                               30, f"Device Defender accepting report {rid}")
        _, _, doc = lite.observer.wait_for(
            lambda at, t, p: at >= since and t == health and (json.loads(p).get("ipcClient") or {}).get("name"),
            30, "the health document naming the IPC client")
        assert json.loads(doc)["ipcClient"]["name"] == "pure"
        assert "IPC client: pure" in lite.component_log(DEFENDER)
        # the component heard the answer too (its IoT Core subscription, over the pure client and the relay)
        deadline = time.monotonic() + 30
        while f"report {rid} accepted" not in lite.component_log(DEFENDER):
            assert time.monotonic() < deadline, lite.component_log(DEFENDER)[-3000:]
            time.sleep(0.2)
    finally:
        lite.core.stop_component(DEFENDER)
        del lite.core.env["GGDEFENDER_IPC_CLIENT"]
        lite.core.launch(DEFENDER, "run")  # the other tests' component, as the session started it
