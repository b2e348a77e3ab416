"""Small builders shared by the detect unit tests."""

from __future__ import annotations

import os

from ggdefender.detect.profile import load_profile

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def profile(*behaviors, name="P", custom_types=None):
    return load_profile({"securityProfileName": name, "behaviors": list(behaviors)}, custom_types)


def behavior(metric, operator=None, value=None, name="b", **criteria):
    c = dict(criteria)
    if operator is not None:
        c["comparisonOperator"] = operator
    if value is not None:
        c["value"] = value
    return {"name": name, "metric": metric, "criteria": c}


def report(rid=1, ports=None, udp=None, remotes=None, packets_out=None, bytes_out=None, custom=None, est_total=None):
    metrics = {}
    if ports is not None:
        metrics["listening_tcp_ports"] = {"ports": [{"port": p} for p in ports], "total": len(ports)}
    if udp is not None:
        metrics["listening_udp_ports"] = {"ports": [{"port": p} for p in udp], "total": len(udp)}
    if remotes is not None or est_total is not None:
        est = {}
        if remotes is not None:
            est["connections"] = [{"remote_addr": r} for r in remotes]
        est["total"] = est_total if est_total is not None else len(remotes)
        metrics["tcp_connections"] = {"established_connections": est}
    if packets_out is not None or bytes_out is not None:
        ns = {}
        if packets_out is not None:
            ns["packets_out"] = packets_out
        if bytes_out is not None:
            ns["bytes_out"] = bytes_out
        metrics["network_stats"] = ns
    rep = {"header": {"report_id": rid, "version": "1.0"}, "metrics": metrics}
    if custom:
        rep["custom_metrics"] = custom
    return rep


class FakeIpc:
    """Records publishes; `fail` makes publishes raise (IPC down)."""

    def __init__(self):
        self.messages = []
        self.fail = False
        self.handlers = {}

    def publish_iot(self, topic, payload, qos=1):
        if self.fail:
            raise ConnectionError("connection closed")
        import json
        self.messages.append(("iot", topic, json.loads(payload)))

    def publish_local(self, topic, message):
        if self.fail:
            raise ConnectionError("connection closed")
        self.messages.append(("local", topic, message))

    def subscribe_local(self, topic, handler):
        self.handlers[topic] = handler

        class _Sub:
            def close(self_inner):
                self.handlers.pop(topic, None)
        return _Sub()

    # process B's private channel to process A (ipc_relay.RelayClient); `refuse` makes A's gate say no
    refuse = None

    def mitigate(self, request):
        if self.fail:
            raise ConnectionError("connection closed")
        self.messages.append(("relay", "mitigate", request))
        if self.refuse:
            from ggdefender.ipc_relay import MitigationRefused
            raise MitigationRefused(self.refuse)
        return {"requestId": request["requestId"], "status": "accepted"}

    def subscribe_mitigation(self, handler):
        return self.subscribe_local("mitigation", lambda topic, result: handler(result))

    def on(self, topic):
        return [m[2] for m in self.messages if m[1] == topic]
