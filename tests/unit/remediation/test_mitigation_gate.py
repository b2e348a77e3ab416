"""Process A's MitigationGate: what a (possibly compromised) collector may ask for, checked against A's own
configuration and what A observes itself. Real sockets and processes for the observations; a fake Ipc for
configuration and a fake listener to see what would be executed."""

import json
import logging
import socket
import subprocess
import sys

import pytest

from ggdefender.remediation import mitigation_gate as G

RULE = {"Operation": "stop-listener", "Arguments": {"gracePeriodSeconds": 1}}


class ConfigIpc:
    def __init__(self, detect=None, remediation=None):
        self.config = {"Detect": detect if detect is not None else
                       {"Mitigation": {"Enabled": True, "Actions": {"P/b": RULE, "ip": {"Operation": "block-ip"}}}},
                       "Remediation": remediation or {}}

    def get_config(self, key_path=None, component=None):
        node = self.config
        for k in key_path or []:
            node = node.get(k) if isinstance(node, dict) else None
        return node


class Listener:
    def __init__(self):
        self.submitted = []

    def submit_mitigation(self, msg, on_result):
        self.submitted.append(msg)
        on_result({"requestId": msg["requestId"], "status": "SUCCEEDED"})
        return None


def _request(port=8080, **extra):
    return dict({"requestId": "d-1", "operation": "stop-listener", "target": {"port": port, "protocol": "tcp"},
                 "profile": "P", "behavior": "b", "violationId": "v-1"}, **extra)


def _gate(ipc=None, observe=lambda op, target: None, preflight=lambda msg, settings: None, clock=None):
    gate = G.MitigationGate(ipc or ConfigIpc(), observe=observe, preflight=preflight,
                            **({"clock": clock} if clock else {}))
    listener = Listener()
    gate.attach(listener)
    return gate, listener


@pytest.mark.parametrize("request_, reason", [
    (_request(operation="kill-process", target={"pid": 1}), "cannot be a mitigation"),
    (dict(_request(), arguments={"pid": 1, "signal": "SIGKILL"}), "unknown field"),
    (_request(target={"port": 8080, "protocol": "tcp", "signal": "SIGKILL"}), "target must be exactly"),
    (_request(port=0), "1-65535"),
    (_request(port=True), "1-65535"),
    (_request(requestId="x" * 65), "requestId"),
    (_request(operation="block-ip", target={"address": "10.0.0.0/8"}), "one IPv4 or IPv6 address"),
    ("kill everything", "must be an object"),
    (_request(behavior="other"), "no mitigation rule for P/other"),
    (_request(operation="block-ip", target={"address": "10.1.2.3"}), "names stop-listener, not block-ip"),
])
def test_forged_requests_are_refused_with_the_reason_before_anything_runs(request_, reason, caplog):
    caplog.set_level(logging.INFO, logger="ggdefender.audit")
    gate, listener = _gate()
    with pytest.raises(G.Refused, match=reason):
        gate.submit(request_)
    assert listener.submitted == []
    assert any("refused" in r.getMessage() and reason.split()[0] in r.getMessage() for r in caplog.records)
    (audit,) = [json.loads(r.getMessage()[len("AUDIT "):]) for r in caplog.records if r.name == "ggdefender.audit"]
    assert audit["result"] == "REJECTED" and audit["job"].startswith("collector:") and reason in audit["detail"]


@pytest.mark.parametrize("ipc, reason", [
    (ConfigIpc(detect={"Mitigation": {"Enabled": False, "Actions": {"P/b": RULE}}}), "mitigation is disabled"),
    (ConfigIpc(detect={"Enabled": False, "Mitigation": {"Enabled": True, "Actions": {"P/b": RULE}}}),
     "detect is disabled"),
    (ConfigIpc(detect={}), "mitigation is disabled"),
    (ConfigIpc(remediation={"AllowedOperations": ["collect-now"]}), "not in Remediation.AllowedOperations"),
    (ConfigIpc(remediation={"Enabled": False}), "remediation is disabled"),
    (ConfigIpc(remediation={"AcceptLocalRequests": True}), "Remediation configuration is invalid"),
    (ConfigIpc(detect={"Mitigation": {"Enabled": True, "Actions": {"P/b": {"Operation": "kill-process"}}}}),
     "Mitigation configuration is invalid"),
    (ConfigIpc(detect={"Mitigation": {"Enabled": True, "Actions": {
        "P/b": {"Operation": "stop-listener", "Arguments": {"port": 22}}}}}), "differs from the rule's fixed port 22"),
])
def test_a_reads_its_own_configuration_for_each_request(ipc, reason):
    gate, listener = _gate(ipc)
    with pytest.raises(G.Refused, match=reason):
        gate.submit(_request())
    assert listener.submitted == []


def test_accepted_request_carries_only_arguments_from_a_s_rule_and_the_checked_target():
    gate, listener = _gate()
    results = []
    sink = gate.subscribe(results.append)
    assert gate.submit(_request()) == {"requestId": "d-1", "status": "accepted"}
    (msg,) = listener.submitted
    assert msg["arguments"] == {"gracePeriodSeconds": 1, "port": 8080, "protocol": "tcp"}
    assert (msg["operation"], msg["violationId"]) == ("stop-listener", "v-1")
    assert results == [{"requestId": "d-1", "status": "SUCCEEDED"}]
    sink.close()
    gate.submit(_request(port=8081, requestId="d-2"))
    assert len(results) == 1  # a closed sink hears nothing more


def test_no_listener_no_action():
    gate = G.MitigationGate(ConfigIpc(), observe=lambda *a: None, preflight=lambda *a: None)
    with pytest.raises(G.Refused, match="not running"):
        gate.submit(_request())


def test_rate_limits_are_a_s_own_and_read_from_the_same_configuration():
    now = [1000.0]
    ipc = ConfigIpc(detect={"Mitigation": {"Enabled": True, "MaxActionsPerHour": 2, "CooldownSeconds": 600,
                                           "Actions": {"P/b": RULE}}})
    gate, listener = _gate(ipc, clock=lambda: now[0])
    gate.submit(_request(port=1001, requestId="a"))
    with pytest.raises(G.Refused, match="CooldownSeconds"):
        gate.submit(_request(port=1001, requestId="b"))
    gate.submit(_request(port=1002, requestId="c"))
    with pytest.raises(G.Refused, match="MaxActionsPerHour"):
        gate.submit(_request(port=1003, requestId="d"))
    now[0] += 3601
    gate.submit(_request(port=1001, requestId="e"))
    assert [m["requestId"] for m in listener.submitted] == ["a", "c", "e"]


# -- observations: real sockets, real processes -----------------------------------------------------------------
def test_a_port_nobody_listens_on_is_refused():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening
        gate, listener = _gate(observe=G.observe_target)
        with pytest.raises(G.Refused, match=f"nothing listens on tcp port {port} now"):
            gate.submit(_request(port=port))
    assert listener.submitted == []


def test_a_listening_port_is_seen_and_a_protected_owner_refused_by_the_dry_run():
    # the owner is this test's child: a descendant of "process A" (this process), so protected
    code = ("import socket, time\ns = socket.socket()\ns.bind(('127.0.0.1', 0))\ns.listen()\n"
            "print(s.getsockname()[1], flush=True)\ntime.sleep(60)\n")
    victim = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        port = int(victim.stdout.readline())
        assert G.observe_target("stop-listener", {"port": port, "protocol": "tcp"}) is None
        assert "nothing listens on udp" in G.observe_target("stop-listener", {"port": port, "protocol": "udp"})
        gate, listener = _gate(observe=G.observe_target, preflight=G._preflight)
        with pytest.raises(G.Refused, match="protected"):
            gate.submit(_request(port=port))
        assert listener.submitted == [] and victim.poll() is None
    finally:
        victim.kill()
        victim.wait(10)


def test_block_ip_needs_an_established_peer_now():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    client = socket.create_connection(server.getsockname())
    peer, _ = server.accept()
    try:
        assert G.observe_target("block-ip", {"address": "127.0.0.1"}) is None
        why = G.observe_target("block-ip", {"address": "192.0.2.77"})
        assert "not the peer of an established connection" in why
    finally:
        for s in (peer, client, server):
            s.close()


def test_refusal_reasons_are_bounded_json_safe_strings():
    gate, _ = _gate()
    with pytest.raises(G.Refused) as exc:
        gate.submit(dict(_request(), **{"x" * 5000: 1}))
    assert len(str(exc.value)) < 600 and json.dumps(str(exc.value))


def test_a_flood_of_requests_is_cut_off_before_any_configuration_is_read():
    class CountingIpc(ConfigIpc):
        reads = 0

        def get_config(self, key_path=None, component=None):
            CountingIpc.reads += 1
            return super().get_config(key_path, component)

    gate, _ = _gate(CountingIpc(), observe=lambda op, target: "nothing listens")
    for i in range(G.MAX_CHECKS_PER_MINUTE):
        with pytest.raises(G.Refused, match="nothing listens"):
            gate.submit(_request(requestId=f"r{i}"))
    reads = CountingIpc.reads
    for _ in range(100):
        with pytest.raises(G.Refused, match="too many mitigation requests"):
            gate.submit(_request(requestId="one-more"))
    assert CountingIpc.reads == reads
