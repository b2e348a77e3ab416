"""The streaming job on a REAL local Flink mini-cluster (`ggdefender fleet run`): its violations equal the pure
evaluation's (fleet/evaluation.py) on the same input, with late, duplicate and unreadable reports and a device
that stops while in alarm; and a job killed mid-input and restarted from its retained checkpoint writes the
same violations as one that ran through."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ggdefender.detect.profile import load_profile
from ggdefender.fleet.evaluation import evaluate
from ggdefender.fleet.run_cli import finished_lines

pytestmark = pytest.mark.integration

T0 = 1_764_000_000_000 - 1_764_000_000_000 % 3_600_000
HOUR = 3_600_000
DEVICES = 20
PROFILE = {"securityProfileName": "Fleet", "behaviors": [
    {"name": "bytes-p90", "metric": "aws:all-bytes-out",
     "criteria": {"comparisonOperator": "less-than-equals", "statisticalThreshold": {"statistic": "p90"},
                  "durationSeconds": 300}},
    {"name": "conns", "metric": "aws:num-established-tcp-connections",
     "criteria": {"comparisonOperator": "less-than", "value": {"count": 10}, "durationSeconds": 300,
                  "consecutiveDatapointsToAlarm": 2, "consecutiveDatapointsToClear": 2}},
    {"name": "ports", "metric": "aws:listening-tcp-ports",
     "criteria": {"comparisonOperator": "in-port-set", "value": {"ports": [22]}}},
    {"name": "msgs", "metric": "aws:num-messages-sent",
     "criteria": {"comparisonOperator": "less-than-equals", "value": {"count": 1}, "durationSeconds": 300}}]}



def line(thing, at, *, rid=None, bytes_out=None, conns=1, ports=(22,), i=0):
    report = {"header": {"report_id": rid if rid is not None else at, "version": "1.0"},
              "metrics": {"network_stats": {"bytes_in": 1, "bytes_out": bytes_out or 1000 + i % 3,
                                            "packets_in": 1, "packets_out": 1},
                          "listening_tcp_ports": {"ports": [{"port": p} for p in ports], "total": len(ports)},
                          "tcp_connections": {"established_connections": {"connections": [], "total": conns}}}}
    return json.dumps(dict(report, thingName=thing, receivedAt=at))


def fleet_lines(steps):
    """Hourly reports of 20 devices (each in its own second of the same 5-minute window): d03 sends 10^7 bytes
    in hours 5-8 (above the fleet's p90), d05 keeps 20 connections from hour 4, d07 listens on 8888 from hour 10
    and stops reporting at hour 12 (in alarm: invalidated two days later, while the others go on)."""
    out = []
    for s in steps:
        for i in range(DEVICES):
            if i == 7 and s >= 12:
                continue
            at = T0 + s * HOUR + i * 1000
            out.append(line(f"d{i:02d}", at, i=i, bytes_out=10**7 if i == 3 and 5 <= s <= 8 else None,
                            conns=20 if i == 5 and s >= 4 else 1, ports=(22, 8888) if i == 7 and s >= 10 else (22,)))
    return out


def troubles(lines):
    """A duplicate (same report id again), a report three hours late, two unreadable lines, and two devices'
    reports swapped within the allowed lateness."""
    lines = list(lines)
    dup = next(n for n, ln in enumerate(lines) if json.loads(ln)["receivedAt"] == T0 + 20 * HOUR + 1000)
    lines.insert(dup + 5, lines[dup])
    late = next(n for n, ln in enumerate(lines) if json.loads(ln)["receivedAt"] == T0 + 30 * HOUR + 2000)
    moved = lines.pop(late)
    lines.insert(late + 3 * DEVICES, moved)
    a = next(n for n, ln in enumerate(lines) if json.loads(ln)["receivedAt"] == T0 + 40 * HOUR + 10_000)
    lines[a], lines[a + 1] = lines[a + 1], lines[a]
    lines.insert(100, "not json")
    lines.insert(200, line("bad/thing", T0 + 9 * HOUR))
    return lines


def fleet_run(tmp_path, *args, timeout=240):
    cmd = [sys.executable, "-m", "ggdefender", "fleet", "run", "--profile", str(tmp_path / "profile.json"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=tmp_path)


def normalized(events):
    return sorted(json.dumps(e, sort_keys=True) for e in events)


def test_the_jobs_violations_equal_the_pure_evaluation_with_late_duplicate_bad_and_stopped(tmp_path):
    (tmp_path / "profile.json").write_text(json.dumps(PROFILE))
    lines = troubles(fleet_lines(range(62)))   # 2.5 days
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    proc = fleet_run(tmp_path, "--input", "in.jsonl", "--out", "v.jsonl", "--parallelism", "2",
                     "--allowed-lateness", "60")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "fleet run: " in proc.stderr and "records" in proc.stderr   # progress while it ran
    got = [json.loads(ln) for ln in (tmp_path / "v.jsonl").read_text().splitlines()]
    want, counts = evaluate(lines, load_profile(PROFILE).behaviors, lateness_ms=60_000)
    assert normalized(got) == normalized(want)
    stats = json.loads((tmp_path / "v.jsonl.stats.json").read_text())
    assert (stats["records"], stats["parsed"], stats["duplicates"], stats["late"], stats["datapoints"]) == \
        (counts.records, counts.parsed, 1, 1, counts.datapoints)
    assert stats["rejected"] == {"not-json": 1, "bad-thing": 1} == counts.rejected
    dropped = [json.loads(ln) for ln in (tmp_path / "v.jsonl.dropped.jsonl").read_text().splitlines()]
    assert sorted(d["dropped"] for d in dropped) == ["duplicate", "late", "rejected", "rejected"]
    kinds = {(e["thingName"], e["behavior"]["name"], e["violationEventType"], e["violationEventTime"]) for e in got}
    assert ("d03", "bytes-p90", "in-alarm", (T0 + 5 * HOUR + 300_000) / 1000) in kinds
    assert ("d03", "bytes-p90", "alarm-cleared", (T0 + 9 * HOUR + 300_000) / 1000) in kinds
    stopped = [e for e in got if e["thingName"] == "d07" and e["violationEventType"] == "alarm-invalidated"]
    assert [(e["violationEventTime"], e["reason"]) for e in stopped] == \
        [((T0 + 11 * HOUR + 7000) / 1000 + 172_800, "no datapoint for more than 2 days")]
    # nobody else breaks the fleet's p90, and the swapped reports changed nothing
    assert {e["thingName"] for e in got if e["behavior"]["name"] == "bytes-p90"} == {"d03"}


def _wait_for(what, check, deadline_s, proc):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        assert proc.poll() is None, f"the job ended while waiting for {what}: {proc.stderr.read()[-3000:]}"
        time.sleep(0.5)
    pytest.fail(f"no {what} within {deadline_s} s")


def _completed_checkpoints(ck):
    return sorted(str(p.parent) for p in (ck / "checkpoints").glob("*/chk-*/_metadata"))


def test_a_job_killed_and_restarted_from_its_checkpoint_writes_what_an_uninterrupted_run_does(tmp_path):
    (tmp_path / "profile.json").write_text(json.dumps(PROFILE))
    inputs, ck = tmp_path / "in", tmp_path / "ck"
    inputs.mkdir()
    first, second = fleet_lines(range(0, 30)), fleet_lines(range(30, 62))
    (inputs / "part-1.jsonl").write_text("\n".join(first) + "\n")
    args = ["--input", "in", "--follow", "1", "--checkpoint-dir", "ck", "--checkpoint-interval", "1",
            "--allowed-lateness", "60"]
    cmd = [sys.executable, "-m", "ggdefender", "fleet", "run", "--profile", "profile.json"]
    want, _ = evaluate(first + second, load_profile(PROFILE).behaviors, lateness_ms=60_000,
                       watermark_ms=json.loads(second[-1])["receivedAt"] - 60_000 - 1)
    part_one, _ = evaluate(first, load_profile(PROFILE).behaviors, lateness_ms=60_000,
                           watermark_ms=json.loads(first[-1])["receivedAt"] - 60_000 - 1)
    assert 0 < len(part_one) < len(want)
    committed = lambda: finished_lines(str(ck / "output" / "violations"))  # noqa: E731

    # run 1: the first half, then killed (no clean stop) once a checkpoint holds its output
    proc = subprocess.Popen(cmd + args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _wait_for("the first half's violations, committed", lambda: len(committed()) >= len(part_one), 120, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    assert _completed_checkpoints(ck)
    # run 2: restarted from the retained checkpoint, while the second half arrives
    (inputs / "part-2.jsonl").write_text("\n".join(second) + "\n")
    proc = subprocess.Popen(cmd + args + ["--from-checkpoint", "ck/checkpoints"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _wait_for("every violation, committed", lambda: len(committed()) >= len(want), 120, proc)
        time.sleep(3)  # a few more checkpoints: nothing further may come
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    got = [json.loads(ln) for ln in committed()]
    assert normalized(got) == normalized(want)
