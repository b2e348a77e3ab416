"""`ggdefender fleet baselines` (one real Flink batch run): the day's partial the job writes is the one the pure
computation makes from the same lines (plain and gzipped files; duplicates once, other days and bad lines
counted, not used), merged with the 13 days before it into a model that `load_latest` serves."""

import gzip
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from ggdefender.detect.profile import load_profile
from ggdefender.fleet import baselines as B
from ggdefender.fleet.records import RecordError, parse_line

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
DAY = "2026-12-01"
PROFILE_DOC = {"securityProfileName": "Baselines", "behaviors": [
    {"name": "ml-bytes-out", "metric": "aws:all-bytes-out", "criteria": {"mlDetectionConfig": {"confidenceLevel": "LOW"}}},
    {"name": "ml-size", "metric": "aws:message-byte-size", "criteria": {"mlDetectionConfig": {"confidenceLevel": "HIGH"}}},
    {"name": "ml-temperature", "metric": "temperature", "criteria": {"mlDetectionConfig": {"confidenceLevel": "MEDIUM"}}},
]}
DEVICES, REPORTS = 60, 24



def _line(rng, thing, at_ms, rid):
    report = {"header": {"report_id": rid, "version": "1.0"},
              "metrics": {"network_stats": {"bytes_out": int(rng.lognormvariate(9, 1.2)), "bytes_in": 100,
                                            "packets_out": 3, "packets_in": 3}},
              "custom_metrics": {"temperature": [{"number": round(rng.gauss(-2.0, 6.0), 2)}]}}
    return json.dumps(dict(report, thingName=thing, receivedAt=at_ms))


def _lines(rng):
    start = B.day_start_ms(DAY)
    out = []
    for d in range(DEVICES):
        for k in range(REPORTS):
            at = start + k * 3_600_000 + d * 1000
            out.append(_line(rng, f"thing-{d:03d}", at, at - 5))
    out += rng.sample(out, 30)  # delivered twice
    out.append(_line(rng, "thing-000", start - 1, start - 10))  # the day before
    out.append(_line(rng, "thing-000", start + B.DAY_MS, start + B.DAY_MS - 10))  # the day after
    out += ["not json", json.dumps({"thingName": "bad/name", "receivedAt": start, "header": {"report_id": 1}})]
    rng.shuffle(out)
    return out


def _pure(lines, series, types):
    reports = []
    for line in lines:
        try:
            reports.append(parse_line(line, types))
        except RecordError:
            pass
    return B.compute_day(DAY, series, reports)


def test_the_flink_job_makes_the_pure_partial_and_the_model_of_14_days(tmp_path):
    rng = random.Random(14)
    profile = load_profile(PROFILE_DOC)
    series, types = B.series_of(profile), B.custom_types_of(profile)
    state = tmp_path / "state"
    for i in range(1, 14):  # the 13 days before, as earlier runs left them
        day = B.add_days(DAY, -i)
        start = B.day_start_ms(day)
        B.save_partial(str(state), B.compute_day(day, series, [
            parse_line(_line(rng, f"thing-{d:03d}", start + d * 1000, start + d), types) for d in range(100)]))
    lines = _lines(rng)
    (tmp_path / "in").mkdir()
    half = len(lines) // 2
    (tmp_path / "in" / "part-1.jsonl").write_text("\n".join(lines[:half]) + "\n")
    # Firehose's output is gzipped (.gz): Flink's file source decompresses by the name
    (tmp_path / "in" / "part-2.jsonl.gz").write_bytes(gzip.compress(("\n".join(lines[half:]) + "\n").encode()))
    (tmp_path / "profile.json").write_text(json.dumps(PROFILE_DOC))
    done = subprocess.run(
        [sys.executable, "-m", "ggdefender", "fleet", "baselines", "--profile", str(tmp_path / "profile.json"),
         "--input", str(tmp_path / "in"), "--state", str(state), "--day", DAY, "--min-datapoints", "2000"],
        capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["input"]["reports"] == DEVICES * REPORTS and summary["input"]["duplicates"] == 30
    assert summary["input"]["otherDays"] == 2
    assert {k: v["lines"] for k, v in summary["input"]["rejected"].items()} == {"not-json": 1, "bad-thing": 1}
    assert "running" in done.stderr and "datapoints/s" in done.stderr

    written = B.read_partial(str(state), DAY)
    expected = _pure(lines, series, types)
    assert written.to_json()["series"] == expected.to_json()["series"]
    assert written.series["temperature@0"].min < 0  # negative values have their own bins
    models = B.load_latest(str(state))
    assert models.source == B.model_path(str(state), DAY)
    want = B.build_model(profile, DAY, B.load_partials(str(state), DAY), min_datapoints=2000)
    assert json.loads(Path(models.source).read_text()) == want
    for key in ("Baselines/ml-bytes-out", "Baselines/ml-size", "Baselines/ml-temperature"):
        assert models.status(key) == {"modelStatus": "ACTIVE", "datapoints": 13 * 100 + DEVICES * REPORTS, "days": 14}
        lo, hi = models.band(key, "LOW")
        assert lo < hi

