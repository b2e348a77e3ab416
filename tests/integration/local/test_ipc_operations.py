"""Every IPC operation with the unmodified awsiotsdk client in a child process against the local server."""

import json

import pytest

from ipc_fixtures import RunningCore, run_client, start_client

pytestmark = pytest.mark.integration

ACCESS = {
    "aws.greengrass.ipc.pubsub": {"p": {"operations": ["*"], "resources": ["local/*"]}},
    "aws.greengrass.ipc.mqttproxy": {"m": {"operations": ["*"], "resources": ["devices/{thing}/#"]}},
    "aws.greengrass.Cli": {"c": {"operations": ["aws.greengrass#RestartComponent",
                                                "aws.greengrass#GetComponentDetails",
                                                "aws.greengrass#ListComponents"], "resources": ["*"]}},
}

EVERY_OPERATION = r'''
import concurrent.futures, datetime, json, time
from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
from awsiot.greengrasscoreipc import model as m
c = GreengrassCoreIPCClientV2(executor=concurrent.futures.ThreadPoolExecutor(max_workers=1))
out = {}
def err(fn):
    try:
        fn()
    except Exception as e:
        return [type(e).__name__, getattr(e, "message", str(e))]
    return None

local, iot, cfg = [], [], []
def on_local(e):
    if e.json_message:
        local.append(["json", e.json_message.message, e.json_message.context.topic])
    else:
        local.append(["binary", e.binary_message.message.hex(), e.binary_message.context.topic])
resp, local_op = c.subscribe_to_topic(topic="local/data", on_stream_event=on_local)
out["subscribe_topic_response"] = resp.topic_name
c.publish_to_topic(topic="local/data", publish_message=m.PublishMessage(json_message=m.JsonMessage(message={"n": 1})))
c.publish_to_topic(topic="local/data", publish_message=m.PublishMessage(
    binary_message=m.BinaryMessage(message=bytes(range(256)))))

c.subscribe_to_iot_core(topic_name="devices/THING/+/in", qos=m.QOS.AT_MOST_ONCE,
                        on_stream_event=lambda e: iot.append([e.message.topic_name, e.message.payload.hex()]))
c.publish_to_iot_core(topic_name="devices/THING/a/in", qos=m.QOS.AT_LEAST_ONCE, payload=b"\x00\x01\xfe")

out["config_all"] = c.get_configuration().value
out["config_leaf"] = c.get_configuration(key_path=["Collector", "SampleIntervalSeconds"]).value
out["config_subtree"] = c.get_configuration(key_path=["Collector"]).value
out["config_other"] = c.get_configuration(component_name="other.Component", key_path=["x"]).value
c.subscribe_to_configuration_update(key_path=["Collector"],
                                    on_stream_event=lambda e: cfg.append(e.configuration_update_event.key_path))
c.update_configuration(key_path=["Collector"], value_to_merge={"SampleIntervalSeconds": 60},
                       timestamp=datetime.datetime.now())
out["config_after"] = c.get_configuration(key_path=["Collector"]).value
out["stale_update"] = err(lambda: c.update_configuration(key_path=["Collector"], value_to_merge={"X": 1},
                          timestamp=datetime.datetime(2001, 1, 1)))
out["acl_update"] = err(lambda: c.update_configuration(key_path=[], value_to_merge={"accessControl": {}},
                        timestamp=datetime.datetime.now()))
out["missing_key"] = err(lambda: c.get_configuration(key_path=["nope"]))
out["missing_component"] = err(lambda: c.get_configuration(component_name="no.Such", key_path=[]))
out["missing_sub_key"] = err(lambda: c.subscribe_to_configuration_update(key_path=["nope"]))
out["leaf_update"] = err(lambda: c.update_configuration(key_path=["Collector", "Format"], value_to_merge={"Format": "cbor"},
                         timestamp=datetime.datetime.now()))

c.update_state(state=m.ReportedLifecycleState.ERRORED)
d = c.get_component_details(component_name="ggdefender.Defender").component_details
out["details"] = [d.component_name, d.version, d.state, sorted(d.configuration)]
out["list"] = [x.component_name for x in c.list_components().components]
r = c.restart_component(component_name="other.Component")
out["restart"] = [r.restart_status, r.message]
out["restart_unknown"] = err(lambda: c.restart_component(component_name="no.Such"))
out["details_unknown"] = err(lambda: c.get_component_details(component_name="no.Such"))
out["unsupported"] = err(lambda: c.pause_component(component_name="other.Component"))
out["bad_state_topic"] = err(lambda: c.publish_to_topic(topic="local/+", publish_message=m.PublishMessage(
    json_message=m.JsonMessage(message={}))))
out["bad_filter"] = err(lambda: c.subscribe_to_iot_core(topic_name="devices/THING/#/x", qos=m.QOS.AT_MOST_ONCE))
deadline = time.time() + 10
while time.time() < deadline and (len(local) < 2 or len(iot) < 1 or len(cfg) < 1):
    time.sleep(0.02)
time.sleep(0.2)
out["local"], out["iot"], out["cfg"] = local, iot, cfg
print(json.dumps(out))
'''


def access(thing):
    return json.loads(json.dumps(ACCESS).replace("{thing}", thing))


def test_every_operation():
    with RunningCore("THING") as rc:
        restarts, states = [], []
        rc.core.on_restart_request = lambda name: restarts.append(name) or True
        rc.core.on_state_change = lambda name, state: states.append((name, state))
        rc.register("other.Component", {"x": 7})
        env = rc.register("ggdefender.Defender", {"Collector": {"SampleIntervalSeconds": 300, "Format": "json"},
                                                  "accessControl": access("THING")}, version="1.2.3")
        cloud = []
        rc.core.subscribe_iot("devices/+/+/in", lambda t, p, s: cloud.append((t, p, s)))
        out = run_client(EVERY_OPERATION, env)
        assert rc.wait_disconnected()
        counts = rc.on_loop(rc.core.subscription_counts)

    assert out["subscribe_topic_response"] is None  # the nucleus sends an empty response
    assert out["local"] == [["json", {"n": 1}, "local/data"], ["binary", bytes(range(256)).hex(), "local/data"]]
    assert out["iot"] == [["devices/THING/a/in", "0001fe"]]
    assert cloud == [("devices/THING/a/in", b"\x00\x01\xfe", "ggdefender.Defender")]
    assert out["config_all"]["Collector"] == {"SampleIntervalSeconds": 300, "Format": "json"}
    assert "accessControl" in out["config_all"]
    assert out["config_leaf"] == {"SampleIntervalSeconds": 300}
    assert out["config_subtree"] == {"SampleIntervalSeconds": 300, "Format": "json"}
    assert out["config_other"] == {"x": 7}
    assert out["config_after"] == {"SampleIntervalSeconds": 60, "Format": "json"}
    assert out["cfg"] == [["Collector", "SampleIntervalSeconds"]]
    assert out["stale_update"][0] == "FailedUpdateConditionCheckError"
    assert out["acl_update"] == ["InvalidArgumentsError",
                                 "Config update is not allowed for following fields [accessControl]"]
    assert out["missing_key"] == ["ResourceNotFoundError", "Key not found"]
    assert out["missing_component"][0] == "ResourceNotFoundError"
    assert out["missing_sub_key"] == ["ResourceNotFoundError", "Key not found"]
    assert out["leaf_update"][0] == "InvalidArgumentsError"
    assert states == [("ggdefender.Defender", "ERRORED")]
    assert out["details"] == ["ggdefender.Defender", "1.2.3", "ERRORED", ["Collector", "accessControl"]]
    assert out["list"] == ["ggdefender.Defender", "other.Component"]
    assert out["restart"][0] == "SUCCEEDED" and restarts == ["other.Component"]
    assert out["restart_unknown"][0] == "ComponentNotFoundError"
    assert out["details_unknown"][0] == "ResourceNotFoundError"
    assert out["unsupported"] == ["ServiceError", "Operation aws.greengrass#PauseComponent is not supported by Greengrass"]
    assert out["bad_state_topic"][0] == "InvalidArgumentsError"
    assert out["bad_filter"][0] == "InvalidArgumentsError"
    assert counts == {"local": 0, "iot": 1, "config": 0}  # only the cloud-side listener is left after EOF


SUBSCRIBER = r'''
import concurrent.futures, json, sys, threading
from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
from awsiot.greengrasscoreipc import model as m
topic, expected = sys.argv[1], int(sys.argv[2])
c = GreengrassCoreIPCClientV2(executor=concurrent.futures.ThreadPoolExecutor(max_workers=1))
got, done, closed = [], threading.Event(), threading.Event()
def on_event(e):
    if e.json_message:
        got.append(["json", e.json_message.message, e.json_message.context.topic])
    else:
        got.append(["binary", e.binary_message.message.hex(), e.binary_message.context.topic])
    if len(got) >= expected:
        done.set()
kwargs = {"receive_mode": sys.argv[3]} if len(sys.argv) > 3 else {}
_, op = c.subscribe_to_topic(topic=topic, on_stream_event=on_event, on_stream_closed=closed.set, **kwargs)
if len(sys.argv) > 4:  # also publish one message of our own
    c.publish_to_topic(topic=sys.argv[4], publish_message=m.PublishMessage(json_message=m.JsonMessage(message={"self": 1})))
print("ready", flush=True)
ok = done.wait(30)
op.close()
closed.wait(5)
print(json.dumps({"ok": ok, "got": got, "closed": closed.is_set()}), flush=True)
'''

PUBLISHER = r'''
import json, sys
from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
from awsiot.greengrasscoreipc import model as m
c = GreengrassCoreIPCClientV2()
n = int(sys.argv[1])
for i in range(n):
    c.publish_to_topic(topic="local/chat", publish_message=m.PublishMessage(json_message=m.JsonMessage(message={"i": i})))
c.publish_to_topic(topic="local/chat", publish_message=m.PublishMessage(binary_message=m.BinaryMessage(message=b"\x00bin\xff")))
print(json.dumps({"sent": n + 1}))
'''


def read_ready(proc):
    line = proc.stdout.readline()
    assert line.strip() == "ready", line + proc.stderr.read()


def finish(proc):
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_two_components_exchange_json_and_binary_in_order():
    pubsub = {"aws.greengrass.ipc.pubsub": {"p": {"operations": ["*"], "resources": ["local/*"]}}}
    with RunningCore() as rc:
        env_a = rc.register("com.example.A", {"accessControl": pubsub})
        env_b = rc.register("com.example.B", {"accessControl": pubsub})
        # B: exact topic (gets its own messages by default); B2: wildcard (others only by default)
        sub_exact = start_client(SUBSCRIBER, env_b, "local/chat", "202", "RECEIVE_ALL_MESSAGES", "local/chat")
        sub_wild = start_client(SUBSCRIBER, env_b, "local/+", "201")
        read_ready(sub_exact)
        read_ready(sub_wild)
        assert run_client(PUBLISHER, env_a, "200") == {"sent": 201}
        exact, wild = finish(sub_exact), finish(sub_wild)
        assert rc.wait_disconnected()
        counts = rc.on_loop(rc.core.subscription_counts)
    expected = [["json", {"i": i}, "local/chat"] for i in range(200)] + [["binary", b"\x00bin\xff".hex(), "local/chat"]]
    assert exact["ok"] and exact["closed"]
    assert exact["got"][0] == ["json", {"self": 1}, "local/chat"] and exact["got"][1:] == expected
    assert wild["ok"] and wild["got"] == expected  # its own {"self": 1} was not delivered to the wildcard
    assert counts["local"] == 0  # op.close() and EOF dropped both subscriptions


IOT_SUBSCRIBER = r'''
import concurrent.futures, json, sys, threading
from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
from awsiot.greengrasscoreipc import model as m
c = GreengrassCoreIPCClientV2(executor=concurrent.futures.ThreadPoolExecutor(max_workers=1))
got, cfg, done, closed = [], [], threading.Event(), threading.Event()
def on_iot(e):
    got.append([e.message.topic_name, e.message.payload.decode()])
    if len(got) == 3:
        done.set()
c.subscribe_to_iot_core(topic_name="$aws/things/T1/jobs/#", qos=m.QOS.AT_LEAST_ONCE, on_stream_event=on_iot,
                        on_stream_closed=closed.set)
c.subscribe_to_configuration_update(on_stream_event=lambda e: cfg.append(e.configuration_update_event.key_path))
print("ready", flush=True)
c.publish_to_iot_core(topic_name="$aws/things/T1/jobs/start-next", qos=m.QOS.AT_LEAST_ONCE, payload=b'{"x":1}')
ok = done.wait(30)
print("received", flush=True)
closed.wait(10)
print(json.dumps({"ok": ok, "got": got, "cfg": cfg, "server_closed": closed.is_set()}), flush=True)
'''


def test_iot_core_round_trip_config_push_and_server_side_close():
    mqtt = {"aws.greengrass.ipc.mqttproxy": {"j": {"operations": ["*"], "resources": ["$aws/things/T1/jobs/#"]}}}
    with RunningCore("T1") as rc:
        env = rc.register("com.example.Jobs", {"Remediation": {"Enabled": True}, "accessControl": mqtt})
        # the cloud answers start-next like the IoT Jobs service would
        rc.core.subscribe_iot("$aws/things/T1/jobs/start-next",
                              lambda t, p, s: rc.core.publish_iot(t + "/accepted", b'{"execution":null}'))
        proc = start_client(IOT_SUBSCRIBER, env)
        read_ready(proc)
        rc.core.publish_iot("$aws/things/T1/jobs/notify-next", b'{"n":1}')  # from the test thread
        rc.core.publish_iot("$aws/things/T2/jobs/notify-next", b'{"n":2}')  # another thing: not matched
        rc.core.merge_config("com.example.Jobs", ["Remediation"], {"Enabled": False})
        assert proc.stdout.readline().strip() == "received"
        # close the IoT stream (stream id 1) from the server side, like the nucleus's closeStream()
        (conn,) = rc.on_loop(lambda: list(rc.server.connections))
        rc.on_loop(conn.close_stream, 1)
        out = finish(proc)
        assert rc.wait_disconnected()
        counts = rc.on_loop(rc.core.subscription_counts)
    assert out["ok"], out
    assert sorted(map(tuple, out["got"])) == sorted([("$aws/things/T1/jobs/notify-next", '{"n":1}'),
                                                     ("$aws/things/T1/jobs/start-next", '{"x":1}'),
                                                     ("$aws/things/T1/jobs/start-next/accepted", '{"execution":null}')])
    assert out["cfg"] == [["Remediation", "Enabled"]]
    assert out["server_closed"]
    assert counts == {"local": 0, "iot": 1, "config": 0}


REJECTED = r'''
import json
from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
try:
    GreengrassCoreIPCClientV2()
    print(json.dumps({"error": None}))
except Exception as e:
    print(json.dumps({"error": type(e).__name__}))
'''


def test_unknown_token_is_access_denied():
    with RunningCore() as rc:
        rc.register("A", {})
        env = rc.env("ZZZZZZZZZZZZZZZZ")
        assert run_client(REJECTED, env) == {"error": "AccessDeniedError"}
