"""The IPC relay (relay_wire, supervisor/relay_server, collector/relay_client): a RelayServer over a fake Ipc in A,
a RelayClient in B, a real socketpair."""

import json
import os
import socket
import subprocess
import sys
import threading

import pytest

from fake_ipc import FakeIpc
from ggdefender import relay_wire
from ggdefender.collector import relay_client
from ggdefender.supervisor import relay_server
from ggdefender.ipc import IpcUnavailable

THING = "thingA"
METRICS = f"$aws/things/{THING}/defender/metrics"


def _report(rid: int, fmt: str = "json") -> bytes:
    if fmt == "cbor":
        import cbor2

        return cbor2.dumps({"hed": {"rid": rid, "v": "1.0"}, "met": {"tp": {"pts": [{"pt": 22}], "t": 1}}})
    return json.dumps({"header": {"report_id": rid, "version": "1.0"},
                       "metrics": {"listening_tcp_ports": {"ports": [{"port": 22}], "total": 1}}}).encode()


def _violation(thing=THING, **extra) -> dict:
    return dict({"thingName": thing, "violationId": "v-1", "securityProfileName": "P",
                 "violationEventType": "in-alarm", "behavior": {"name": "b"}}, **extra)


def _finding(thing=THING, **product) -> dict:
    return {"SchemaVersion": "2018-10-08", "Id": "arn:aws:iot-device-defender:r:1:detect/violation/v-1",
            "Resources": [{"Type": "Other", "Id": f"arn:aws:iot:r:1:thing/{thing}"}],
            "ProductFields": dict({"ggdefender/thingName": thing}, **product)}


def a_ipc(config=None):
    """Process A's IPC handle (the shared fake): records what A was asked to do; tests deliver events to it."""
    return FakeIpc(config if config is not None else {"Collector": {"Enabled": True}}, thing=THING)


class Pair:
    def __init__(self, fake=None):
        self.fake = fake or a_ipc()
        a, b = relay_wire.socket_pair()
        self.server = relay_server.RelayServer(a, self.fake, THING).start()
        self.client = relay_client.RelayClient(b, timeout=30).connect()

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
    blob = _report(7, "cbor")  # CBOR reports are binary: every byte must survive
    violation = json.dumps(_violation()).encode()
    finding = json.dumps(_finding()).encode()
    pair.client.publish_iot(f"{METRICS}/cbor", blob, qos=0)
    pair.client.publish_iot(f"ggdefender/things/{THING}/violations", violation.decode())
    pair.client.publish_local("ggdefender/violations", _violation(n=[1, 2.5, None]))
    pair.client.publish_local("ggdefender/findings", finding)
    assert pair.fake.calls == [
        ("publish_iot", f"{METRICS}/cbor", blob, 0),
        ("publish_iot", f"ggdefender/things/{THING}/violations", violation, 1),
        ("publish_local", "ggdefender/violations", _violation(n=[1, 2.5, None])),
        ("publish_local", "ggdefender/findings", finding),
    ]


@pytest.mark.parametrize("call", [
    lambda c: c.publish_iot("$aws/things/otherThing/defender/metrics/json", b"{}"),
    lambda c: c.publish_iot(f"$aws/things/{THING}/jobs/j1/update", b"{}"),
    lambda c: c.publish_iot(f"{METRICS}/json/accepted", b"{}"),
    lambda c: c.subscribe_iot(f"$aws/things/{THING}/jobs/notify-next", lambda t, p: None),
    lambda c: c.subscribe_iot(f"{METRICS}/#", lambda t, p: None),
    lambda c: c.publish_local("ggdefender/remediation/results", {"status": "SUCCEEDED"}),
    # no public remediation door from B: it asks only with the typed `mitigate` call
    lambda c: c.publish_local("ggdefender/remediation/requests", {"requestId": "r", "operation": "kill-process",
                                                                  "arguments": {"pid": 1, "signal": "SIGKILL"}}),
    lambda c: c.subscribe_local("ggdefender/remediation/results", lambda t, m: None),
    lambda c: c.subscribe_local("ggdefender/remediation/requests", lambda t, m: None),
    lambda c: c.subscribe_local("#", lambda t, m: None),
])
def test_denied_calls_raise_in_b_warn_in_a_and_never_reach_ipc(pair, call, caplog):
    with pytest.raises(relay_wire.RelayDenied, match="relay policy"):
        call(pair.client)
    assert pair.fake.calls == [] and pair.fake.subs == []
    assert any("denied" in r.getMessage()
               for r in caplog.records if r.name == "ggdefender.supervisor.relay_server")
    assert pair.client.subscribe_local("ggdefender/custom-metrics", lambda t, m: None)  # still usable


def test_privileged_operations_are_refused_by_a_even_from_a_hand_made_client(pair):
    for op in ("update_config", "restart_component", "update_state", "component_details", "shell"):
        with pytest.raises(relay_wire.RelayDenied, match=repr(op)):
            pair.client._request({"op": op, "keyPath": ["Remediation"], "valueToMerge": {"AllowedCommands": ["sh"]}})
    with pytest.raises(relay_wire.RelayDenied, match="own configuration"):
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
    pair.fake.deliver("iot", f"{METRICS}/cbor/rejected", b"\xa1\x00\xff")
    pair.fake.deliver("local", "ggdefender/collector/commands", {"command": "collect-now", "requestId": "r1"})
    pair.fake.deliver("local", "ggdefender/collector/commands", b"raw")
    pair.fake.deliver("config", "", ["Collector", "Enabled"])
    assert done.wait(10)
    assert got == [(f"{METRICS}/cbor/rejected", b"\xa1\x00\xff"),
                   ("ggdefender/collector/commands", {"command": "collect-now", "requestId": "r1"}),
                   ("ggdefender/collector/commands", b"raw"),
                   ("config", ["Collector", "Enabled"])]


def test_a_handler_may_make_relayed_calls(pair):
    """The collector answers a command from its callback: it must not deadlock the reader."""
    done = threading.Event()
    answer = {"event": "report-failed", "requestId": "q", "reason": "test"}

    def on_command(topic, msg):
        pair.client.publish_local("ggdefender/collector/events", dict(answer, requestId=msg["requestId"]))
        done.set()

    pair.client.subscribe_local("ggdefender/collector/commands", on_command)
    pair.fake.deliver("local", "ggdefender/collector/commands", {"command": "collect-now", "requestId": "q"})
    assert done.wait(10)
    assert ("publish_local", "ggdefender/collector/events", answer) in pair.fake.calls


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
    with pytest.raises(relay_wire.RelayError, match="payload too large"):
        pair.client.publish_iot(f"{METRICS}/json", _report(1))
    pair.fake.fail_next = IpcUnavailable("cannot connect to Greengrass IPC after 10 attempts")
    with pytest.raises(IpcUnavailable, match="10 attempts"):
        pair.client.publish_local("ggdefender/violations", _violation())
    pair.fake.fail_next = RuntimeError("boom")
    with pytest.raises(relay_wire.RelayError, match="boom"):
        pair.client.subscribe_local("ggdefender/custom-metrics", lambda t, m: None)
    assert pair.server.subscription_count() == 0
    pair.client.publish_local("ggdefender/violations", _violation())  # the relay carries on
    pair.client.publish_iot(f"{METRICS}/json", _report(1))  # the failed publish did not use up report 1


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
    a, b = relay_wire.socket_pair()
    server = relay_server.RelayServer(a, fake or a_ipc(), THING).start()
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
    fake = a_ipc()
    server, b, rb = _raw(fake)
    b.sendall(b'{"id": 1, "op": "subscribe_local", "sub": 1, "topic": "ggdefender/custom-metrics"}\n')
    assert json.loads(rb.readline())["ok"] is True and len(fake.subs) == 1

    def flood():
        try:
            b.sendall(b"x" * (relay_wire.MAX_REQUEST_LINE + 10))
        except OSError:  # the server may shut its side while we still send
            pass

    t = threading.Thread(target=flood)
    t.start()
    try:
        reply = json.loads(rb.readline())
        assert reply["ok"] is False and f"over {relay_wire.MAX_REQUEST_LINE} bytes" in reply["error"]
        assert rb.readline() == b""  # then EOF: closed
        _wait(lambda: server.closed, "server closed")
        assert fake.subs == []
    finally:
        rb.close()
        b.close()
        t.join(10)
        server.join(10)


def test_a_child_that_does_not_read_never_blocks_a(monkeypatch):
    monkeypatch.setattr(relay_server, "MAX_PENDING_EVENTS", 5)
    fake = a_ipc()
    server, b, rb = _raw(fake)
    try:
        b.sendall(b'{"id": 1, "op": "subscribe_local", "sub": 1, "topic": "ggdefender/custom-metrics"}\n')
        assert json.loads(rb.readline())["ok"] is True
        big = {"x": "y" * 100_000}
        for _ in range(50):  # ~5 MB: far more than a socket buffer; the callback thread must return each time
            fake.deliver("local", "ggdefender/custom-metrics", big)
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
    pol = relay_server.Policy(THING)
    assert pol.iot_publish == {f"{METRICS}/json", f"{METRICS}/cbor", f"ggdefender/things/{THING}/violations",
                               f"ggdefender/things/{THING}/findings"}
    assert pol.iot_subscribe == {f"{METRICS}/{f}/{o}" for f in ("json", "cbor") for o in ("accepted", "rejected")}
    with pytest.raises(ValueError):
        relay_server.Policy("")


def test_client_from_env_checks_the_fd():
    with pytest.raises(IpcUnavailable, match="not a file descriptor"):
        relay_client.RelayClient.from_env({relay_wire.FD_ENV: "x"})
    r, w = os.pipe()
    try:
        with pytest.raises(IpcUnavailable):
            relay_client.RelayClient.from_env({relay_wire.FD_ENV: str(r)})
    finally:
        os.close(w)
    a, b = relay_wire.socket_pair()
    try:
        fd = os.dup(b.fileno())
        os.set_inheritable(fd, True)
        client = relay_client.RelayClient.from_env({relay_wire.FD_ENV: str(fd)})
        assert not os.get_inheritable(fd)
        client.close()
    finally:
        a.close()
        b.close()


def test_process_b_imports_no_awscrt_and_no_jsonschema():
    """What `ggdefender part collector` imports on its way to a first report, checked in a fresh interpreter."""
    code = (
        "import sys, tempfile\n"
        "from ggdefender.collector import relay_client\n"
        "from ggdefender.collector.process import CollectorProcess\n"
        "from ggdefender import defaults\n"
        "class Fake:\n"
        "    thing_name = 'thingA'\n"
        "    def publish_iot(self, *a, **k): pass\n"
        "    def publish_local(self, *a, **k): pass\n"
        "conf = defaults.DEFAULTS\n"
        "proc = CollectorProcess(Fake(), 'thingA', tempfile.mkdtemp())\n"
        "proc.configure(conf)\n"
        "proc.collector.collect_and_publish()\n"
        "proc.close()\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('awscrt', '_awscrt', 'awsiot', 'jsonschema'))\n"
        "print(bad)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_supervisor_gives_the_child_a_relay_and_no_token(tmp_path, monkeypatch):
    from ggdefender.supervisor import run as supervisor, section

    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # no privilege drop in this test
    monkeypatch.setenv("SVCUID", "secret-token")
    monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "secret-creds")
    monkeypatch.setenv("AWS_IOT_THING_NAME", THING)
    script = ("import os, sys, time\n"
              "from ggdefender.collector.relay_client import client_for_part, RelayClient\n"
              "c = client_for_part()\n"
              "assert isinstance(c, RelayClient), type(c)\n"
              "c.publish_local('ggdefender/findings', {'SchemaVersion': '2018-10-08', 'Id': 'f',\n"
              "    'Resources': [{'Id': 'arn:aws:iot:r:1:thing/' + c.thing_name}],\n"
              "    'ProductFields': {'ggdefender/thingName': c.thing_name, 'svcuid': os.environ.get('SVCUID'),\n"
              "                      'token': os.environ.get('AWS_CONTAINER_AUTHORIZATION_TOKEN')}})\n"
              "c.subscribe_local('ggdefender/custom-metrics', lambda t, m: None)\n"
              "time.sleep(600)\n")
    fake = a_ipc()
    sup = supervisor.Supervisor(section.SupervisorSettings(), str(tmp_path), argv=[sys.executable, "-c", script],
                                ipc=fake, thing=THING)
    t = threading.Thread(target=sup.supervise_child)
    t.start()
    try:
        _wait(lambda: fake.subs, "the child subscribed through the relay")
    finally:
        sup.stop.set()
        t.join(30)
    (published,) = [c[2] for c in fake.calls if c[:2] == ("publish_local", "ggdefender/findings")]
    assert published["ProductFields"] == {"ggdefender/thingName": THING, "svcuid": None, "token": None}
    assert not t.is_alive() and sup.relay is None and fake.subs == []  # the child's subscription went with it


# -- what B may say on its topics (relay_guard) -----------------------------------------------------------------
@pytest.mark.parametrize("topic,payload,kind,match", [
    (f"{METRICS}/json", b"\x00\xffnot a report", relay_wire.RelayError, "not JSON"),
    (f"{METRICS}/json", b'{"header": {"report_id": 5, "version": "1.0"}}', relay_wire.RelayError, "metrics or custom"),
    (f"{METRICS}/json", b'{"header": {"report_id": 5, "version": "1.0"}, "metrics": {"shell": {}}}',
     relay_wire.RelayError, "'metrics' must be"),
    (f"{METRICS}/json", b'{"header": {"report_id": "5", "version": "1.0"}, "metrics": {}}', relay_wire.RelayError,
     "report_id"),
    (f"{METRICS}/cbor", _report(5), relay_wire.RelayError, "not CBOR"),
    (f"{METRICS}/json", b'{"header": {"report_id": 5, "version": "1.0"}, "custom_metrics": {"x": 1}}',
     relay_wire.RelayError, "custom metric"),
    (f"{METRICS}/json", b"{" + b" " * (128 * 1024) + b"}", relay_wire.RelayError, "over the IoT Core limit"),
    (f"ggdefender/things/{THING}/violations", json.dumps(_violation("otherThing")).encode(), relay_wire.RelayDenied,
     "not 'thingA'"),
    (f"ggdefender/things/{THING}/violations", b'{"v": 1}', relay_wire.RelayDenied, "violation for thing"),
    (f"ggdefender/things/{THING}/findings", json.dumps(_finding("otherThing")).encode(), relay_wire.RelayDenied,
     "not about this thing"),
    (f"ggdefender/things/{THING}/findings", b'{"Id": "x"}', relay_wire.RelayError, "ASFF"),
])
def test_b_cannot_publish_arbitrary_bytes_on_its_topics(pair, topic, payload, kind, match, caplog):
    with pytest.raises(kind, match=match):
        pair.client.publish_iot(topic, payload)
    assert pair.fake.calls == []
    assert any("refused" in r.getMessage() or "denied" in r.getMessage()
               for r in caplog.records if r.name == "ggdefender.supervisor.relay_server")


def test_report_ids_must_increase_across_collector_incarnations():
    from ggdefender.supervisor.relay_guard import ContentGuard

    guard = ContentGuard(THING)  # the supervisor's, shared by every RelayServer
    first = Pair()
    first.server.guard = guard
    try:
        first.client.publish_iot(f"{METRICS}/json", _report(100))
        with pytest.raises(relay_wire.RelayDenied, match="not above the last relayed report_id 100"):
            first.client.publish_iot(f"{METRICS}/cbor", _report(100, "cbor"))
    finally:
        first.close()
    second = Pair()
    second.server.guard = guard
    try:
        with pytest.raises(relay_wire.RelayDenied, match="report_id 50"):
            second.client.publish_iot(f"{METRICS}/json", _report(50))
        second.client.publish_iot(f"{METRICS}/cbor", _report(101, "cbor"))
        assert [c[1] for c in second.fake.calls] == [f"{METRICS}/cbor"]
    finally:
        second.close()


def test_collector_events_answer_only_delivered_requests_and_relayed_reports(pair):
    events = "ggdefender/collector/events"
    got = threading.Event()
    pair.client.subscribe_local("ggdefender/collector/commands", lambda t, m: got.set())
    # never delivered: a forged answer to someone else's request
    with pytest.raises(relay_wire.RelayDenied, match="never delivered"):
        pair.client.publish_local(events, {"event": "report-failed", "requestId": "theirs", "reason": "x"})
    pair.fake.deliver("local", "ggdefender/collector/commands", {"command": "collect-now", "requestId": "r1"})
    assert got.wait(10)
    pair.client.publish_iot(f"{METRICS}/json", _report(10))
    with pytest.raises(relay_wire.RelayDenied, match="was not relayed"):
        pair.client.publish_local(events, {"event": "report-published", "requestId": "r1", "reportId": 11,
                                           "topic": f"{METRICS}/json"})
    with pytest.raises(relay_wire.RelayDenied, match="was not relayed"):
        pair.client.publish_local(events, {"event": "report-published", "requestId": "r1", "reportId": 10,
                                           "topic": f"{METRICS}/cbor"})
    with pytest.raises(relay_wire.RelayError, match="unknown field"):
        pair.client.publish_local(events, {"event": "report-published", "requestId": "r1", "reportId": 10,
                                           "topic": f"{METRICS}/json", "extra": 1})
    ok = {"event": "report-published", "requestId": "r1", "reportId": 10, "topic": f"{METRICS}/json"}
    pair.client.publish_local(events, ok)
    with pytest.raises(relay_wire.RelayDenied, match="already answered"):  # each request is answered once
        pair.client.publish_local(events, ok)
    assert [c for c in pair.fake.calls if c[1] == events] == [("publish_local", events, ok)]


# -- mitigate: B's only way to ask for remediation ---------------------------------------------------------------
class FakeGate:
    def __init__(self):
        self.requests, self.sinks = [], []

    def submit(self, request):
        from ggdefender.remediation.mitigation_gate import Refused

        self.requests.append(request)
        if request.get("operation") != "stop-listener":
            raise Refused(f"operation {request.get('operation')!r} cannot be a mitigation")
        return {"requestId": request["requestId"], "status": "accepted"}

    def subscribe(self, deliver):
        gate = self

        class Sink:
            def close(self):
                gate.sinks.remove(deliver)

        self.sinks.append(deliver)
        return Sink()


def test_mitigate_reaches_the_gate_and_results_come_back_over_the_relay():
    fake, gate = a_ipc(), FakeGate()
    a, b = relay_wire.socket_pair()
    server = relay_server.RelayServer(a, fake, THING, mitigation=gate).start()
    client = relay_client.RelayClient(b, timeout=30).connect()
    try:
        results = []
        done = threading.Event()
        client.subscribe_mitigation(lambda r: (results.append(r), done.set()))
        req = {"requestId": "d-1", "operation": "stop-listener", "target": {"port": 8080, "protocol": "tcp"},
               "profile": "P", "behavior": "b", "violationId": "v"}
        assert client.mitigate(req) == {"requestId": "d-1", "status": "accepted"}
        with pytest.raises(relay_wire.MitigationRefused, match="cannot be a mitigation"):
            client.mitigate(dict(req, operation="kill-process"))
        assert gate.requests[0] == req
        gate.sinks[0]({"requestId": "d-1", "status": "SUCCEEDED"})
        assert done.wait(10) and results == [{"requestId": "d-1", "status": "SUCCEEDED"}]
        assert fake.calls == []  # nothing went to the bus
    finally:
        client.close()
        server.close()
        server.join(10)
    assert gate.sinks == []  # the result subscription closed with B's relay


def test_without_a_gate_mitigate_is_denied(pair):
    with pytest.raises(relay_wire.MitigationRefused, match="not served"):
        pair.client.mitigate({"requestId": "x"})
    with pytest.raises(relay_wire.RelayDenied, match="not served"):
        pair.client.subscribe_mitigation(lambda r: None)


def test_a_refused_publish_comes_back_to_b_as_publish_refused(pair):
    # nucleus lite refuses PublishToIoTCore while it has no IoT Core connection: B must tell that ("not now")
    # from a refusal of the message itself, by type
    from ggdefender.ipc import PublishRefused

    pair.fake.fail_next = PublishRefused("PublishToIoTCore on t refused by the nucleus: ServiceError")
    with pytest.raises(PublishRefused, match="refused by the nucleus"):
        pair.client.publish_iot(f"{METRICS}/json", _report(1))
    pair.fake.fail_next = RuntimeError("UnauthorizedError: not authorized")
    with pytest.raises(relay_wire.RelayError) as info:
        pair.client.publish_iot(f"{METRICS}/json", _report(1))
    assert not isinstance(info.value, PublishRefused)


def test_b_learns_the_nucleus_limit_from_a_through_its_environment(monkeypatch):
    from ggdefender.ipc import IOT_CORE_MAX_PAYLOAD, MAX_IOT_PAYLOAD_ENV

    monkeypatch.setenv(MAX_IOT_PAYLOAD_ENV, "7000")
    assert relay_client.RelayClient.max_iot_payload() == 7000
    for bad in ("", "lots", "999999999"):
        monkeypatch.setenv(MAX_IOT_PAYLOAD_ENV, bad)
        assert relay_client.RelayClient.max_iot_payload() == IOT_CORE_MAX_PAYLOAD - 1


# -- collect-now: A's typed call to B over the relay (never a round-trip through the Greengrass bus) --------------
def test_collect_now_is_a_typed_call_from_a_to_b_that_never_touches_the_bus(pair):
    def serve(request_id):
        pair.client.collect_result({"event": "report-published", "requestId": request_id, "reportId": 7,
                                    "topic": f"{METRICS}/json"})

    with pytest.raises(IpcUnavailable, match="no collector process"):  # nobody serves it yet
        pair.fake.collect_now("early", 5)
    sub = pair.client.subscribe_collect_now(serve)
    answer = pair.fake.collect_now("r1", 30)
    assert answer == {"event": "report-published", "requestId": "r1", "reportId": 7, "topic": f"{METRICS}/json"}
    assert [c[0] for c in pair.fake.calls] == ["collect_now", "collect_now"]  # no publish, no subscribe
    assert pair.fake.subs == []
    sub.close()
    _wait(lambda: pair.server.subscription_count() == 0, "B's collect-now subscription closed in A")
    with pytest.raises(IpcUnavailable, match="no collector process"):  # A no longer reaches a collector
        pair.fake.collect_now("late", 5)


def test_b_may_answer_only_a_pending_collect_now_call_with_a_known_event(pair):
    asked = []
    pair.client.subscribe_collect_now(asked.append)
    with pytest.raises(relay_wire.RelayDenied, match="answers no collect-now call"):
        pair.client.collect_result({"event": "report-failed", "requestId": "forged", "reason": "x"})
    with pytest.raises(relay_wire.RelayError, match="'event' one of"):
        pair.client.collect_result({"event": "reboot", "requestId": "forged"})
    with pytest.raises(relay_wire.RelayError, match="already served"):  # one collector per relay
        pair.client.subscribe_collect_now(asked.append)
    with pytest.raises(TimeoutError, match="did not answer collect-now"):  # B got it but never answered
        pair.fake.collect_now("r2", 0.5)
    _wait(lambda: asked == ["r2"], "B was asked")


def test_a_collect_now_call_ends_at_once_when_b_goes_away(pair):
    asked = threading.Event()
    pair.client.subscribe_collect_now(lambda request_id: asked.set())
    errors = []

    def call():
        try:
            pair.fake.collect_now("r3", 600)
        except IpcUnavailable as exc:
            errors.append(exc)

    t = threading.Thread(target=call)
    t.start()
    assert asked.wait(30)
    pair.client.close()  # process B died: its relay closes
    t.join(60)
    assert not t.is_alive() and len(errors) == 1  # not left waiting for the 600 s timeout


def test_a_collect_now_call_waits_for_a_collector_that_is_starting_and_gives_up_at_its_timeout():
    from ggdefender.ipc import Ipc

    class Channel:
        def collect_now(self, request_id, timeout):
            return {"event": "report-published", "requestId": request_id, "reportId": 1, "topic": "t"}

    ipc = Ipc(client_factory=lambda: pytest.fail("no IPC connection is needed"))
    try:
        with pytest.raises(IpcUnavailable, match="no collector process running"):
            ipc.collect_now("r0", 0.2)
        channel = Channel()
        threading.Timer(0.3, ipc.attach_collector, args=(channel,)).start()  # B comes up while A waits
        assert ipc.collect_now("r1", 60)["requestId"] == "r1"
        ipc.detach_collector(channel)
        with pytest.raises(IpcUnavailable):
            ipc.collect_now("r2", 0.2)
    finally:
        ipc.close()
