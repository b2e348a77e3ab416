"""Small builders shared by the detect unit tests."""

from __future__ import annotations

import os

from fake_ipc import FakeIpc  # noqa: F401  (the shared fake IPC, imported by the detect tests from here)
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
