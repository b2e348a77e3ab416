"""simulate -> `ggdefender fleet run` (one real Flink run): the job finds every injected anomaly on its thing and
metric, and nothing else, except the statistical behavior's rank tail (the devices above the fleet's p99, which
that behavior flags by definition), which stays within what the rank allows."""

import json
import subprocess
import sys
from pathlib import Path

import pytest


pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
PROFILE = REPO / "docs" / "examples" / "fleet-profile.json"
DEVICES, REPORTS = 200, 6
ANOMALIES = ["thing-042@10m:listening-port=8888", "thing-117@5m+10m:bytes-out=x50",
             "thing-003@0m+15m:connections=+40", "thing-150@5m+10m:connections=+300", "thing-009@10m:stop"]



def _run(*argv, timeout=600):
    done = subprocess.run([sys.executable, "-m", "ggdefender", "fleet", *argv], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_simulated_anomalies_are_found_and_nothing_else(tmp_path):
    reports, truth_path = tmp_path / "reports.jsonl", tmp_path / "truth.json"
    args = ["simulate", "--devices", str(DEVICES), "--reports-per-device", str(REPORTS), "--start",
            "2026-01-01T00:00:00Z", "--seed", "5", "--duplicates", "0.01", "--out", str(reports),
            "--truth", str(truth_path)]
    for a in ANOMALIES:
        args += ["--anomaly", a]
    _run(*args)
    truth = json.loads(truth_path.read_text())
    # the allow-list holds the simulated image's own ports (this machine's), as an operator lists their image's
    doc = json.loads(PROFILE.read_text())
    doc["behaviors"] = [b for b in doc["behaviors"] if "mlDetectionConfig" not in b["criteria"]]  # no model here
    allow = next(b for b in doc["behaviors"] if b["name"] == "listening-ports")["criteria"]["value"]
    allow["ports"] = sorted(set(allow["ports"]) | set(truth["fleet"]["listeningTcpPorts"]))
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps(doc))
    out = tmp_path / "violations.jsonl"
    _run("run", "--profile", str(profile), "--input", str(reports), "--out", str(out), "--parallelism", "1")

    stats = json.loads(Path(str(out) + ".stats.json").read_text())
    assert stats["records"] == truth["lines"]
    alarms = [v for v in map(json.loads, out.read_text().splitlines()) if v["violationEventType"] == "in-alarm"]
    metric = {b["name"]: b["metric"] for b in doc["behaviors"]}
    window = 300_000
    expected = set()
    for a in truth["anomalies"]:
        if a["kind"] == "stop":
            assert not [v for v in alarms if v["thingName"] == a["thingName"]], "a device that stops is no violation"
            continue
        hits = {v["behavior"]["name"] for v in alarms if v["thingName"] == a["thingName"]
                and metric[v["behavior"]["name"]] in a["metrics"]
                and a["from"] <= v["violationEventTime"] * 1000 <= a["to"] + 2 * window}
        assert hits, f"{a['spec']} was not found"
        expected.add(a["thingName"])
    by_thing = {}
    for v in alarms:
        by_thing.setdefault(v["behavior"]["name"], set()).add(v["thingName"])
    # the per-device rules fire on the anomalous devices only
    assert by_thing.get("listening-ports") == {"thing-042"}
    assert by_thing.get("connections") == {"thing-003", "thing-150"}
    assert by_thing.get("message-size") == {"thing-150"}  # +300 connections: a report over 16 KiB
    # bytes out above the fleet's p99: the x50 device, plus at most the 1 % above the rank in each window
    stat = [v for v in alarms if v["behavior"]["name"] == "bytes-out-p99"]
    assert "thing-117" in {v["thingName"] for v in stat}
    windows = REPORTS + 1
    assert len([v for v in stat if v["thingName"] != "thing-117"]) <= windows * (DEVICES // 100)
