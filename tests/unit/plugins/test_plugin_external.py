"""Out-of-process samples on `ggdefender/custom-metrics`: payload shapes, validation, bounds, expiry."""

import json
import logging

import pytest

from ggdefender.plugins.contract import ValueType
from ggdefender.plugins.external import MAX_BATCH, MAX_PAYLOAD_BYTES, TOPIC, ExternalMetrics, ExternalSettings


class Clocks:
    def __init__(self):
        self.mono = 50.0
        self.wall = 1_767_225_600.0

    def advance(self, seconds):
        self.mono += seconds
        self.wall += seconds


@pytest.fixture
def clocks():
    return Clocks()


def store(clocks, **kwargs):
    return ExternalMetrics(ExternalSettings(**kwargs), clock=lambda: clocks.mono, wall_clock=lambda: clocks.wall)


def values(metrics):
    return {name: (s.value_type, s.value) for name, s in metrics.current().items()}


def test_single_sample_dict_and_json_bytes(clocks):
    ext = store(clocks)
    assert ext.ingest(TOPIC, {"metric": "open_fds", "type": "number", "value": 42}) == (1, 0)
    payload = {"metric": "peers", "type": "ip-address-list", "value": ["192.0.2.1"], "source": "acme.Probe"}
    assert ext.ingest(TOPIC, json.dumps(payload).encode()) == (1, 0)
    assert values(ext) == {"open_fds": (ValueType.NUMBER, 42), "peers": (ValueType.IP_LIST, ["192.0.2.1"])}


def test_batch_accepts_good_and_rejects_bad_samples_individually(clocks, caplog):
    ext = store(clocks)
    batch = {"source": "acme.Probe", "samples": [
        {"metric": "temps", "type": "number_list", "value": [40.5, 41]},
        {"metric": "users", "type": "string-list", "value": ["root", "bad name"]},
        {"metric": "load", "type": "number", "value": "high"},
    ]}
    with caplog.at_level(logging.WARNING, logger="ggdefender.plugins"):
        assert ext.ingest(TOPIC, batch) == (1, 2)
    assert values(ext) == {"temps": (ValueType.NUMBER_LIST, [40.5, 41])}
    assert "from acme.Probe: metric 'users' rejected: value[1]: 'bad name'" in caplog.text
    assert "from acme.Probe: metric 'load' rejected: value: expected a number, got str" in caplog.text


@pytest.mark.parametrize("payload, why", [
    (b"not json", "not a JSON document"),
    (b"\xff\xfe", "not a JSON document"),
    ([1, 2], "expected a JSON object, got list"),
    (b"x" * (MAX_PAYLOAD_BYTES + 1), "more than the limit"),
    ({"samples": {"metric": "a"}}, "'samples' must be a list"),
    ({"samples": [{}] * (MAX_BATCH + 1)}, f"batch of {MAX_BATCH + 1} samples"),
    ({"samples": [], "extra": 1}, "unknown keys in a batch: extra"),
])
def test_malformed_messages_rejected_with_reason(clocks, caplog, payload, why):
    ext = store(clocks)
    with caplog.at_level(logging.WARNING, logger="ggdefender.plugins"):
        assert ext.ingest(TOPIC, payload) == (0, 1)
    assert why in caplog.text


@pytest.mark.parametrize("sample, why", [
    ({"type": "number", "value": 1}, "missing 'metric'"),
    ({"metric": "a", "value": 1}, "missing 'type'"),
    ({"metric": "a", "type": "number"}, "missing 'value'"),
    ({"metric": "a b", "type": "number", "value": 1}, "must be 1-128 characters"),
    ({"metric": "aws:x", "type": "number", "value": 1}, "must not begin with 'aws:'"),
    ({"metric": "a", "type": "gauge", "value": 1}, "unknown value type 'gauge'"),
    ({"metric": "a", "type": "number", "value": 1, "unit": "C"}, "unknown keys: unit"),
    ({"metric": "a", "type": "ip_list", "value": ["300.1.1.1"]}, "not a valid IPv4 or IPv6 address"),
    ({"metric": "a", "type": "number", "value": 1, "timestamp": "now"}, "timestamp must be a number"),
    ({"metric": "a", "type": "number", "value": 1, "source": "x\n"}, "'source' must be a printable string"),
])
def test_invalid_samples_rejected(clocks, caplog, sample, why):
    ext = store(clocks)
    with caplog.at_level(logging.WARNING, logger="ggdefender.plugins"):
        assert ext.ingest(TOPIC, sample) == (0, 1)
    assert why in caplog.text
    assert ext.current() == {}


def test_timestamps_seconds_and_milliseconds_set_the_remaining_life(clocks):
    ext = store(clocks, max_age=100)
    ext.ingest(TOPIC, {"metric": "a", "type": "number", "value": 1, "timestamp": clocks.wall - 60})
    ext.ingest(TOPIC, {"metric": "b", "type": "number", "value": 2, "timestamp": (clocks.wall - 10) * 1000})
    clocks.advance(30)  # a is 90 s old, b 40 s
    assert set(values(ext)) == {"a", "b"}
    clocks.advance(20)  # a is past the 100 s max age, b is not
    assert set(values(ext)) == {"b"}


def test_stale_and_future_timestamps_rejected(clocks, caplog):
    ext = store(clocks, max_age=100)
    with caplog.at_level(logging.WARNING, logger="ggdefender.plugins"):
        assert ext.ingest(TOPIC, {"metric": "a", "type": "number", "value": 1, "timestamp": clocks.wall - 500}) == (0, 1)
        assert ext.ingest(TOPIC, {"metric": "a", "type": "number", "value": 1, "timestamp": clocks.wall + 3600}) == (0, 1)
    assert "older than the max age of 100 s" in caplog.text
    assert "in the future" in caplog.text


def test_expired_samples_dropped_from_reports(clocks):
    ext = store(clocks, max_age=30)
    ext.ingest(TOPIC, {"metric": "a", "type": "number", "value": 1})
    clocks.advance(29)
    assert "a" in ext.current()
    clocks.advance(2)
    assert ext.current() == {}


def test_newest_sample_wins(clocks):
    ext = store(clocks)
    ext.ingest(TOPIC, {"metric": "a", "type": "number", "value": 1})
    ext.ingest(TOPIC, {"metric": "a", "type": "number", "value": 2})
    assert values(ext) == {"a": (ValueType.NUMBER, 2)}


def test_max_distinct_metrics_bound(clocks, caplog):
    ext = store(clocks, max_metrics=2, max_age=10)
    for name in ("a", "b"):
        ext.ingest(TOPIC, {"metric": name, "type": "number", "value": 1})
    with caplog.at_level(logging.WARNING, logger="ggdefender.plugins"):
        assert ext.ingest(TOPIC, {"metric": "c", "type": "number", "value": 1}) == (0, 1)
    assert "MaxMetrics" in caplog.text
    assert ext.ingest(TOPIC, {"metric": "a", "type": "number", "value": 5}) == (1, 0)  # updates still fine
    clocks.advance(11)  # a and b expire, which frees room
    assert ext.ingest(TOPIC, {"metric": "c", "type": "number", "value": 1}) == (1, 0)


def test_rejection_warnings_are_rate_limited(clocks, caplog):
    ext = store(clocks)
    with caplog.at_level(logging.WARNING, logger="ggdefender.plugins"):
        for _ in range(100):
            ext.ingest(TOPIC, b"junk")
        assert len(caplog.records) == 20
        clocks.advance(61)
        ext.ingest(TOPIC, b"junk")
    assert "80 further rejections were not logged" in caplog.text


def test_reserved_names_and_disabled_store(clocks):
    ext = store(clocks)
    assert ext.ingest(TOPIC, {"metric": "cpu_usage", "type": "number", "value": 1}, reserved={"cpu_usage"}) == (0, 1)
    off = store(clocks, enabled=False)
    assert off.ingest(TOPIC, {"metric": "a", "type": "number", "value": 1}) == (0, 0)
    assert off.current() == {}
