import itertools

import pytest

from ggdefender.detect import metrics as M
from ggdefender.detect.evaluator import INVALIDATE_AFTER, Evaluator
from ggdefender.detect.statistics import History, StatsConfig

from detect_helpers import behavior, profile, report


def _ev(*behaviors, custom_types=None, **kw):
    ids = (f"v{i}" for i in itertools.count(1))
    return Evaluator("thing1", profile(*behaviors, custom_types=custom_types).behaviors,
                     id_factory=lambda: next(ids), **kw)


def _types(events):
    return [e["violationEventType"] for e in events]


@pytest.mark.parametrize("operator,threshold,value,violating", [
    ("less-than", 10, 9, False), ("less-than", 10, 10, True),
    ("less-than-equals", 10, 10, False), ("less-than-equals", 10, 11, True),
    ("greater-than", 10, 11, False), ("greater-than", 10, 10, True),
    ("greater-than-equals", 10, 10, False), ("greater-than-equals", 10, 9, True),
])
def test_numeric_operators_describe_normal_behavior(operator, threshold, value, violating):
    ev = _ev(behavior("aws:num-established-tcp-connections", operator, {"count": threshold}))
    events = ev.observe({"aws:num-established-tcp-connections": value}, 100.0)
    assert _types(events) == (["in-alarm"] if violating else [])


@pytest.mark.parametrize("operator,ports,reported,offending", [
    ("in-port-set", [22, 25, 38905], (22, 25), None),
    ("in-port-set", [22, 25, 38905], (22, 8888), [8888]),
    ("not-in-port-set", [23], (22, 80), None),
    ("not-in-port-set", [23], (22, 23), [23]),
    ("in-port-set", [22], (), None),  # an empty list is always compliant
])
def test_port_set_operators(operator, ports, reported, offending):
    ev = _ev(behavior("aws:listening-tcp-ports", operator, {"ports": ports}))
    events = ev.observe({"aws:listening-tcp-ports": reported}, 100.0)
    if offending is None:
        assert events == []
    else:
        assert events[0]["offendingValues"] == offending
        assert events[0]["metricValue"] == {"ports": list(reported)}


@pytest.mark.parametrize("operator,cidrs,reported,offending", [
    ("in-cidr-set", ["10.0.0.0/8"], ("10.1.2.3",), None),
    ("in-cidr-set", ["10.0.0.0/8"], ("10.1.2.3", "192.0.2.1"), ["192.0.2.1"]),
    ("not-in-cidr-set", ["192.0.2.0/24"], ("10.1.2.3",), None),
    ("not-in-cidr-set", ["192.0.2.0/24"], ("192.0.2.200",), ["192.0.2.200"]),
    ("in-cidr-set", ["2001:db8::/32"], ("2001:db8::1",), None),
    # a CIDR matches only its own address family
    ("in-cidr-set", ["::/0"], ("10.0.0.1",), ["10.0.0.1"]),
    ("not-in-cidr-set", ["0.0.0.0/0"], ("2001:db8::1",), None),
])
def test_cidr_set_operators(operator, cidrs, reported, offending):
    ev = _ev(behavior("aws:destination-ip-addresses", operator, {"cidrs": cidrs}))
    events = ev.observe({"aws:destination-ip-addresses": reported}, 100.0)
    assert (events[0]["offendingValues"] if events else None) == offending


@pytest.mark.parametrize("ctype,operator,value,reported,violating", [
    ("number", "less-than", {"number": 80}, 79.5, False),
    ("number", "less-than", {"number": 80}, 80.0, True),
    ("number-list", "in-set", {"numbers": [1, 2]}, (1.0, 2.0), False),
    ("number-list", "in-set", {"numbers": [1, 2]}, (1.0, 3.0), True),
    ("number-list", "not-in-set", {"numbers": [1]}, (1.0,), True),
    ("string-list", "in-set", {"strings": ["root", "gg"]}, ("gg",), False),
    ("string-list", "in-set", {"strings": ["root", "gg"]}, ("mallory",), True),
    ("string-list", "not-in-set", {"strings": ["telnetd"]}, ("telnetd", "sshd"), True),
    ("ip-address-list", "in-cidr-set", {"cidrs": ["10.0.0.0/8"]}, ("10.0.0.5",), False),
    ("ip-address-list", "not-in-cidr-set", {"cidrs": ["10.0.0.0/8"]}, ("10.0.0.5",), True),
])
def test_custom_metric_operators(ctype, operator, value, reported, violating):
    ev = _ev(behavior("m", operator, value), custom_types={"m": ctype})
    assert _types(ev.observe({"m": reported}, 1.0)) == (["in-alarm"] if violating else [])


def test_custom_metrics_from_a_report():
    ev = _ev(behavior("cpu_usage", "less-than", {"number": 90}), custom_types={"cpu_usage": "number"})
    rep = report(custom={"cpu_usage": [{"number": 95.0}]})
    events = ev.observe(M.extract(rep, {"cpu_usage": "number"}), 1.0)
    assert events[0]["metricValue"] == {"number": 95.0}


def test_consecutive_datapoints_to_alarm_and_clear():
    ev = _ev(behavior("aws:num-established-tcp-connections", "less-than", {"count": 5},
                      consecutiveDatapointsToAlarm=3, consecutiveDatapointsToClear=2))
    seq = [9, 9, 1, 9, 9, 9, 9, 1, 9, 1, 1]
    out = [(_types(ev.observe({"aws:num-established-tcp-connections": v}, float(i))), i) for i, v in enumerate(seq)]
    fired = [(t, i) for ts, i in out for t in ts]
    # the 1 at index 2 resets the streak; alarm on the third consecutive violation (index 5);
    # one compliant datapoint (7) is not enough to clear; two (9, 10) are
    assert fired == [("in-alarm", 5), ("alarm-cleared", 10)]


def test_violation_ids_and_alarm_state():
    ev = _ev(behavior("aws:listening-tcp-ports", "in-port-set", {"ports": [22]}))
    (a,) = ev.observe({"aws:listening-tcp-ports": (22, 8888)}, 10.0)
    assert ev.observe({"aws:listening-tcp-ports": (22, 9999)}, 20.0) == []  # still the same alarm
    (active,) = ev.active_violations()
    assert active["violationId"] == a["violationId"] == "v1"
    assert active["lastViolationValue"] == {"ports": [22, 9999]} and active["violationStartTime"] == 10.0
    (c,) = ev.observe({"aws:listening-tcp-ports": (22,)}, 30.0)
    assert (c["violationEventType"], c["violationId"], c["violationStartTime"]) == ("alarm-cleared", "v1", 10.0)
    assert ev.active_violations() == []
    (a2,) = ev.observe({"aws:listening-tcp-ports": (1,)}, 40.0)
    assert a2["violationId"] == "v2"


def test_window_sums_deltas_and_closes_on_the_next_window():
    ev = _ev(behavior("aws:all-packets-out", "less-than-equals", {"count": 100}, durationSeconds=300))
    assert ev.observe({"aws:all-packets-out": 60}, 300.0) == []
    assert ev.observe({"aws:all-packets-out": 50}, 450.0) == []  # same window: 110 pending
    (e,) = ev.observe({"aws:all-packets-out": 10}, 600.0)           # window [300, 600) closes
    assert (e["violationEventType"], e["metricValue"], e["violationEventTime"]) == ("in-alarm", {"count": 110}, 600.0)
    (c,) = ev.tick(900.0)                                           # window [600, 900) = 10
    assert c["violationEventType"] == "alarm-cleared"


def test_gauge_window_takes_the_last_value_and_empty_windows_make_no_datapoint():
    seen = []
    ev = _ev(behavior("aws:num-listening-tcp-ports", "less-than", {"count": 5}, durationSeconds=300),
             recorder=lambda b, t, v, th, verdict: seen.append((t, v, verdict)))
    ev.observe({"aws:num-listening-tcp-ports": 9}, 0.0)
    ev.observe({"aws:num-listening-tcp-ports": 3}, 100.0)
    ev.observe({}, 700.0)                 # a report without the metric: window [0,300) closes, nothing opens
    ev.tick(5000.0)
    assert seen == [(300.0, 3, False)]


def test_late_observation_is_dropped_for_windowed_behaviors():
    seen = []
    ev = _ev(behavior("aws:all-bytes-out", "less-than", {"count": 10}, durationSeconds=300),
             recorder=lambda b, t, v, th, verdict: seen.append((t, v)))
    ev.observe({"aws:all-bytes-out": 1}, 700.0)
    ev.observe({"aws:all-bytes-out": 50}, 100.0)  # older than the open window
    ev.tick(900.0)
    assert seen == [(900.0, 1)]


def test_alarm_invalidated_after_two_days_without_datapoints():
    ev = _ev(behavior("aws:listening-tcp-ports", "in-port-set", {"ports": [22]}))
    ev.observe({"aws:listening-tcp-ports": (23,)}, 0.0)
    assert ev.tick(INVALIDATE_AFTER) == []            # exactly two days: not yet
    (e,) = ev.tick(INVALIDATE_AFTER + 1)
    assert e["violationEventType"] == "alarm-invalidated" and "2 days" in e["reason"]
    assert ev.active_violations() == []


def test_removed_or_changed_behavior_invalidates_its_alarm():
    ev = _ev(behavior("aws:listening-tcp-ports", "in-port-set", {"ports": [22]}, name="a"),
             behavior("aws:listening-udp-ports", "in-port-set", {"ports": [53]}, name="u"))
    ev.observe({"aws:listening-tcp-ports": (23,), "aws:listening-udp-ports": (99,)}, 0.0)
    changed = profile(behavior("aws:listening-tcp-ports", "in-port-set", {"ports": [22, 23]}, name="a")).behaviors
    events = ev.set_behaviors(changed, 10.0)
    assert sorted((e["behavior"]["name"], e["reason"]) for e in events) == [
        ("a", "behavior changed"), ("u", "behavior removed")]
    assert all(e["violationEventType"] == "alarm-invalidated" for e in events)
    assert ev.observe({"aws:listening-tcp-ports": (23,)}, 20.0) == []  # the new rule allows 23


def test_unchanged_behavior_keeps_its_alarm_across_set_behaviors():
    b = behavior("aws:listening-tcp-ports", "in-port-set", {"ports": [22]})
    ev = _ev(b)
    ev.observe({"aws:listening-tcp-ports": (23,)}, 0.0)
    assert ev.set_behaviors(profile(b).behaviors, 5.0) == []
    assert len(ev.active_violations()) == 1


def test_suppress_alerts_still_evaluates_and_marks_the_event():
    b = dict(behavior("aws:listening-tcp-ports", "in-port-set", {"ports": [22]}), suppressAlerts=True)
    (e,) = _ev(b).observe({"aws:listening-tcp-ports": (23,)}, 0.0)
    assert e["suppressAlerts"] is True


def test_statistical_threshold_uses_own_history_after_warm_up():
    hist = History(StatsConfig(warmup=5))
    ev = _ev(behavior("aws:all-packets-out", "less-than-equals", durationSeconds=300,
                      statisticalThreshold={"statistic": "p90"}), history=hist)
    events = []
    values = [100, 110, 105, 95, 120, 101, 5000, 100]
    for i, v in enumerate(values):
        events += ev.observe({"aws:all-packets-out": v}, 300.0 * i + 1)
    events += ev.tick(300.0 * len(values) + 1)
    # windows 0..4 are warm-up (no verdict); 101 <= p90(100,110,105,95,120)=120; 5000 violates; 100 clears
    assert _types(events) == ["in-alarm", "alarm-cleared"]
    assert events[0]["metricValue"] == {"count": 5000} and events[0]["thresholdValue"] == 120.0


def test_statistic_average_compares_with_the_mean_of_own_history():
    hist = History(StatsConfig(warmup=4))
    ev = _ev(behavior("aws:all-packets-out", "less-than-equals", durationSeconds=300,
                      statisticalThreshold={"statistic": "Average"}), history=hist)
    events = []
    for i, v in enumerate([100, 200, 300, 400, 250, 251]):
        events += ev.observe({"aws:all-packets-out": v}, 300.0 * i + 1)
    events += ev.tick(300.0 * 6 + 1)
    # 250 <= mean(100..400)=250 is compliant; 251 > mean(100..400, 250)=250 violates
    assert _types(events) == ["in-alarm"]
    assert events[0]["metricValue"] == {"count": 251} and events[0]["thresholdValue"] == 250.0


def test_statistical_behaviors_on_the_same_series_see_the_same_history():
    hist = History(StatsConfig(warmup=1))
    p = profile(behavior("aws:all-bytes-out", "less-than-equals", name="a", durationSeconds=300,
                         statisticalThreshold={"statistic": "p100"}),
                behavior("aws:all-bytes-out", "less-than-equals", name="b", durationSeconds=300,
                         statisticalThreshold={"statistic": "p100"}))
    ev = Evaluator("t", p.behaviors, history=hist)
    ev.observe({"aws:all-bytes-out": 10}, 1.0)
    events = ev.observe({"aws:all-bytes-out": 20}, 301.0)
    events += ev.tick(601.0)
    # 20 > max(10) for both behaviors: the first behavior's datapoint must not leak into the second's threshold
    assert sorted(e["behavior"]["name"] for e in events) == ["a", "b"]
    assert len(hist.series["aws:all-bytes-out@300"]) == 2


def test_ml_behavior_warms_up_then_flags_values_outside_the_band():
    hist = History(StatsConfig(ml_warmup=10))
    ev = _ev(behavior("aws:num-established-tcp-connections", mlDetectionConfig={"confidenceLevel": "HIGH"}),
             history=hist)
    events = []
    for i in range(10):
        events += ev.observe({"aws:num-established-tcp-connections": 5 + i % 3}, float(i))
    assert events == [] and hist.model_status("aws:num-established-tcp-connections", None)["modelStatus"] == "ACTIVE"
    (e,) = ev.observe({"aws:num-established-tcp-connections": 40}, 20.0)
    assert e["violationEventAdditionalInfo"] == {"confidenceLevel": "HIGH"} and e["thresholdValue"] == [5.0, 7.0]
    assert ev.observe({"aws:num-established-tcp-connections": 6}, 21.0)[0]["violationEventType"] == "alarm-cleared"


def test_event_shape_matches_aws_violation_event():
    (e,) = _ev(behavior("aws:listening-tcp-ports", "in-port-set", {"ports": [22]})).observe(
        {"aws:listening-tcp-ports": (8888,)}, 1700000000.5)
    for key in ("violationId", "thingName", "securityProfileName", "behavior", "metricValue", "violationEventType",
                "violationEventTime", "verificationState"):
        assert key in e
    assert e["verificationState"] == "UNKNOWN" and e["behavior"]["criteria"]["comparisonOperator"] == "in-port-set"


def test_configuration_round_trip_through_floats_is_not_a_change():
    as_file = behavior("aws:all-bytes-out", "less-than", {"count": 4096}, durationSeconds=300)
    as_greengrass = behavior("aws:all-bytes-out", "less-than", {"count": 4096.0}, durationSeconds="300")
    ev = _ev(as_file)
    ev.observe({"aws:all-bytes-out": 9999}, 1.0)
    ev.tick(301.0)
    assert len(ev.active_violations()) == 1
    assert ev.set_behaviors(profile(as_greengrass).behaviors, 400.0) == []
    assert len(ev.active_violations()) == 1
    # declaring an unrelated custom metric type does not touch this behavior either
    assert ev.set_behaviors(profile(as_file, custom_types={"other": "number"}).behaviors, 500.0) == []
