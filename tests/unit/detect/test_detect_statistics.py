import json

import pytest

from ggdefender.detect.statistics import DAY, History, StatsConfig, percentile


@pytest.mark.parametrize("q,expected", [(0, 1), (0.01, 1), (10, 1), (50, 5), (90, 9), (99, 10), (99.99, 10), (100, 10)])
def test_nearest_rank_percentile(q, expected):
    assert percentile(list(range(1, 11)), q) == expected


def test_percentile_of_nothing():
    assert percentile([], 50) is None


def test_threshold_waits_for_warm_up():
    h = History(StatsConfig(warmup=3))
    h.add("m", 300, 300.0, 10)
    h.add("m", 300, 600.0, 20)
    assert h.threshold("m", 300, 90) is None
    h.add("m", 300, 900.0, 30)
    assert h.threshold("m", 300, 90) == 30
    assert h.threshold("m", 600, 90) is None  # another duration is another series


def test_no_percentile_when_a_value_is_negative():
    h = History(StatsConfig(warmup=1))
    h.add("m", 0, 1.0, -5)
    h.add("m", 0, 2.0, 5)
    assert h.threshold("m", 0, 50) is None


def test_one_datapoint_per_time_per_series():
    h = History(StatsConfig(warmup=1))
    h.add("m", 0, 5.0, 1)
    h.add("m", 0, 5.0, 100)
    h.add("m", 0, 4.0, 100)
    assert list(h.series["m@0"].points) == [(5.0, 1.0)]


def test_history_is_bounded_by_count_and_age():
    h = History(StatsConfig(warmup=1, max_points=3, history_seconds=DAY))
    for i in range(5):
        h.add("m", 0, float(i), i)
    assert [v for _, v in h.series["m@0"].points] == [2.0, 3.0, 4.0]
    assert h.series["m@0"].sorted == [2.0, 3.0, 4.0]
    h.add("m", 0, DAY + 3.5, 99)  # everything older than one day goes
    assert [v for _, v in h.series["m@0"].points] == [4.0, 99.0]


def test_series_count_is_bounded():
    h = History(StatsConfig(max_series=2))
    h.add("a", 0, 1.0, 1)
    h.add("b", 0, 2.0, 1)
    h.add("c", 0, 3.0, 1)
    assert sorted(h.series) == ["b@0", "c@0"]


def test_ml_band_and_model_status():
    h = History(StatsConfig(ml_warmup=100))
    for i in range(99):
        h.add("m", 0, float(i), i)
    assert h.ml_band("m", 0, "HIGH") is None
    assert h.model_status("m", 0) == {"modelStatus": "PENDING_BUILD", "datapointsCollectionPercentage": 99.0}
    h.add("m", 0, 100.0, 99)
    assert h.ml_band("m", 0, "HIGH") == (0.0, 99.0)
    assert h.ml_band("m", 0, "MEDIUM") == (0.0, 99.0)
    assert h.ml_band("m", 0, "LOW") == (0.0, 98.0)  # LOW confidence: narrower band, more alarms
    assert h.model_status("m", 0)["modelStatus"] == "ACTIVE"


def test_history_survives_a_restart(tmp_path):
    path = str(tmp_path / "stats.json")
    h = History(StatsConfig(warmup=2), path=path)
    h.add("m", 300, 300.0, 7)
    h.add("m", 300, 600.0, 9)
    h.save()
    again = History(StatsConfig(warmup=2), path=path)
    assert again.threshold("m", 300, 100) == 9
    again.add("m", 300, 600.0, 1000)  # the time was already recorded before the restart
    assert again.threshold("m", 300, 100) == 9


def test_corrupt_history_file_starts_a_new_baseline(tmp_path):
    path = tmp_path / "stats.json"
    path.write_text("{broken")
    h = History(path=str(path))
    assert h.series == {}
    # the right syntax, the wrong shape: the whole file is moved aside, not half-read
    path.write_text(json.dumps({"series": {"m@0": [[1, 2], "junk", [0.5, 3], [2, 4]]}}))
    h = History(path=str(path))
    assert h.series == {} and not path.exists()
    assert len(list(tmp_path.glob("stats.json.bad-*"))) == 2
    # points out of time order are still read (the later duplicate time is skipped, as `add` does)
    path.write_text(json.dumps({"series": {"m@0": [[1, 2], [0.5, 3], [2, 4]]}}))
    assert list(History(path=str(path)).series["m@0"].points) == [(1.0, 2.0), (2.0, 4.0)]
