"""The IPC relay (ggdefender.ipc_relay): a RelayServer over a fake Ipc in A, a RelayClient in B, a real socketpair."""

import json
import os
import socket
import subprocess
import sys
import threading

import pytest

from ggdefender import ipc_relay as R
from ggdefender.ipc import IpcUnavailable

THING = "thingA"
METRICS = f"$aws/things/{THING}/defender/metrics"


class FakeSub:
    def __init__(self, owner, kind, topic, handler):
        self.owner, self.kind, self.topic, self.handler = owner, kind, topic, handler
        self.closed = False

    def close(self):
        self.closed = True
        self.owner.subs.remove(self)


class FakeIpc:
    """Records what A's IPC was asked to do; tests deliver events through `deliver`."""

    thing_name = THING

    def __init__(self, config=None):
        self.calls = []
        self.subs = []
        self.config = config if config is not None else {"Collector": {"Enabled": True}}
        self.fail_next = None

    def _maybe_fail(self):
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc

    def publish_iot(self, topic, payload, qos=1):
        self._maybe_fail()
        self.calls.append(("publish_iot", topic, payload, qos))

    def publish_local(self, topic, message):
        self._maybe_fail()
        self.calls.append(("publish_local", topic, message))

    def get_config(self, key_path=None, component=None):
        self._maybe_fail()
        self.calls.append(("get_config", key_path, component))
        node = self.config
        for k in key_path or []:
            node = node.get(k) if isinstance(node, dict) else None
        return node

    def _sub(self, kind, topic, handler):
        self._maybe_fail()
        sub = FakeSub(self, kind, topic, handler)
        self.subs.append(sub)
        return sub

    def subscribe_iot(self, topic, handler, qos=1):
        return self._sub("iot", topic, handler)

    def subscribe_local(self, topic, handler):
        return self._sub("local", topic, handler)

    def subscribe_config(self, handler, component=None):
        return self._sub("config", component or "", handler)

    def deliver(self, kind, topic, *args):
        for sub in list(self.subs):
            if sub.kind == kind and sub.topic == topic:
                sub.handler(*args)


class Pair:
    def __init__(self, fake=None):
        self.fake = fake or FakeIpc()
        a, b = R.socket_pair()
        self.server = R.RelayServer(a, self.fake, THING).start()
        self.client = R.RelayClient(b, timeout=30).connect()

    def close(self):
        self.client.close()
        self.server.close()
        self.server.join(10)


@pytest.fixture
def pair():
    p = Pair()
    yield p
    p.close()


def _wait(cond, what):
    ev = threading.Event()
    for _ in range(1500):  # a bound for a loaded CI machine, not a speed claim
        if cond():
            return
        ev.wait(0.02)
    raise AssertionError(f"not reached: {what}")


def test_allowed_publishes_reach_a_with_binary_payloads_intact(pair):
    blob = bytes(range(256)) * 4  # CBOR reports are binary: every byte value must survive
    pair.client.publish_iot(f"{METRICS}/cbor", blob, qos=0)
    pair.client.publish_iot(f"ggdefender/things/{THING}/violations", '{"v":1}')
    pair.client.publish_local("ggdefender/collector/events", {"event": "report-published", "n": [1, 2.5, None]})
    pair.client.publish_local("ggdefender/findings", b"\x00\xff")
    assert pair.fake.calls == [
        ("publish_iot", f"{METRICS}/cbor", blob, 0),
        ("publish_iot", f"ggdefender/things/{THING}/violations", b'{"v":1}', 1),
        ("publish_local", "ggdefender/collector/events", {"event": "report-published", "n": [1, 2.5, None]}),
        ("publish_local", "ggdefender/findings", b"\x00\xff"),
    ]


@pytest.mark.parametrize("call", [
    lambda c: c.publish_iot("$aws/things/otherThing/defender/metrics/json", b"{}"),
    lambda c: c.publish_iot(f"$aws/things/{THING}/jobs/j1/update", b"{}"),
    lambda c: c.publish_iot(f"{METRICS}/json/accepted", b"{}"),
    lambda c: c.subscribe_iot(f"$aws/things/{THING}/jobs/notify-next", lambda t, p: None),
    lambda c: c.subscribe_iot(f"{METRICS}/#", lambda t, p: None),
    lambda c: c.publish_local("ggdefender/remediation/results", {"status": "SUCCEEDED"}),
    lambda c: c.subscribe_local("ggdefender/remediation/requests", lambda t, m: None),
    lambda c: c.subscribe_local("#", lambda t, m: None),
])
def test_denied_calls_raise_in_b_warn_in_a_and_never_reach_ipc(pair, call, caplog):
    with pytest.raises(R.RelayDenied, match="relay policy"):
        call(pair.client)
    assert pair.fake.calls == [] and pair.fake.subs == []
    assert any("denied" in r.getMessage() for r in caplog.records if r.name == "ggdefender.ipc_relay")
    assert pair.client.subscribe_local("ggdefender/custom-metrics", lambda t, m: None)  # still usable


def test_privileged_operations_are_refused_by_a_even_from_a_hand_made_client(pair):
    for op in ("update_config", "restart_component", "update_state", "component_details", "shell"):
        with pytest.raises(R.RelayDenied, match=repr(op)):
            pair.client._request({"op": op, "keyPath": ["Remediation"], "valueToMerge": {"AllowedCommands": ["sh"]}})
    with pytest.raises(R.RelayDenied, match="own configuration"):
        pair.client.get_config(["x"], component="aws.greengrass.Nucleus")
    assert pair.fake.calls == []


def test_get_config_relays_the_own_configuration_and_a_missing_key_is_none(pair):
    assert pair.client.get_config() == {"Collector": {"Enabled": True}}
    assert pair.client.get_config(["Collector", "Enabled"]) is True
    assert pair.client.get_config(["Nope"]) is None
    assert [c[2] for c in pair.fake.calls] == [None, None, None]  # never another component's


def test_subscription_events_reach_the_handler_in_order_with_binary_payloads(pair):
    got = []
    done = threading.Event()
    pair.client.subscribe_iot(f"{METRICS}/cbor/rejected", lambda t, p: got.append((t, p)))
    pair.client.subscribe_local("ggdefender/collector/commands", lambda t, m: got.append((t, m)))
    pair.client.subscribe_config(lambda path: (got.append(("config", path)), done.set()))
    pair.fake.deliver("iot", f"{METRICS}/cbor/rejected", f"{METRICS}/cbor/rejected", b"\xa1\x00\xff")
    pair.fake.deliver("local", "ggdefender/collector/commands", "ggdefender/collector/commands",
                      {"command": "collect-now", "requestId": "r1"})
    pair.fake.deliver("local", "ggdefender/collector/commands", "ggdefender/collector/commands", b"raw")
    pair.fake.deliver("config", "", ["Collector", "Enabled"])
    assert done.wait(10)
    assert got == [(f"{METRICS}/cbor/rejected", b"\xa1\x00\xff"),
                   ("ggdefender/collector/commands", {"command": "collect-now", "requestId": "r1"}),
                   ("ggdefender/collector/commands", b"raw"),
                   ("config", ["Collector", "Enabled"])]


def test_a_handler_may_make_relayed_calls(pair):
    """Detect's result handler publishes from the callback: it must not deadlock the reader."""
    done = threading.Event()

    def on_result(topic, msg):
        pair.client.publish_local("ggdefender/findings", {"after": msg["requestId"]})
        done.set()

    pair.client.subscribe_local("ggdefender/remediation/results", on_result)
    pair.fake.deliver("local", "ggdefender/remediation/results", "ggdefender/remediation/results", {"requestId": "q"})
    assert done.wait(10)
    assert ("publish_local", "ggdefender/findings", {"after": "q"}) in pair.fake.calls


def test_closing_a_subscription_in_b_closes_it_in_a(pair):
    sub = pair.client.subscribe_local("ggdefender/custom-metrics", lambda t, m: None)
    assert len(pair.fake.subs) == 1
    sub.close()
    assert pair.fake.subs == [] and pair.server.subscription_count() == 0


def test_child_socket_close_cleans_up_all_its_subscriptions():
    p = Pair()
    try:
        p.client.subscribe_local("ggdefender/custom-metrics", lambda t, m: None)
        p.client.subscribe_iot(f"{METRICS}/json/accepted", lambda t, m: None)
        p.client.subscribe_config(lambda path: None)
        subs = list(p.fake.subs)
        assert len(subs) == 3
        p.client.sock.shutdown(socket.SHUT_RDWR)  # as when process B dies: EOF, no unsubscribe sent
        _wait(lambda: p.server.closed, "server closed")
        assert p.fake.subs == [] and all(s.closed for s in subs)
    finally:
        p.close()


def test_errors_in_a_come_back_as_exceptions_with_the_message(pair):
    pair.fake.fail_next = RuntimeError("publish refused: payload too large")
    with pytest.raises(R.RelayError, match="payload too large"):
        pair.client.publish_iot(f"{METRICS}/json", b"{}")
    pair.fake.fail_next = IpcUnavailable("cannot connect to Greengrass IPC after 10 attempts")
    with pytest.raises(IpcUnavailable, match="10 attempts"):
        pair.client.publish_local("ggdefender/violations", {})
    pair.fake.fail_next = RuntimeError("boom")
    with pytest.raises(R.RelayError, match="boom"):
        pair.client.subscribe_local("ggdefender/custom-metrics", lambda t, m: None)
    assert pair.server.subscription_count() == 0
    pair.client.publish_local("ggdefender/violations", {"ok": 1})  # the relay carries on


def test_a_gone_supervisor_is_ipc_unavailable_in_b():
    p = Pair()
    try:
        p.server.close()
        p.server.join(10)
        with pytest.raises(IpcUnavailable):
            p.client.publish_local("ggdefender/violations", {})
    finally:
        p.close()


def _raw(fake=None):
    a, b = R.socket_pair()
    server = R.RelayServer(a, fake or FakeIpc(), THING).start()
    return server, b, b.makefile("rb")


def test_malformed_json_gets_an_error_and_the_relay_carries_on():
    server, b, rb = _raw()
    try:
        b.sendall(b"{not json\n")
        reply = json.loads(rb.readline())
        assert reply["ok"] is False and reply["id"] is None and "not JSON" in reply["error"]
        b.sendall(b'[1, 2]\n{"id": 7, "op": "publish_local", "topic": "ggdefender/findings"}\n')
        assert "integer 'id'" in json.loads(rb.readline())["error"]
        reply = json.loads(rb.readline())
        assert reply["id"] == 7 and reply["kind"] == "invalid" and "'json' or 'b64'" in reply["error"]
        b.sendall(b'{"id": 8, "op": "publish_iot", "topic": "' + METRICS.encode() + b'/json", "b64": "**"}\n')
        assert "base64" in json.loads(rb.readline())["error"]
        b.sendall(b"[" * 200_000 + b"\n")
        assert "not JSON" in json.loads(rb.readline())["error"]
        b.sendall(b'{"id": 9, "op": "get_config"}\n')
        assert json.loads(rb.readline()) == {"id": 9, "ok": True, "result": {"Collector": {"Enabled": True}}}
    finally:
        rb.close()
        b.close()
        server.join(10)


def test_an_oversized_line_gets_an_error_and_the_relay_is_closed():
    fake = FakeIpc()
    server, b, rb = _raw(fake)
    b.sendall(b'{"id": 1, "op": "subscribe_local", "sub": 1, "topic": "ggdefender/custom-metrics"}\n')
    assert json.loads(rb.readline())["ok"] is True and len(fake.subs) == 1

    def flood():
        try:
            b.sendall(b"x" * (R.MAX_REQUEST_LINE + 10))
        except OSError:  # the server may shut its side while we still send
            pass

    t = threading.Thread(target=flood)
    t.start()
    try:
        reply = json.loads(rb.readline())
        assert reply["ok"] is False and f"over {R.MAX_REQUEST_LINE} bytes" in reply["error"]
        assert rb.readline() == b""  # then EOF: closed
        _wait(lambda: server.closed, "server closed")
        assert fake.subs == []
    finally:
        rb.close()
        b.close()
        t.join(10)
        server.join(10)


def test_a_child_that_does_not_read_never_blocks_a(monkeypatch):
    monkeypatch.setattr(R, "MAX_PENDING_EVENTS", 5)
    fake = FakeIpc()
    server, b, rb = _raw(fake)
    try:
        b.sendall(b'{"id": 1, "op": "subscribe_local", "sub": 1, "topic": "ggdefender/custom-metrics"}\n')
        assert json.loads(rb.readline())["ok"] is True
        big = {"x": "y" * 100_000}
        for _ in range(50):  # ~5 MB: far more than a socket buffer; the callback thread must return each time
            fake.deliver("local", "ggdefender/custom-metrics", "ggdefender/custom-metrics", big)
        assert server._dropped > 0
        b.close()  # still held open by rb: the server sees EOF only when both are closed
        rb.close()
        _wait(lambda: server.closed, "server closed")
        assert fake.subs == []
    finally:
        rb.close()
        b.close()
        server.join(10)


def test_policy_lists_are_exact():
    pol = R.Policy(THING)
    assert pol.iot_publish == {f"{METRICS}/json", f"{METRICS}/cbor", f"ggdefender/things/{THING}/violations",
                               f"ggdefender/things/{THING}/findings"}
    assert pol.iot_subscribe == {f"{METRICS}/{f}/{o}" for f in ("json", "cbor") for o in ("accepted", "rejected")}
    with pytest.raises(ValueError):
        R.Policy("")


def test_client_from_env_checks_the_fd():
    with pytest.raises(IpcUnavailable, match="not a file descriptor"):
        R.RelayClient.from_env({R.FD_ENV: "x"})
    r, w = os.pipe()
    try:
        with pytest.raises(IpcUnavailable):
            R.RelayClient.from_env({R.FD_ENV: str(r)})
    finally:
        os.close(w)
    a, b = R.socket_pair()
    try:
        fd = os.dup(b.fileno())
        os.set_inheritable(fd, True)
        client = R.RelayClient.from_env({R.FD_ENV: str(fd)})
        assert not os.get_inheritable(fd)
        client.close()
    finally:
        a.close()
        b.close()


def test_process_b_imports_no_awscrt_and_no_jsonschema():
    """What `ggdefender part collector` imports on its way to a first report, checked in a fresh interpreter."""
    code = (
        "import sys, tempfile\n"
        "from ggdefender import supervisor, ipc_relay\n"
        "from ggdefender.collector.service import CollectorService\n"
        "from ggdefender.plugins.host import PluginHost\n"
        "from ggdefender.detect.service import DetectService\n"
        "import yaml, pathlib\n"
        "class Fake:\n"
        "    thing_name = 'thingA'\n"
        "    def publish_iot(self, *a, **k): pass\n"
        "    def publish_local(self, *a, **k): pass\n"
        "cfg = yaml.safe_load(pathlib.Path(sys.argv[1]).read_text())\n"
        "conf = cfg['ComponentConfiguration']['DefaultConfiguration']\n"
        "svc = CollectorService(Fake(), 'thingA', tempfile.mkdtemp())\n"
        "svc.apply_config(conf)\n"
        "svc.collect_and_publish()\n"
        "svc.close()\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('awscrt', '_awscrt', 'awsiot', 'jsonschema'))\n"
        "print(bad)\n")
    recipe = os.path.join(os.path.dirname(__file__), "..", "..", "recipe.yaml")
    out = subprocess.run([sys.executable, "-c", code, recipe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_supervisor_gives_the_child_a_relay_and_no_token(tmp_path, monkeypatch):
    from ggdefender import supervisor as sv

    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # no privilege drop in this test
    monkeypatch.setenv("SVCUID", "secret-token")
    monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "secret-creds")
    monkeypatch.setenv("AWS_IOT_THING_NAME", THING)
    script = ("import os, sys, time\n"
              "from ggdefender.ipc_relay import client_for_part, RelayClient\n"
              "c = client_for_part()\n"
              "assert isinstance(c, RelayClient), type(c)\n"
              "c.publish_local('ggdefender/findings', {'svcuid': os.environ.get('SVCUID'),\n"
              "                'token': os.environ.get('AWS_CONTAINER_AUTHORIZATION_TOKEN'), 'thing': c.thing_name})\n"
              "c.subscribe_local('ggdefender/custom-metrics', lambda t, m: None)\n"
              "time.sleep(600)\n")
    fake = FakeIpc()
    sup = sv.Supervisor(sv.SupervisorSettings(), str(tmp_path), argv=[sys.executable, "-c", script],
                        ipc=fake, thing=THING)
    t = threading.Thread(target=sup.supervise_child)
    t.start()
    try:
        _wait(lambda: fake.subs, "the child subscribed through the relay")
    finally:
        sup.stop.set()
        t.join(30)
    assert ("publish_local", "ggdefender/findings", {"svcuid": None, "token": None, "thing": THING}) in fake.calls
    assert not t.is_alive() and sup.relay is None and fake.subs == []  # the child's subscription went with it
