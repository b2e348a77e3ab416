"""Fleet baselines (the ML Detect stand-in): the model file and its loader, the daily partials and training."""

import json
import math
import os
import random
from types import SimpleNamespace

import pytest

from ggdefender.detect.profile import load_profile
from ggdefender.detect.statistics import ML_BANDS, percentile
from ggdefender.fleet import baselines as B

PROFILE = load_profile({"securityProfileName": "Fleet", "behaviors": [
    {"name": "bytes-out-ml", "metric": "aws:all-bytes-out", "criteria": {"mlDetectionConfig": {"confidenceLevel": "LOW"}}},
    {"name": "bytes-out-ml-high", "metric": "aws:all-bytes-out",
     "criteria": {"mlDetectionConfig": {"confidenceLevel": "HIGH"}}},
    {"name": "temp-ml", "metric": "temperature", "criteria": {"mlDetectionConfig": {"confidenceLevel": "MEDIUM"}}},
    {"name": "ports", "metric": "aws:num-listening-tcp-ports",
     "criteria": {"comparisonOperator": "less-than", "value": {"count": 5}, "durationSeconds": 300}},
]})
DAY = "2026-12-01"
REL = B.RELATIVE_ACCURACY


def _days(last, n):
    return [B.add_days(last, -i) for i in range(n - 1, -1, -1)]


def _partial(day, values, key="aws:all-bytes-out@0"):
    p = B.DayPartial(day)
    for v in values:
        p.add(key, v)
    return p


def _values(rng, n):
    return [rng.lognormvariate(8, 1.5) for _ in range(n)]


def _close(approx, exact):
    return abs(approx - exact) <= REL * abs(exact) + 1e-12


# -- the model file and its loader ------------------------------------------------------------------------


def _trained(tmp_path, per_day=2000, days=14, **limits):
    rng = random.Random(7)
    state = str(tmp_path / "state")
    for d in _days(DAY, days):
        B.save_partial(state, _partial(d, _values(rng, per_day)))
    return state, B.build_model(PROFILE, DAY, B.load_partials(state, DAY), **limits)


def test_model_round_trip_and_the_loader_picks_the_newest_by_trained_at(tmp_path):
    state, doc = _trained(tmp_path)
    path = B.save_model(state, DAY, doc)
    models = B.load_latest(path)
    assert models.trained_at == B.day_start_ms(B.add_days(DAY, 1)) / 1000
    assert set(models.models) == {"Fleet/bytes-out-ml", "Fleet/bytes-out-ml-high", "Fleet/temp-ml"}
    low = doc["behaviors"]["Fleet/bytes-out-ml"]["bands"]["LOW"]
    assert models.band("Fleet/bytes-out-ml", "LOW") == tuple(low)
    assert models.status("Fleet/bytes-out-ml") == {"modelStatus": "ACTIVE", "datapoints": 28000, "days": 14}
    # a model file whose name says an older day but whose trainedAt is newer wins: trainedAt decides
    newer = dict(doc, trainedAt="2027-01-01T00:00:00Z")
    newer["behaviors"] = {k: dict(v, datapoints=1) for k, v in doc["behaviors"].items()}
    with open(os.path.join(state, "baselines-2020-01-01.json"), "w") as fh:
        json.dump(newer, fh)
    assert B.load_latest(state).status("Fleet/bytes-out-ml")["datapoints"] == 1
    assert B.load_latest(state).source.endswith("baselines-2020-01-01.json")


def test_a_missing_model_leaves_nothing_active(tmp_path):
    for path in (tmp_path / "nope.json", tmp_path):
        models = B.load_latest(str(path))
        assert models.trained_at is None
        assert models.band("Fleet/bytes-out-ml", "LOW") is None
        assert models.status("Fleet/bytes-out-ml") == {"modelStatus": "PENDING_BUILD", "datapoints": 0, "days": 0}


@pytest.mark.parametrize("change, problem", [
    (lambda d: "not json", "not a baselines model"),
    (lambda d: dict(d, format="ggdefender-fleet-baselines/9"), "format must be"),
    (lambda d: dict(d, trainedAt="yesterday"), "trainedAt must be a UTC time"),
    (lambda d: _band(d, "LOW", [5, 1]), "low 5.0 is above high 1.0"),
    (lambda d: _band(d, "LOW", [0, 1e300]), "LOW [0.0, 1e+300] is not inside MEDIUM"),
    (lambda d: _band(d, "HIGH", [0, float("nan")]), "bands.HIGH must be a finite number"),
    (lambda d: _behavior(d, bands=None), "bands must be an object"),
    (lambda d: _behavior(d, status="TRAINING"), "status must be ACTIVE or PENDING_BUILD"),
    (lambda d: _behavior(d, datapoints=-1), "datapoints must not be negative"),
])
def test_a_bad_model_file_is_an_error_naming_the_file_and_the_problem(tmp_path, change, problem):
    _, doc = _trained(tmp_path, per_day=200, min_datapoints=100)
    bad = change(doc)
    path = tmp_path / "baselines-2026-12-01.json"
    path.write_text(bad if isinstance(bad, str) else json.dumps(bad))
    for where in (path, tmp_path):
        with pytest.raises(B.BaselinesError) as err:
            B.load_latest(str(where))
        assert str(path) in str(err.value) and problem in str(err.value)


def test_a_model_file_larger_than_the_bound_is_refused(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(" " * (B.MAX_MODEL_BYTES + 1))
    with pytest.raises(B.BaselinesError, match="larger than"):
        B.load_latest(str(path))


def _behavior(doc, **fields):
    key = "Fleet/bytes-out-ml"
    return dict(doc, behaviors=dict(doc["behaviors"], **{key: dict(doc["behaviors"][key], **fields)}))


def _band(doc, level, pair):
    b = doc["behaviors"]["Fleet/bytes-out-ml"]
    return _behavior(doc, bands=dict(b["bands"], **{level: pair}))


# -- minimums ---------------------------------------------------------------------------------------------


def _model(partials, **limits):
    return B.build_model(PROFILE, DAY, {p.day: p for p in partials}, **limits)


def _status(doc, key="Fleet/bytes-out-ml"):
    return doc["behaviors"][key]["status"]


def test_pending_build_below_either_minimum_and_active_at_both():
    rng = random.Random(1)
    # AWS's defaults: 14 days and 25,000 datapoints
    at_min = [_partial(d, _values(rng, 25_000 // 14 + (1 if i < 25_000 % 14 else 0))) for i, d in enumerate(_days(DAY, 14))]
    assert sum(p.series["aws:all-bytes-out@0"].count for p in at_min) == 25_000
    doc = _model(at_min)
    assert _status(doc) == "ACTIVE" and doc["behaviors"]["Fleet/bytes-out-ml"]["datapoints"] == 25_000
    assert _status(doc, "Fleet/temp-ml") == "PENDING_BUILD"  # no datapoint of that metric
    one_short = at_min[:-1] + [_partial(DAY, _values(rng, at_min[-1].series["aws:all-bytes-out@0"].count - 1))]
    doc = _model(one_short)
    assert _status(doc) == "PENDING_BUILD" and doc["behaviors"]["Fleet/bytes-out-ml"]["bands"] is None
    thirteen_days = [_partial(d, _values(rng, 3000)) for d in _days(DAY, 13)]
    doc = _model(thirteen_days)
    assert _status(doc) == "PENDING_BUILD" and doc["behaviors"]["Fleet/bytes-out-ml"]["days"] == 13
    assert B.check_model(doc).band("Fleet/bytes-out-ml", "LOW") is None
    # both minimums are parameters
    assert _status(_model(thirteen_days, min_days=13, min_datapoints=39_000)) == "ACTIVE"
    assert _status(_model(thirteen_days, min_days=13, min_datapoints=39_001)) == "PENDING_BUILD"
    with pytest.raises(ValueError, match="min_days"):
        _model(thirteen_days, min_days=15)


# -- bands ------------------------------------------------------------------------------------------------


def test_bands_nest_low_in_medium_in_high_and_follow_the_devices_percentiles():
    rng = random.Random(3)
    per_day = [_values(rng, 3000) for _ in range(14)]
    doc = _model([_partial(d, v) for d, v in zip(_days(DAY, 14), per_day)])
    bands = B.check_model(doc)
    exact = sorted(v for day in per_day for v in day)
    low, med, high = (bands.band("Fleet/bytes-out-ml", c) for c in ("LOW", "MEDIUM", "HIGH"))
    assert high[0] <= med[0] <= low[0] < low[1] <= med[1] <= high[1]
    assert high == (exact[0], exact[-1])  # p0..p100 is exactly the fleet's min..max
    for level, (lo_q, hi_q) in ML_BANDS.items():
        lo, hi = bands.band("Fleet/bytes-out-ml", level)
        # the device's nearest-rank percentile and the sketch's rank differ by at most one datapoint
        for approx, q in ((lo, lo_q), (hi, hi_q)):
            rank = q / 100 * (len(exact) - 1)
            neighbours = [percentile(exact, q), exact[math.floor(rank)], exact[math.ceil(rank)]]
            assert any(_close(approx, e) for e in neighbours), (level, q, approx, neighbours)


def test_fourteen_merged_days_equal_one_pass_within_the_relative_accuracy():
    rng = random.Random(5)
    per_day = [_values(rng, 1500) for _ in range(14)]
    merged = B.Distribution()
    for d, values in zip(_days(DAY, 14), per_day):
        # each day goes through its file form, as the daily job reads it back
        merged.merge(B.DayPartial.from_json(json.loads(json.dumps(_partial(d, values).to_json())))
                     .series["aws:all-bytes-out@0"])
    one = B.Distribution()
    for values in per_day:
        for v in values:
            one.add(v)
    exact = sorted(v for values in per_day for v in values)
    assert (merged.count, merged.min, merged.max) == (one.count, exact[0], exact[-1])
    for q in (0.1, 1, 10, 50, 90, 99, 99.9):
        assert _close(merged.quantile(q), one.quantile(q))
        rank = q / 100 * (len(exact) - 1)  # DDSketch's rank: the value is that of its floor or ceiling
        assert any(_close(merged.quantile(q), exact[r]) for r in (math.floor(rank), math.ceil(rank)))


def test_a_fifteenth_day_drops_the_oldest():
    rng = random.Random(9)
    days = _days(DAY, 15)
    partials = [_partial(d, _values(rng, 2000)) for d in days]
    partials[0].add("aws:all-bytes-out@0", 1e12)  # only the oldest day saw this value
    doc = _model(partials, min_datapoints=1000)
    b = doc["behaviors"]["Fleet/bytes-out-ml"]
    assert b["datapoints"] == 14 * 2000 and b["days"] == 14
    assert b["bands"]["HIGH"][1] < 1e12
    assert doc["days"] == [days[1], DAY]
    day_before = B.build_model(PROFILE, days[13], {p.day: p for p in partials}, min_datapoints=1000)
    assert day_before["behaviors"]["Fleet/bytes-out-ml"]["bands"]["HIGH"][1] == 1e12


# -- the day's partial from reports, and the state directory ----------------------------------------------


def _report(thing, at_ms, report_id, **metrics):
    return SimpleNamespace(thing=thing, at_ms=at_ms, report_id=report_id, metrics=metrics)


def test_a_day_counts_each_report_once_and_only_its_own_reports():
    start = B.day_start_ms(DAY)
    reports = [_report("a", start, 1, **{"aws:all-bytes-out": 10, "temperature": 20.5}),
               _report("a", start, 1, **{"aws:all-bytes-out": 10, "temperature": 20.5}),  # a duplicate
               _report("b", start + 5, 1, **{"aws:all-bytes-out": 30}),  # same id, another thing
               _report("b", start + 6, 2, **{"temperature": "warm"}),    # not a number: no datapoint
               _report("b", start - 1, 3, **{"aws:all-bytes-out": 99}),  # the day before
               _report("b", start + B.DAY_MS, 4, **{"aws:all-bytes-out": 99})]  # the day after
    part = B.compute_day(DAY, B.series_of(PROFILE), reports)
    assert part.counts == {"reports": 3, "otherDays": 2, "duplicates": 1}
    assert part.series["aws:all-bytes-out@0"].count == 2 and part.series["aws:all-bytes-out@0"].max == 30
    assert part.series["temperature@0"].count == 1
    assert "aws:num-listening-tcp-ports@0" not in part.series  # a static behavior has no model


def test_a_rerun_of_a_day_gives_the_same_model_and_old_files_are_pruned(tmp_path):
    state = str(tmp_path / "state")
    rng = random.Random(11)
    for d in _days(B.add_days(DAY, -1), 40):
        B.save_partial(state, _partial(d, _values(rng, 100)))
    values = _values(rng, 500)
    path, doc = B.train(state, PROFILE, _partial(DAY, values), min_datapoints=10)
    first = open(path, "rb").read()
    path2, doc2 = B.train(state, PROFILE, _partial(DAY, values), min_datapoints=10)
    assert path2 == path and open(path, "rb").read() == first and doc2 == doc
    assert doc["behaviors"]["Fleet/bytes-out-ml"]["datapoints"] == 13 * 100 + 500
    kept = sorted(os.listdir(os.path.join(state, "days")))
    assert kept[0] == B.add_days(DAY, -B.KEEP_DAYS) + ".json" and kept[-1] == DAY + ".json"


@pytest.mark.parametrize("change, problem", [
    (lambda s: dict(s, datapoints=s["datapoints"] + 1), "the bins hold"),
    (lambda s: dict(s, positive=[[10 ** 9, 1]]), "positive[0] must be [key"),
    (lambda s: dict(s, positive=[[1, 1]] * (B.BIN_LIMIT + 1)), "more than 2048 bins"),
    (lambda s: dict(s, min=s["max"] + 1), "is above max"),
])
def test_a_bad_partial_is_an_error_naming_the_file_and_the_problem(tmp_path, change, problem):
    state = str(tmp_path)
    doc = _partial(DAY, [1.0, 2.0, 3.0]).to_json()
    s = doc["series"]["aws:all-bytes-out@0"]
    doc["series"]["aws:all-bytes-out@0"] = change(s)
    os.makedirs(os.path.join(state, "days"))
    with open(B.partial_path(state, DAY), "w") as fh:
        json.dump(doc, fh)
    with pytest.raises(B.BaselinesError) as err:
        B.load_partials(state, DAY)
    assert B.partial_path(state, DAY) in str(err.value) and problem in str(err.value)


# -- the batch job's pure parts and its command line (the Flink run itself: tests/integration/fleet) -------


def test_slot_counts_make_the_sketch_the_values_make():
    rng = random.Random(13)
    values = [rng.lognormvariate(2, 5) * rng.choice((-1, 0, 1)) for _ in range(20_000)]
    direct = B.Distribution()
    counts = {}
    for v in values:
        direct.add(v)
        counts[B.slot(v)] = counts.get(B.slot(v), 0) + 1
    assert B.Distribution.from_slots(sorted(counts.items()), min(values), max(values)).to_json() == direct.to_json()
    ordered = sorted(values)
    assert all(B.slot(a) <= B.slot(b) for a, b in zip(ordered, ordered[1:]))  # MAX(slot) is the slot of MAX(v)
    with pytest.raises(ValueError, match="not the batch job's"):
        B.Distribution.from_slots([(7, 1)], 0, 1)


def test_a_line_becomes_datapoint_rows_and_counter_rows():
    from ggdefender.fleet.baselines_job import parse_rows

    start = B.day_start_ms(DAY)
    series, types = B.series_of(PROFILE), B.custom_types_of(PROFILE)
    line = json.dumps({"header": {"report_id": 5, "version": "1.0"}, "thingName": "gw-1", "receivedAt": start + 9,
                       "metrics": {"network_stats": {"bytes_out": 1200}},
                       "custom_metrics": {"temperature": [{"number": -3.5}]}})
    rows = parse_rows(line, series, types, start)
    assert rows[0] == ("gw-1", "5", "#report", 0, 0.0)
    assert sorted(rows[1:]) == [("gw-1", "5", "aws:all-bytes-out@0", B.slot(1200.0), 1200.0),
                                ("gw-1", "5", "temperature@0", B.slot(-3.5), -3.5)]
    assert parse_rows(line, series, types, start + B.DAY_MS) == [("gw-1", "5", "#otherDay", 0, 0.0)]
    [(example, rid, kind, _, _)] = parse_rows("[1]", series, types, start)
    assert kind == "#rejected:not-json" and "not a JSON object" in example and rid


def test_the_application_properties_become_the_commands_arguments(tmp_path):
    from ggdefender.fleet.baselines_job import properties_argv

    path = tmp_path / "application_properties.json"
    assert properties_argv(str(path)) is None
    path.write_text(json.dumps([{"PropertyGroupId": "FleetBaselines", "PropertyMap": {
        "Profile": "/p.json", "Input": "s3://b/reports/2026/12/01/, s3://b/reports/2026/12/02/00/",
        "State": "/state", "MinDays": "14"}}]))
    assert properties_argv(str(path)) == ["--profile", "/p.json", "--input", "s3://b/reports/2026/12/01/",
                                          "s3://b/reports/2026/12/02/00/", "--state", "/state", "--min-days", "14"]
    path.write_text(json.dumps([{"PropertyGroupId": "FleetBaselines", "PropertyMap": {"Profil": "x"}}]))
    with pytest.raises(ValueError, match="unknown FleetBaselines properties Profil"):
        properties_argv(str(path))


@pytest.mark.parametrize("extra, problem", [
    (["--day", "2026-13-01"], "a day must be YYYY-MM-DD"),
    (["--min-days", "15"], "--min-days must be 1..14"),
    (["--min-datapoints", "0"], "--min-datapoints must be at least 1"),
    (["--input", "/nonexistent/reports"], "--input /nonexistent/reports: no such file or directory"),
    (["--input", "/nonexistent/day={day}/"], f"--input /nonexistent/day={DAY}/: no such file"),
    (["--profile", "static"], "no ML behavior"),
    (["--profile", "invalid"], "mlDetectionConfig.confidenceLevel"),
    (["--state", "bad-partial"], "not a day's partial"),
])
def test_the_command_refuses_bad_input_with_exit_2_naming_the_problem(tmp_path, capsys, extra, problem):
    from ggdefender import cli

    profiles = {"good": PROFILE.source, "static": {"securityProfileName": "S", "behaviors": [PROFILE.source["behaviors"][3]]},
                "invalid": {"securityProfileName": "S", "behaviors": [
                    {"name": "m", "metric": "aws:all-bytes-out", "criteria": {"mlDetectionConfig": {}}}]}}
    for name, doc in profiles.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(doc))
    (tmp_path / "in.jsonl").write_text("")
    os.makedirs(tmp_path / "bad-partial" / "days")
    (tmp_path / "bad-partial" / "days" / f"{DAY}.json").write_text("{}")
    args = {"--profile": "good", "--input": str(tmp_path / "in.jsonl"), "--state": "state", "--day": DAY}
    for i in range(0, len(extra), 2):
        args[extra[i]] = extra[i + 1]
    for opt in ("--profile",):
        args[opt] = str(tmp_path / f"{args[opt]}.json")
    args["--state"] = str(tmp_path / args["--state"])
    argv = ["fleet", "baselines"] + [x for kv in args.items() for x in kv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert problem in err and err.startswith("ggdefender fleet baselines: ")
    assert not os.path.exists(tmp_path / "state")  # nothing half-done


def test_the_state_and_the_models_can_live_in_s3(monkeypatch):
    import boto3
    from moto import mock_aws

    for name, value in (("AWS_DEFAULT_REGION", "eu-west-1"), ("AWS_ACCESS_KEY_ID", "testing"),
                        ("AWS_SECRET_ACCESS_KEY", "testing")):
        monkeypatch.setenv(name, value)
    rng = random.Random(17)
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="fleet", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        state = "s3://fleet/baselines"
        for d in _days(B.add_days(DAY, -1), B.KEEP_DAYS + 2):
            B.save_partial(state, _partial(d, _values(rng, 50)))
        path, doc = B.train(state, PROFILE, _partial(DAY, _values(rng, 100)), min_datapoints=10)
        assert path == "s3://fleet/baselines/baselines-2026-12-01.json"
        assert doc["behaviors"]["Fleet/bytes-out-ml"]["datapoints"] == 13 * 50 + 100
        for where in (state, path, state + "/"):
            assert B.load_latest(where).band("Fleet/bytes-out-ml", "LOW") == tuple(doc["behaviors"]["Fleet/bytes-out-ml"]["bands"]["LOW"])
        assert B.load_latest(state + "/baselines-2020-01-01.json").trained_at is None  # missing: nothing active
        days = [o["Key"] for o in s3.list_objects_v2(Bucket="fleet", Prefix="baselines/days/")["Contents"]]
        assert days[0] == f"baselines/days/{B.add_days(DAY, -B.KEEP_DAYS)}.json" and len(days) == B.KEEP_DAYS + 1
        s3.put_object(Bucket="fleet", Key="baselines/baselines-2026-12-02.json", Body=b"{}")
        with pytest.raises(B.BaselinesError, match=r"s3://fleet/baselines/baselines-2026-12-02.json: not a baselines model"):
            B.load_latest(state)


def test_the_docs_model_example_is_a_model_the_loader_takes():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[3] / "docs" / "fleet.md").read_text()
    section = text[text.index("## Baselines (the ML Detect stand-in)"):]
    block = section[section.index('```json\n{"format": "ggdefender-fleet-baselines/1"') + 8:]
    models = B.check_model(json.loads(block[:block.index("```")]))
    assert models.band("FleetExample/ml-bytes-out", "MEDIUM") == (7301.9, 70411.6)
    assert models.status("FleetExample/ml-bytes-out")["modelStatus"] == "ACTIVE"
    for option in ("--profile", "--input", "--state", "--day", "--min-datapoints", "--min-days"):
        assert option in section
    from ggdefender.fleet.baselines_job import PROPERTY_KEYS
    assert all(f"`{key}`" in section for key in PROPERTY_KEYS)


def test_the_trainer_folds_the_jobs_rows_in_any_order_into_the_days_partial():
    from ggdefender.fleet.baselines_job import PartialBuilder

    rng = random.Random(19)
    values = {"aws:all-bytes-out@0": _values(rng, 3000), "temperature@0": [rng.gauss(0, 9) for _ in range(3000)]}
    rows = [{"kind": "count", "series": "#report", "n": 3010, "uniq": 3000, "example": "gw-1"},
            {"kind": "count", "series": "#otherDay", "n": 4, "uniq": 4, "example": "gw-2"},
            {"kind": "count", "series": "#rejected:not-json", "n": 2, "uniq": 1, "example": "not-json: ..."}]
    for key, vs in values.items():
        by_slot = {}
        for v in vs:
            by_slot.setdefault(B.slot(v), []).append(v)
        rows += [{"kind": "slot", "series": key, "slot": s, "n": len(x), "lo": min(x), "hi": max(x)}
                 for s, x in by_slot.items()]
    rng.shuffle(rows)
    builder = PartialBuilder(DAY)
    for r in rows:
        builder.add(json.loads(json.dumps(r)))
    expected = B.DayPartial(DAY)
    for key, vs in values.items():
        for v in vs:
            expected.add(key, v)
    assert builder.partial.to_json()["series"] == expected.to_json()["series"]
    assert builder.partial.counts == {"reports": 3000, "duplicates": 10, "otherDays": 4,
                                      "rejected": {"not-json": {"lines": 2, "example": "not-json: ..."}}}
