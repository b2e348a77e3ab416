import json
import os

import pytest

from ggdefender.cli import main
from ggdefender.detect.profile import read_profile_file
from ggdefender.devtools.replay import ReplayError, load_records, replay, report_time
from ggdefender.detect.statistics import StatsConfig

from detect_helpers import FIXTURES

REPORTS = os.path.join(FIXTURES, "reports.jsonl")
SEED_000 = os.path.join(FIXTURES, "seed-000-listening-ports.json")
SEED_002 = os.path.join(FIXTURES, "seed-002-data-exfiltration.json")


def test_report_time_prefers_the_recorded_timestamp():
    rep = {"header": {"report_id": 1_764_000_000_123}}
    assert report_time({"receivedAt": 5.5, "report": rep}, rep) == 5.5
    assert report_time(rep, rep) == 1_764_000_000.123          # epoch milliseconds
    assert report_time({"header": {"report_id": 1_764_000_000}}, {"header": {"report_id": 1_764_000_000}}) == 1_764_000_000
    assert report_time({}, {"header": {"report_id": -3}}) is None


def test_replay_the_kept_reports_of_the_fixture():
    records = load_records(REPORTS)
    assert len(records) == 12 and records[0].thing == "fixtureThing"
    prof = read_profile_file(SEED_000)
    result = replay([prof], records)
    kinds = [(e["violationEventType"], e["violationEventTime"]) for e in result.events]
    start = 1764000000
    assert kinds == [("in-alarm", start + 1500 + 10.5), ("alarm-cleared", start + 2100 + 10.5)]
    assert result.events[0]["thingName"] == "fixtureThing" and result.events[0]["offendingValues"] == [8888]
    s = result.series["ExpectedListeners/UnexpectedTcpListener-High"]
    assert s.alarms == [[start + 1510.5, start + 2110.5, "alarm-cleared"]] and len(s.points) == 12


def test_replay_statistical_profile_with_short_warm_up():
    prof = read_profile_file(SEED_002)
    inverted = json.loads(open(SEED_002).read())
    inverted["behaviors"][0]["criteria"]["comparisonOperator"] = "less-than-equals"
    from ggdefender.detect.profile import load_profile
    fixed = load_profile(inverted)
    result = replay([fixed], load_records(REPORTS), stats=StatsConfig(warmup=5))
    (e,) = [e for e in result.events if e["violationEventType"] == "in-alarm"]
    assert e["metricValue"] == {"count": 5000}
    # the seed's own "greater-than p99.99" is evaluated as AWS documents it: normal means above the threshold
    seed = replay([prof], load_records(REPORTS), stats=StatsConfig(warmup=5))
    assert seed.events[0]["violationEventType"] == "in-alarm" and seed.events[0]["metricValue"]["count"] < 200


def test_folder_of_report_files_and_duplicates(tmp_path):
    lines = open(REPORTS).read().splitlines()
    for i, line in enumerate(lines[:6]):
        (tmp_path / f"r{i}.json").write_text(json.dumps(json.loads(line)["report"]))  # plain reports, report_id in ms
    (tmp_path / "dup.jsonl").write_text(lines[5] + "\n")                           # same report_id again
    records = load_records(str(tmp_path))
    assert len(records) == 6
    assert [r.at for r in records] == sorted(r.at for r in records)


def test_short_name_and_cbor_reports(tmp_path):
    import cbor2

    short = {"hed": {"rid": 1_764_000_000, "v": "1.0"}, "met": {"tp": {"pts": [{"pt": 8888}], "t": 1}}}
    (tmp_path / "a.cbor").write_bytes(cbor2.dumps(short))
    (records,) = [load_records(str(tmp_path))]
    assert records[0].report["metrics"]["listening_tcp_ports"]["ports"] == [{"port": 8888}]
    result = replay([read_profile_file(SEED_000)], records)
    assert result.events[0]["offendingValues"] == [8888]


def test_bad_input_is_reported(tmp_path):
    with pytest.raises(ReplayError, match="no such file"):
        load_records(str(tmp_path / "missing"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"report": {}}\nnot json\n')
    with pytest.raises(ReplayError, match="bad.jsonl:2: not JSON"):
        load_records(str(bad))


def test_cli_replay_prints_the_timeline_and_plots(tmp_path, capsys):
    out_png = tmp_path / "plot.png"
    assert main(["detect", "replay", "--profile", SEED_000, "--reports", REPORTS, "--plot", str(out_png)]) == 0
    text = capsys.readouterr().out
    assert "in-alarm" in text and "alarm-cleared" in text and "offending=[8888]" in text
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["detect", "replay", "--profile", SEED_000, "--reports", REPORTS, "--json"]) == 0
    events = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [e["violationEventType"] for e in events] == ["in-alarm", "alarm-cleared"]


def test_cli_validate(tmp_path, capsys):
    assert main(["detect", "validate", "--profile", SEED_002]) == 0
    assert "warning" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"securityProfileName": "B", "behaviors": [
        {"name": "x", "metric": "aws:listening-tcp-ports", "criteria": {"comparisonOperator": "less-than",
                                                                       "value": {"count": 1}}}]}))
    assert main(["detect", "validate", "--profile", str(bad)]) == 1
    assert "behaviors[0] (x).criteria.comparisonOperator" in capsys.readouterr().out
    assert main(["detect", "replay", "--profile", SEED_000, "--reports", str(tmp_path / "none")]) == 2
