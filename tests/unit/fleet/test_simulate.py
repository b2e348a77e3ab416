"""`ggdefender fleet simulate`: deterministic, schema-valid reports derived from real ones, anomalies exactly
where the ground truth says, bounds and bad specs refused with the problem named."""

import base64
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ggdefender.collector.schema import validate_report
from ggdefender.fleet import simulate as sim

REPO = Path(__file__).resolve().parents[3]
START = 1_767_225_600_000  # 2026-01-01T00:00:00Z

REAL = {"header": {"report_id": 1_767_225_000_000, "version": "1.0"},
        "metrics": {"listening_tcp_ports": {"ports": [{"port": 22, "interface": "eth0"},
                                                      {"port": 8443, "interface": "eth0"}], "total": 2},
                    "listening_udp_ports": {"ports": [{"port": 5353, "interface": "eth0"}], "total": 1},
                    "tcp_connections": {"established_connections": {"connections": [
                        {"remote_addr": "203.0.113.5:8883", "local_port": 40000, "local_interface": "eth0"},
                        {"remote_addr": "203.0.113.6:443", "local_port": 40001, "local_interface": "eth0"}],
                        "total": 2}},
                    "network_stats": {"bytes_in": 60000, "bytes_out": 30000, "packets_in": 150, "packets_out": 100}}}
REAL2 = json.loads(json.dumps(REAL))
REAL2["header"]["report_id"] += 300_000


def make_fleet(devices=50, reports=12, anomalies=(), **kw):
    tpl = sim.template_from_reports([REAL, REAL2])
    return sim.Fleet(devices=devices, reports_per_device=reports, interval=300, start_ms=START, seed=kw.pop("seed", 7),
                     template=tpl, anomalies=[sim.parse_anomaly(a, devices) for a in anomalies], **kw)


def run(fleet, delivery=None, validate="all"):
    out = io.BytesIO()
    res = sim.write(fleet, out, delivery, validate=validate)
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    return lines, sim.truth(fleet, res, delivery), out.getvalue()


def report_of(line):
    return {k: v for k, v in line.items() if k not in ("thingName", "receivedAt")}


def test_same_seed_same_output_other_seed_other_output():
    a = run(make_fleet(seed=3))[2]
    assert a == run(make_fleet(seed=3))[2]
    assert a != run(make_fleet(seed=4))[2]


def test_every_report_is_schema_valid_and_derived_from_the_template():
    lines, truth, _ = run(make_fleet(devices=30, reports=4))
    assert len(lines) == 120 == truth["reports"] == truth["validated"]
    for line in lines:
        assert validate_report(report_of(line)) == []
        m = line["metrics"]
        assert [p["port"] for p in m["listening_tcp_ports"]["ports"]] == [22, 8443]  # the template's image
        remotes = {c["remote_addr"] for c in m["tcp_connections"]["established_connections"]["connections"]}
        assert remotes & {"203.0.113.5:8883", "203.0.113.6:443"}
    # traffic at the template's rate (100 B/s out) within the device factor, diurnal cycle and jitter
    outs = [line["metrics"]["network_stats"]["bytes_out"] for line in lines]
    assert 300 * 100 * 0.6 * 0.6 * 0.85 <= min(outs) and max(outs) <= 300 * 100 * 1.4 * 1.4 * 1.15
    assert len(set(outs)) > 100  # devices differ


def test_ids_are_epoch_ms_and_increase_per_device_in_event_time_order():
    lines, truth, _ = run(make_fleet(devices=20, reports=6))
    last = {}
    ids = [line["header"]["report_id"] for line in lines]
    assert ids == sorted(ids) and ids[0] == START == truth["firstReport"]
    for line in lines:
        rid = line["header"]["report_id"]
        assert rid > last.get(line["thingName"], 0)
        assert rid + 50 <= line["receivedAt"] <= rid + 800
        last[line["thingName"]] = rid
    assert len(last) == 20 and all(t.startswith("thing-") for t in last)


def test_anomalies_appear_exactly_where_the_truth_says():
    specs = ["thing-42@20m:listening-port=8888", "thing-7@10m+15m:bytes-out=x50", "thing-3@30m:connections=+40"]
    lines, truth, _ = run(make_fleet(devices=50, reports=12, anomalies=specs))
    found = {"listening-port": [], "bytes-out": [], "connections": []}
    clean = [line["metrics"]["network_stats"]["bytes_out"] for line in lines if line["thingName"] != "thing-07"]
    for line in lines:
        m, rid = line["metrics"], line["header"]["report_id"]
        if any(p["port"] == 8888 for p in m["listening_tcp_ports"]["ports"]):
            found["listening-port"].append((line["thingName"], rid))
        if m["network_stats"]["bytes_out"] > 5 * max(clean):
            found["bytes-out"].append((line["thingName"], rid))
        if m["tcp_connections"]["established_connections"]["total"] >= 40:
            found["connections"].append((line["thingName"], rid))
    for a in truth["anomalies"]:
        hits = found[a["kind"]]
        assert {t for t, _ in hits} == {a["thingName"]}, a["spec"]
        assert len(hits) == a["reports"] > 0
        assert all(a["from"] <= rid < a["to"] for _, rid in hits)
        assert (min(r for _, r in hits), max(r for _, r in hits)) == (a["firstReport"], a["lastReport"])
    by_spec = {a["spec"]: a for a in truth["anomalies"]}
    assert by_spec["thing-7@10m+15m:bytes-out=x50"]["to"] - by_spec["thing-7@10m+15m:bytes-out=x50"]["from"] == 900_000
    assert by_spec["thing-7@10m+15m:bytes-out=x50"]["reports"] == 3  # 15 minutes of 5-minute reports
    assert by_spec["thing-42@20m:listening-port=8888"]["metrics"] == ["aws:listening-tcp-ports",
                                                                      "aws:num-listening-tcp-ports"]


def test_stop_means_no_reports_after_and_resume_after_its_duration():
    lines, truth, _ = run(make_fleet(devices=10, reports=12, anomalies=["thing-9@30m:stop", "thing-2@20m+10m:stop"]))
    stopped = {a["thingName"]: a for a in truth["anomalies"]}
    nine = [line["header"]["report_id"] for line in lines if line["thingName"] == "thing-9"]
    assert nine and max(nine) < stopped["thing-9"]["from"] and len(nine) == 6
    two = [line["header"]["report_id"] for line in lines if line["thingName"] == "thing-2"]
    assert len(two) == 10 and not [r for r in two if stopped["thing-2"]["from"] <= r < stopped["thing-2"]["to"]]
    assert truth["reports"] == 120 - 6 - 2 == len(lines)


def test_duplicates_and_late_deliveries():
    delivery = sim.Delivery(duplicates=0.1, late_fraction=0.1, late_seconds=600)
    lines, truth, _ = run(make_fleet(devices=40, reports=12), delivery)
    assert truth["duplicates"] > 0 and truth["late"] > 0
    assert len(lines) == truth["reports"] + truth["duplicates"]
    keys = [(line["thingName"], line["header"]["report_id"]) for line in lines]
    assert len(set(keys)) == truth["reports"]
    # a late report comes after reports up to 600 s newer than itself
    ids = [k[1] for k in keys]
    behind = max(max(ids[:i + 1]) - ids[i] for i in range(len(ids)))
    assert 590_000 <= behind <= 600_000


def test_cbor_lines_carry_the_report_as_base64_cbor():
    lines, _, _ = run(make_fleet(devices=3, reports=2, fmt="cbor"))
    import cbor2

    for line in lines:
        raw = base64.b64decode(line["report"])
        assert validate_report(raw, "cbor") == [] and "hed" in cbor2.loads(raw)
        assert set(line) == {"report", "thingName", "receivedAt"}


def test_template_from_a_local_rules_sink_file(tmp_path):
    sink = tmp_path / "messages.jsonl"
    payload = json.dumps(REAL, separators=(",", ":")).encode()
    sink.write_text(json.dumps({"receivedAt": 1767225000.1, "topic": "$aws/rules/r/things/t/defender/metrics/json",
                                "payloadBase64": base64.b64encode(payload).decode()}) + "\n")
    tpl = sim.template_from_reports(sim.read_reports(str(sink)))
    assert [p for p, _ in tpl.tcp] == [22, 8443] and len(tpl.connections) == 2
    assert tpl.rate_out == pytest.approx(30000 / 300)  # one report: its stats span the production 300 s


def test_template_from_this_machines_collector():
    reports = sim.collect_reports(window=0.2)
    assert all(validate_report(r) == [] for r in reports)
    tpl = sim.template_from_reports(reports)
    lines, _, _ = run(sim.Fleet(devices=5, reports_per_device=2, interval=300, start_ms=START, seed=1, template=tpl))
    assert all(validate_report(report_of(line)) == [] for line in lines)


@pytest.mark.parametrize("spec, words", [
    ("thing-42", "expected THING@TIME"),
    ("device-4@1h:stop", "must be thing-<number>"),
    ("thing-50@1h:stop", "not in a fleet of 50 devices"),
    ("thing-4@1x:stop", "not a duration"),
    ("thing-4@1h:teleport=3", "unknown kind 'teleport'"),
    ("thing-4@1h:listening-port=70000", "port must be 1..65535"),
    ("thing-4@1h:listening-port", "needs a value"),
    ("thing-4@1h:connections=x3", "connections takes +N"),
    ("thing-4@1h:bytes-out=x-2", "the amount must be > 0"),
    ("thing-4@1h:bytes-out=/2", "takes xFACTOR or +AMOUNT"),
    ("thing-4@1h:bytes-out=xabc", "'abc' is not a number"),
    ("thing-4@1h:stop=1", "stop takes no value"),
])
def test_bad_anomaly_specs_name_the_problem(spec, words):
    with pytest.raises(sim.SimulationError, match=re.escape(words)):
        sim.parse_anomaly(spec, 50)


def test_bounds_are_refused_with_the_problem_named():
    with pytest.raises(sim.SimulationError, match="--devices must be 1..10,000,000"):
        make_fleet(devices=10_000_001)
    with pytest.raises(sim.SimulationError, match="starts after the last report"):
        make_fleet(reports=2, anomalies=["thing-1@2h:stop"])
    with pytest.raises(sim.SimulationError, match="more than 30 days"):
        make_fleet(reports=10_000)
    with pytest.raises(sim.SimulationError, match="hold ~.* reports back at once"):
        sim.Delivery(late_fraction=1.0, late_seconds=86400).check(make_fleet(devices=10_000_000, reports=1))
    with pytest.raises(sim.SimulationError, match="not a valid Device Defender report"):
        sim.template_from_reports([{"header": {"report_id": -1, "version": "1.0"}, "metrics": {}}])


def test_cli_writes_lines_and_truth_and_refuses_bad_input(tmp_path):
    src = tmp_path / "real.json"
    src.write_text(json.dumps(REAL))
    out, truth = tmp_path / "r.jsonl", tmp_path / "t.json"
    cmd = [sys.executable, "-m", "ggdefender", "fleet", "simulate", "--from", str(src), "--devices", "20",
           "--hours", "1", "--start", "2026-01-01T00:00:00Z", "--anomaly", "thing-3@15m:listening-port=8888",
           "--out", str(out), "--truth", str(truth)]
    env = {"PYTHONPATH": str(REPO / "components"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "20 devices x 12 reports every 300 s = 240 reports" in done.stderr
    assert len(out.read_text().splitlines()) == 240
    assert json.loads(truth.read_text())["anomalies"][0]["thingName"] == "thing-03"
    bad = subprocess.run(cmd[:-4] + ["--anomaly", "thing-99@1h:stop", "--out", str(tmp_path / "x")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "thing-99 is not in a fleet of 20 devices" in bad.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.part").exists()
