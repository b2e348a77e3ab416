"""fleet/evaluation.py: the streaming job's logic, pure: windows, dedupe, lateness, fleet ranks, verdicts,
streaks, invalidation, deterministic violation ids."""

import json
import random

import pytest

from ggdefender.detect.profile import load_profile
from ggdefender.detect.statistics import percentile
from ggdefender.fleet import baselines
from ggdefender.fleet.evaluation import (DEFAULT_BUCKET_MS, INVALIDATE_AFTER_MS, Distribution, ThingAlarms,
                                         ThingWindows, evaluate, profile_fingerprint)
from ggdefender.fleet.records import parse_line

T0 = 1_764_000_000_000 - 1_764_000_000_000 % 3_600_000   # an hour boundary, epoch ms
MIN5 = 300_000


def profile(*behaviors):
    return load_profile({"securityProfileName": "Fleet", "behaviors": list(behaviors)}).behaviors


BYTES_P90 = {"name": "bytes-p90", "metric": "aws:all-bytes-out",
             "criteria": {"comparisonOperator": "less-than-equals", "statisticalThreshold": {"statistic": "p90"},
                          "durationSeconds": 300}}
CONNS = {"name": "conns", "metric": "aws:num-established-tcp-connections",
         "criteria": {"comparisonOperator": "less-than", "value": {"count": 10}, "durationSeconds": 300,
                      "consecutiveDatapointsToAlarm": 2, "consecutiveDatapointsToClear": 2}}
PORTS = {"name": "ports", "metric": "aws:listening-tcp-ports",
         "criteria": {"comparisonOperator": "in-port-set", "value": {"ports": [22]}}}
MSGS = {"name": "msgs", "metric": "aws:num-messages-sent",
        "criteria": {"comparisonOperator": "less-than-equals", "value": {"count": 1}, "durationSeconds": 300}}


def line(thing, at, *, rid=None, bytes_out=100, conns=1, ports=(22,)):
    report = {"header": {"report_id": rid if rid is not None else at, "version": "1.0"},
              "metrics": {"network_stats": {"bytes_in": 1, "bytes_out": bytes_out, "packets_in": 1, "packets_out": 1},
                          "listening_tcp_ports": {"ports": [{"port": p} for p in ports], "total": len(ports)},
                          "tcp_connections": {"established_connections": {"connections": [], "total": conns}}}}
    return json.dumps(dict(report, thingName=thing, receivedAt=at))


def kinds(events):
    return [(e["thingName"], e["behavior"]["name"], e["violationEventType"], e["violationEventTime"]) for e in events]


# -- windows ------------------------------------------------------------------------------------------------


def test_windows_sum_counters_keep_the_last_gauge_in_event_time_and_are_timed_at_their_end():
    bs = profile(BYTES_P90, CONNS)
    w = ThingWindows()
    # out of order within the lateness: LAST takes the latest EVENT time, not the last arrival
    for at, b, c in ((T0 + 10_000, 5, 3), (T0 + 200_000, 7, 9), (T0 + 100_000, 11, 4)):
        status, dps = w.add(parse_line(line("a", at, bytes_out=b, conns=c)), bs, 120_000)
        assert status == "ok" and dps == []
    status, dps = w.add(parse_line(line("a", T0 + MIN5 + 120_000, bytes_out=1, conns=1)), bs, 120_000)
    assert [(d.key, d.end_ms, d.t_ms, d.value) for d in dps] == [
        ("Fleet/bytes-p90", T0 + MIN5, T0 + MIN5, 23), ("Fleet/conns", T0 + MIN5, T0 + MIN5, 9)]


def test_a_duplicate_report_id_is_dropped_and_a_report_older_than_the_lateness_is_late():
    bs = profile(MSGS)
    w = ThingWindows()
    assert w.add(parse_line(line("a", T0 + 1000)), bs, 60_000)[0] == "ok"
    assert w.add(parse_line(line("a", T0 + 2000, rid=T0 + 1000)), bs, 60_000)[0] == "duplicate"
    assert w.add(parse_line(line("a", T0 + 200_000)), bs, 60_000)[0] == "ok"
    assert w.add(parse_line(line("a", T0 + 150_000)), bs, 60_000)[0] == "ok"       # within the lateness
    assert w.add(parse_line(line("a", T0 + 100_000)), bs, 60_000)[0] == "late"     # 100 s behind the newest
    assert w.add(parse_line(line("a", T0 + 190_000)), bs, 60_000, watermark_ms=T0 + 250_000)[0] == "late"
    _, dps = w.add(parse_line(line("a", T0 + MIN5 + 60_000)), bs, 60_000)
    assert [d.value for d in dps] == [3]   # aws:num-messages-sent: the three accepted reports of the window


def test_remembered_report_ids_are_bounded():
    from ggdefender.fleet.evaluation import MAX_IDS
    bs = profile(MSGS)
    w = ThingWindows()
    for i in range(MAX_IDS + 10):
        w.add(parse_line(line("a", T0 + i)), bs, 10**9)
    assert len(w.ids) == MAX_IDS


# -- fleet ranks -----------------------------------------------------------------------------------------------


def test_the_device_above_the_p90_of_the_fleet_violates_and_the_others_do_not():
    bs = profile(BYTES_P90)
    lines = [line(f"d{i:02d}", T0 + 1000 * i + k * MIN5, bytes_out=1000 + i % 3) for k in range(2) for i in range(20)]
    lines.insert(25, line("hog", T0 + MIN5 + 500, bytes_out=10**6))
    events, counts = evaluate(lines, bs, lateness_ms=60_000)
    in_alarm = [e for e in events if e["violationEventType"] == "in-alarm"]
    assert [(e["thingName"], e["violationEventTime"]) for e in in_alarm] == [("hog", (T0 + 2 * MIN5) / 1000)]
    # 21 devices in the second window (7 x 1000, 7 x 1001, 6 x 1002, hog): nearest rank ceil(0.9*21)=19
    assert in_alarm[0]["thresholdValue"] == 1002
    assert counts.datapoints == 41 and counts.parsed == 41


def test_the_exact_rank_is_the_devices_nearest_rank_percentile():
    rng = random.Random(7)
    values = [rng.randrange(0, 50) for _ in range(997)]
    d = Distribution()
    for v in values:
        d.add(v)
    for q in (0, 0.01, 0.1, 1, 10, 50, 90, 99, 99.9, 99.99, 100):
        assert d.statistic(f"p{q:g}", q) == percentile(sorted(values), q)
    assert not d.approximate
    assert d.statistic("Average", None) == pytest.approx(sum(values) / len(values))


def test_past_the_distinct_value_limit_ranks_are_approximate_within_the_sketch_accuracy():
    values = [float(i) for i in range(1, 5001)]
    parts = [Distribution(exact_limit=100) for _ in range(3)]
    for i, v in enumerate(values):
        parts[i % 3].add(v)
    merged = Distribution(exact_limit=100)
    for p in parts:
        merged.merge(p)
    assert merged.approximate and merged.n == 5000
    for q in (1, 10, 50, 90, 99):
        exact = percentile(values, q)
        assert abs(merged.statistic("p", q) - exact) <= exact * baselines.RELATIVE_ACCURACY + 1e-9
    assert merged.statistic("p", 100) == 5000 and merged.statistic("p", 0) == 1
    assert merged.statistic("Average", None) == pytest.approx(2500.5)


def test_a_negative_value_gives_no_threshold_as_aws_ranks_none():
    d = Distribution()
    d.add(-1.0)
    d.add(5.0)
    assert d.statistic("p50", 50) is None


def test_an_approximate_threshold_is_marked_on_the_event():
    bs = profile(BYTES_P90)
    lines = [line(f"d{i}", T0 + i, bytes_out=1000 + i) for i in range(50)] + [line("hog", T0 + 60, bytes_out=10**9)]
    exact = percentile(sorted([1000 + i for i in range(50)] + [10**9]), 90)
    events, _ = evaluate(lines, bs, lateness_ms=0, exact_limit=10)
    in_alarm = [e for e in events if e["violationEventType"] == "in-alarm"]
    assert "hog" in [e["thingName"] for e in in_alarm]
    assert all(e["thresholdApproximate"] is True for e in in_alarm)
    assert abs(in_alarm[0]["thresholdValue"] - exact) <= exact * baselines.RELATIVE_ACCURACY
    exact_events, _ = evaluate(lines, bs, lateness_ms=0)
    assert all("thresholdApproximate" not in e for e in exact_events)


# -- streaks, invalidation, profile changes, ids ---------------------------------------------------------------


def test_consecutive_datapoints_to_alarm_and_to_clear():
    bs = profile(CONNS)
    conns = [1, 20, 1, 20, 20, 20, 1, 20, 1, 1]   # one window each
    lines = [line("a", T0 + k * MIN5 + 1000, conns=c) for k, c in enumerate(conns)]
    events, _ = evaluate(lines, bs, lateness_ms=0)
    t = lambda k: (T0 + (k + 1) * MIN5) / 1000   # noqa: E731 (window k's end)
    assert kinds(events) == [("a", "conns", "in-alarm", t(4)), ("a", "conns", "alarm-cleared", t(9))]
    assert events[0]["violationStartTime"] == t(4) and events[1]["violationId"] == events[0]["violationId"]


def test_a_device_that_stops_has_its_alarm_invalidated_two_days_after_its_last_datapoint():
    bs = profile(PORTS)
    lines = [line("a", T0, ports=(22, 8888))]
    events, _ = evaluate(lines, bs, lateness_ms=0)
    assert kinds(events) == [("a", "ports", "in-alarm", T0 / 1000),
                             ("a", "ports", "alarm-invalidated", (T0 + INVALIDATE_AFTER_MS) / 1000)]
    assert events[1]["reason"] == "no datapoint for more than 2 days"


def test_a_device_back_after_three_days_first_has_its_stale_alarm_invalidated():
    bs = profile(PORTS)
    back = T0 + 3 * 86_400_000
    events, _ = evaluate([line("a", T0, ports=(22, 8888)), line("a", back, ports=(22, 9999))], bs, lateness_ms=0)
    assert [k[2:] for k in kinds(events)] == [("in-alarm", T0 / 1000),
                                              ("alarm-invalidated", (T0 + INVALIDATE_AFTER_MS) / 1000),
                                              ("in-alarm", back / 1000),
                                              ("alarm-invalidated", (back + INVALIDATE_AFTER_MS) / 1000)]
    assert events[0]["violationId"] != events[2]["violationId"]


def test_a_profile_changed_at_restart_invalidates_the_alarms_of_changed_and_removed_behaviors():
    old = profile(PORTS, CONNS)
    alarms = {}
    lines = [line("a", T0 + k * MIN5 + 1, conns=50, ports=(22, 8888)) for k in range(3)]
    evaluate(lines[:2], old, lateness_ms=0, alarms=alarms, watermark_ms=T0 + 3 * MIN5)   # a checkpoint's state
    assert {k for k, st in alarms["a"].states.items() if st.in_alarm} == {"Fleet/ports", "Fleet/conns"}
    changed = dict(CONNS, criteria=dict(CONNS["criteria"], value={"count": 100}))
    new = profile(changed)
    a = alarms["a"]
    events = a.reconcile("a", new, profile_fingerprint(new), (T0 + 3 * MIN5) / 1000)
    assert sorted((e["behavior"]["name"], e["reason"]) for e in events) == [
        ("conns", "behavior changed"), ("ports", "behavior removed")]
    assert all(e["violationEventType"] == "alarm-invalidated" for e in events)
    assert a.reconcile("a", new, profile_fingerprint(new), 0.0) == []


def test_violation_ids_are_deterministic_so_a_replay_names_the_same_violations():
    bs = profile(PORTS, BYTES_P90)
    lines = [line(f"d{i}", T0 + 1000 * i, ports=(22, 80 + i % 2), bytes_out=i) for i in range(10)]
    first, _ = evaluate(lines, bs, lateness_ms=0)
    second, _ = evaluate(lines, bs, lateness_ms=0)
    assert first == second and len({e["violationId"] for e in first}) == len(first) // 2


def test_ml_behaviors_use_the_latest_baselines_band_and_give_no_verdict_while_pending():
    ml = {"name": "bytes-ml", "metric": "aws:all-bytes-out",
          "criteria": {"mlDetectionConfig": {"confidenceLevel": "HIGH"}}}
    bs = profile(ml)
    lines = [line("a", T0 + 1, bytes_out=500), line("b", T0 + 2, bytes_out=50)]
    key = "aws:all-bytes-out@0"
    models = baselines.Models({key: baselines.Model(key, "aws:all-bytes-out", None, 30_000, 14, baselines.ACTIVE,
                                                    {"HIGH": (10.0, 100.0)})}, trained_at=T0 / 1000)
    events, _ = evaluate(lines, bs, lateness_ms=0, models=models)
    assert [(e["thingName"], e["violationEventType"]) for e in events][:1] == [("a", "in-alarm")]
    assert events[0]["thresholdValue"] == [10.0, 100.0]
    assert events[0]["violationEventAdditionalInfo"] == {"confidenceLevel": "HIGH"}
    pending = baselines.Models()
    assert evaluate(lines, bs, lateness_ms=0, models=pending)[0] == []


def test_counts_of_rejected_duplicate_and_late_lines():
    bs = profile(MSGS)
    lines = [line("a", T0 + MIN5), "garbage", line("a", T0 + MIN5, rid=T0 + MIN5), line("a", T0)]
    _, counts = evaluate(lines, bs, lateness_ms=1000)
    assert (counts.records, counts.parsed, counts.duplicates, counts.late) == (4, 3, 1, 1)
    assert counts.rejected == {"not-json": 1}


def test_a_per_report_rule_is_due_at_its_report_a_per_report_rank_at_its_five_minute_bucket():
    conns_p90 = {"name": "conns-p90", "metric": "aws:num-established-tcp-connections",
                 "criteria": {"comparisonOperator": "less-than-equals", "statisticalThreshold": {"statistic": "p90"}}}
    bs = profile(PORTS, conns_p90)
    at = T0 + 10_000
    lines = [line(f"t{i}", at + i, ports=(22,) if i else (22, 8888), conns=1 + i % 3 if i else 50)
             for i in range(20)]
    # event time just past the anomalous report plus the lateness: the allow-list has its verdict, the rank not
    events, _ = evaluate(lines, bs, lateness_ms=1000, watermark_ms=at + 1000 + 1)
    assert kinds(events) == [("t0", "ports", "in-alarm", at / 1000.0)]
    # once event time passes the 5-minute bucket: the rank across the 20 devices flags the one above its p90
    events, _ = evaluate(lines, bs, lateness_ms=1000, watermark_ms=T0 + DEFAULT_BUCKET_MS + 1000 + 1)
    assert sorted(kinds(events)) == [("t0", "conns-p90", "in-alarm", at / 1000.0),
                                     ("t0", "ports", "in-alarm", at / 1000.0)]
