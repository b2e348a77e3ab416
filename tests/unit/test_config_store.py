"""config_store.LastGood: verdicts in health, the last good section kept in memory and across restarts."""

import json
import os

import pytest

from ggdefender import config_store, health
from ggdefender.settings import as_int


@pytest.fixture
def doc(monkeypatch):
    h = health.Health()
    monkeypatch.setattr(health, "process_health", lambda: h)
    return h


class Part:
    """A part whose whole section is one interval that must be >= 1 (the part's own rule)."""

    def __init__(self):
        self.interval = None  # nothing applied yet: the part's own start-up fallback
        self.applied = []

    def apply(self, section):
        value = as_int((section or {}).get("Interval", 300), "Interval", minimum=1)  # raises before any change
        self.interval = value
        self.applied.append(section)


def test_accepted_section_is_reported_and_saved(tmp_path, doc):
    part = Part()
    lg = config_store.LastGood(object(), "Collector", str(tmp_path))
    assert lg.adopt({"Interval": 20}, part.apply) is True
    verdict = doc.get("configuration.Collector")
    assert verdict["accepted"] is True and "reason" not in verdict and verdict["at"].endswith("Z")
    saved = json.loads((tmp_path / "last-good-Collector.json").read_text())
    assert saved["value"] == {"Interval": 20} and saved["section"] == "Collector"


def test_rejected_while_running_keeps_the_current_one(tmp_path, doc):
    part = Part()
    lg = config_store.LastGood(object(), "Collector", str(tmp_path))
    lg.adopt({"Interval": 20}, part.apply)
    assert lg.adopt({"Interval": -5}, part.apply) is False
    assert part.interval == 20
    verdict = doc.get("configuration.Collector")
    assert verdict["accepted"] is False and verdict["usingLastGood"] is True
    assert "Interval: -5 is below the minimum 1" in verdict["reason"]
    assert json.loads((tmp_path / "last-good-Collector.json").read_text())["value"] == {"Interval": 20}
    assert doc.document()["status"] == "degraded"
    lg.adopt({"Interval": 30}, part.apply)  # fixed: accepted again, the document is ok again
    assert doc.get("configuration.Collector")["accepted"] is True and doc.document()["status"] == "ok"


def test_rejected_at_start_uses_the_saved_last_good_section(tmp_path, doc, caplog):
    first = Part()
    config_store.LastGood(object(), "Collector", str(tmp_path)).adopt({"Interval": 20}, first.apply)
    restarted = Part()  # a new process: nothing in memory
    lg = config_store.LastGood(object(), "Collector", str(tmp_path))
    assert lg.adopt({"Interval": -5}, restarted.apply) is False
    assert restarted.interval == 20 and lg.in_use
    verdict = doc.get("configuration.Collector")
    assert verdict["accepted"] is False and verdict["usingLastGood"] is True
    assert "using the last good configuration" in caplog.text


def test_rejected_at_start_without_a_saved_one_leaves_the_part_its_own_fallback(tmp_path, doc):
    part = Part()
    lg = config_store.LastGood(object(), "Remediation", str(tmp_path))
    assert lg.adopt({"Interval": "x"}, part.apply) is False
    assert part.interval is None and not lg.in_use and "Interval" in lg.error
    assert doc.get("configuration.Remediation")["usingLastGood"] is False
    assert not os.path.exists(tmp_path / "last-good-Remediation.json")


def test_a_saved_section_of_the_wrong_shape_is_moved_aside(tmp_path, doc, caplog):
    (tmp_path / "last-good-Collector.json").write_text('{"value": [1, 2]}')
    part = Part()
    lg = config_store.LastGood(object(), "Collector", str(tmp_path))
    assert lg.adopt({"Interval": 0}, part.apply) is False
    assert part.interval is None and doc.get("configuration.Collector")["usingLastGood"] is False
    assert not (tmp_path / "last-good-Collector.json").exists()
    assert any(p.name.startswith("last-good-Collector.json.bad-") for p in tmp_path.iterdir())


def test_a_saved_section_this_version_refuses_is_not_used(tmp_path, doc):
    (tmp_path / "last-good-Collector.json").write_text('{"value": {"Interval": 0}, "savedAt": "t"}')
    part = Part()
    lg = config_store.LastGood(object(), "Collector", str(tmp_path))
    assert lg.adopt({"Interval": -1}, part.apply) is False
    assert part.interval is None and doc.get("configuration.Collector")["usingLastGood"] is False


def test_the_file_is_written_only_when_the_section_changes(tmp_path, doc):
    part = Part()
    lg = config_store.LastGood(object(), "Collector", str(tmp_path))
    lg.adopt({"Interval": 20}, part.apply)
    path = tmp_path / "last-good-Collector.json"
    os.utime(path, (1, 1))
    lg.adopt({"Interval": 20}, part.apply)
    assert os.stat(path).st_mtime == 1
    lg.adopt({"Interval": 21}, part.apply)
    assert os.stat(path).st_mtime != 1


def test_parse_returns_the_value_in_use(tmp_path, doc):
    parse = lambda section: as_int(section.get("N"), "N", minimum=1)  # noqa: E731
    assert config_store.LastGood(object(), "Supervisor", str(tmp_path)).parse({"N": 5}, parse) == 5
    assert config_store.LastGood(object(), "Supervisor", str(tmp_path)).parse({"N": 0}, parse) == 5
    assert config_store.LastGood(object(), "Supervisor", str(tmp_path / "new")).parse({"N": 0}, parse) is None


def test_a_bug_in_a_part_is_not_a_verdict(tmp_path, doc):
    def broken(section):
        raise KeyError("bug")
    with pytest.raises(KeyError):
        config_store.LastGood(object(), "Detect", str(tmp_path)).adopt({}, broken)
    assert doc.get("configuration.Detect") is None

