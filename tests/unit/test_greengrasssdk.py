"""The Greengrass v1 facade: v1 argument rules and errors, routed over a fake Ipc."""

import io
import json

import pytest

from fake_ipc import FakeIpc
from ggdefender import greengrasssdk


def test_publish_v1_style_to_iot_core():
    ipc = FakeIpc()
    c = greengrasssdk.client("iot-data", ipc=ipc)
    assert c.publish(topic="a/b", payload=json.dumps({"x": 1})) is None
    c.publish(topic="a/c", payload=b"\x00\x01", queueFullPolicy="AllOrException")
    c.publish(topic="a/d", payload=io.BytesIO(b"file"), queueFullPolicy="BestEffort")
    c.publish(topic="a/e")
    assert ipc.iot == [("a/b", b'{"x": 1}', 0), ("a/c", b"\x00\x01", 1), ("a/d", b"file", 0), ("a/e", b"", 0)]


def test_publish_local_destination():
    ipc = FakeIpc()
    greengrasssdk.client("iot-data", ipc=ipc, destination="local").publish(topic="ggdefender/custom-metrics",
                                                                            payload="{}")
    assert ipc.local == [("ggdefender/custom-metrics", b"{}")] and ipc.iot == []


def test_v1_argument_errors():
    c = greengrasssdk.client("iot-data", ipc=FakeIpc())
    with pytest.raises(ValueError, match='Parameter "topic" is a required parameter but was not provided.'):
        c.publish(payload=b"x")
    with pytest.raises(ValueError, match="Invalid value for queueFullPolicy: Sometimes"):
        c.publish(topic="t", queueFullPolicy="Sometimes")
    with pytest.raises(TypeError, match="payload must be"):
        c.publish(topic="t", payload={"not": "serialized"})
    # a nucleus refuses 128 KiB exactly, so the facade does too; one byte less goes through
    with pytest.raises(ValueError, match="IoT Core takes at most 131071"):
        c.publish(topic="t", payload=b"x" * greengrasssdk.MAX_PAYLOAD)
    c.publish(topic="t", payload=b"x" * (greengrasssdk.MAX_PAYLOAD - 1))
    with pytest.raises(Exception, match="Client type 'lambda' is not recognized"):
        greengrasssdk.client("lambda")


def test_failure_raises_only_with_all_or_exception(caplog):
    c = greengrasssdk.client("iot-data", ipc=FakeIpc(down=RuntimeError("IPC connection closed")))
    c.publish(topic="t", payload=b"x")  # BestEffort (default): logged, not raised, like a v1 event
    assert "dropped (BestEffort)" in caplog.text
    with pytest.raises(greengrasssdk.PublishError, match="connection closed"):
        c.publish(topic="t", payload=b"x", queueFullPolicy="AllOrException")


def shadow_service(state):
    def handle(topic, payload):
        req = json.loads(payload)
        base, op = topic.rsplit("/", 1)
        if op == "get":
            if state.get("doc") is None:
                return (f"{topic}/rejected", json.dumps({"code": 404, "message": "No shadow exists",
                                                         "clientToken": req["clientToken"]}).encode())
            return (f"{topic}/accepted", json.dumps({**state["doc"], "clientToken": req["clientToken"]}).encode())
        if op == "update":
            state["doc"] = {"state": req["state"]}
            return (f"{topic}/accepted", json.dumps({"state": req["state"], "clientToken": req["clientToken"]}).encode())
        if op == "delete":
            state["doc"] = None
            return (f"{topic}/accepted", json.dumps({"clientToken": req["clientToken"]}).encode())
    return handle


def test_shadow_calls_round_trip_over_mqtt_topics():
    state = {"doc": None}
    ipc = FakeIpc(iot_responder=shadow_service(state))
    c = greengrasssdk.client("iot-data", ipc=ipc)
    with pytest.raises(greengrasssdk.ShadowError, match='error code 404 with message "No shadow exists"'):
        c.get_thing_shadow(thingName="t1")
    out = c.update_thing_shadow(thingName="t1", payload=json.dumps({"state": {"reported": {"on": True}}}))
    assert json.loads(out["payload"])["state"] == {"reported": {"on": True}}
    assert json.loads(c.get_thing_shadow(thingName="t1")["payload"])["state"] == {"reported": {"on": True}}
    c.delete_thing_shadow(thingName="t1")
    assert state["doc"] is None
    assert ipc.subs == []  # reply subscriptions are closed after each call
    assert [t for t, _, _ in ipc.iot] == ["$aws/things/t1/shadow/get", "$aws/things/t1/shadow/update",
                                          "$aws/things/t1/shadow/get", "$aws/things/t1/shadow/delete"]


def test_named_shadow_topic_and_bad_names():
    ipc = FakeIpc(iot_responder=shadow_service({"doc": {"state": {}}}))
    c = greengrasssdk.client("iot-data", ipc=ipc)
    c.get_thing_shadow(thingName="t1", shadowName="config")
    assert ipc.iot[-1][0] == "$aws/things/t1/shadow/name/config/get"
    with pytest.raises(ValueError, match="thingName"):
        c.get_thing_shadow(thingName="a/#")
    with pytest.raises(ValueError, match='Parameter "thingName" is a required parameter'):
        c.get_thing_shadow()


def test_shadow_timeout():
    c = greengrasssdk.client("iot-data", ipc=FakeIpc(), shadow_timeout=0.05)
    with pytest.raises(greengrasssdk.ShadowError, match="no reply"):
        c.get_thing_shadow(thingName="t1")
