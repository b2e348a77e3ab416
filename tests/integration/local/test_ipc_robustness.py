"""Hostile and garbage clients cost only their own connection; fuzzed frames never crash or hang the server."""

import importlib.util
import json
import os
import socket
import struct
import zlib

import pytest

from ggdefender.eventstream import Decoder, Frame, Header, encode
from ipc_fixtures import RunningCore, run_client, start_client

pytestmark = pytest.mark.integration

BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "..", "bench", "ipc_fuzz.py")


def load_fuzzer():
    spec = importlib.util.spec_from_file_location("ipc_fuzz", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


WELL_BEHAVED = r'''
import json
from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
from awsiot.greengrasscoreipc import model as m
c = GreengrassCoreIPCClientV2()
c.publish_to_topic(topic="fuzz/ok", publish_message=m.PublishMessage(json_message=m.JsonMessage(message={"ok": 1})))
print(json.dumps({"value": c.get_configuration(key_path=["Stable"]).value}))
'''


def test_fuzzed_frames_no_crash_no_hang():
    fuzz = load_fuzzer()
    with RunningCore(max_frame_bytes=1024 * 1024) as rc:
        env = rc.register("fuzz.Component", {"A": 1, "Stable": "yes", "accessControl": fuzz.FUZZ_ACCESS})
        with fuzz.ServerErrors() as errors:  # a server exception would otherwise pass for a close for cause
            stats = fuzz.run_fuzz(rc.socket_path, env["SVCUID"], 20_000, seed=7)
        assert errors.records == []
        assert stats["frames"] >= 20_000
        assert stats["closed_after_hostile"] > 50 and stats["pongs"] > stats["connections"]
        assert rc.wait_disconnected()
        assert rc.on_loop(rc.core.subscription_counts) == {"local": 0, "iot": 0, "config": 0}
        # the server still serves a real client ("Stable" is a key the fuzzer never writes)
        out = run_client(WELL_BEHAVED, env)
        assert out["value"] == {"Stable": "yes"}


def raw(rc):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(20)
    s.connect(rc.socket_path)
    return s


def read_until_closed(s):
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return Decoder().feed(data)


def connect_frame(token):
    return encode(Frame([Header.string(":version", "0.1.0"), Header.int32(":message-type", 4),
                         Header.int32(":message-flags", 0), Header.int32(":stream-id", 0)],
                        json.dumps({"authToken": token}).encode()))


SUBSCRIBER = r'''
import concurrent.futures, json, sys, threading
from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
c = GreengrassCoreIPCClientV2(executor=concurrent.futures.ThreadPoolExecutor(max_workers=1))
got, done = [], threading.Event()
def on_event(e):
    got.append(e.json_message.message["i"])
    if len(got) == 50:
        done.set()
c.subscribe_to_topic(topic="t/data", on_stream_event=on_event)
print("ready", flush=True)
sys.stdin.readline()
print(json.dumps({"ok": done.wait(30), "got": got}), flush=True)
'''


def test_hostile_clients_do_not_affect_a_well_behaved_one():
    pubsub = {"aws.greengrass.ipc.pubsub": {"p": {"operations": ["*"], "resources": ["t/*"]}}}
    with RunningCore() as rc:
        good_env = rc.register("com.example.Good", {"accessControl": pubsub})
        token = rc.register("com.example.Evil", {"accessControl": pubsub})["SVCUID"]
        proc = start_client(SUBSCRIBER, good_env)
        assert proc.stdout.readline().strip() == "ready"

        # 1. garbage before CONNECT: PROTOCOL_ERROR, then closed
        s = raw(rc)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"\x00" * 64)
        frames = read_until_closed(s)
        assert frames and frames[-1].value(":message-type") == 6

        # 2. a prelude announcing 4 GiB: refused at once, no allocation
        s = raw(rc)
        prelude = struct.pack(">II", 2**32 - 1, 0)
        s.sendall(connect_frame(token) + prelude + struct.pack(">I", zlib.crc32(prelude)))
        frames = read_until_closed(s)
        assert [f.value(":message-type") for f in frames] == [5, 6]
        assert "exceeds the limit" in json.loads(frames[-1].payload)["message"]

        # 3. half a frame, then hang up; and a connection that never says anything (left open)
        s = raw(rc)
        s.sendall(connect_frame(token)[:50])
        s.close()
        idle = raw(rc)

        # 4. a client that floods requests without reading replies, then vanishes
        flood = raw(rc)
        flood.sendall(connect_frame(token))
        req = b"".join(encode(Frame([Header.string(":content-type", "application/json"),
                                     Header.string("service-model-type", "aws.greengrass#GetConfigurationRequest"),
                                     Header.string("operation", "aws.greengrass#GetConfiguration"),
                                     Header.int32(":message-type", 0), Header.int32(":message-flags", 0),
                                     Header.int32(":stream-id", i)], b"{}")) for i in range(1, 2001))
        flood.sendall(req)
        flood.close()

        # 5. a rejected token: CONNECT_ACK without the accept flag, then the server closes
        s = raw(rc)
        s.sendall(connect_frame("NOTATOKEN0000000"))
        frames = read_until_closed(s)
        assert [(f.value(":message-type"), f.value(":message-flags")) for f in frames] == [(5, 0)]

        # the well-behaved subscriber still gets every message, in order
        publisher = r'''
import json
from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
from awsiot.greengrasscoreipc import model as m
c = GreengrassCoreIPCClientV2()
for i in range(50):
    c.publish_to_topic(topic="t/data", publish_message=m.PublishMessage(json_message=m.JsonMessage(message={"i": i})))
print(json.dumps({"done": True}))
'''
        assert run_client(publisher, rc.env(token)) == {"done": True}
        out, err = proc.communicate("go\n", timeout=60)
        result = json.loads(out.strip().splitlines()[-1])
        assert result == {"ok": True, "got": list(range(50))}, err
        idle.close()
        assert rc.wait_disconnected()


def test_silent_sockets_time_out_and_connections_are_bounded():
    with RunningCore(connect_timeout=0.5, max_connections=3) as rc:
        env = rc.register("com.example.Good", {"x": 1})
        silent = raw(rc)
        assert silent.recv(1) == b""  # closed by the server: no CONNECT within the timeout
        held = [raw(rc) for _ in range(3)]
        assert rc.wait_until(lambda: len(rc.server.connections) == 3)
        extra = raw(rc)
        try:
            assert extra.recv(1) == b""  # over the limit: refused at once
        except ConnectionResetError:
            pass
        for s in held:
            s.close()
        assert rc.wait_disconnected()
        out = run_client(WELL_BEHAVED.replace('["Stable"]', '["x"]').replace(
            'c.publish_to_topic(topic="fuzz/ok", publish_message=m.PublishMessage(json_message=m.JsonMessage(message={"ok": 1})))\n', ''), env)
        assert out == {"value": {"x": 1}}
