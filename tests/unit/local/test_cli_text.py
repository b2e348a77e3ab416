"""What `ggdefender local config update` and `local status` print: the changes of an update (not the whole
configuration) and the totals as numbers."""

import io

from ggdefender.local.ui import cli
from ggdefender.local.nucleus.config_updates import config_changes
from ggdefender.local.ui.view import View, totals_text


def test_config_changes_lists_changed_leaves_only_with_json_pointers():
    before = {"Collector": {"ReportFormat": "json", "Metrics": ["a"]}, "Keep": 1, "Gone": True}
    after = {"Collector": {"ReportFormat": "cbor", "Metrics": ["a"], "New": {"x/y": 2}}, "Keep": 1}
    assert config_changes(before, after) == [
        ("/Collector/New", None, {"x/y": 2}),
        ("/Collector/ReportFormat", "json", "cbor"),
        ("/Gone", True, None),
    ]
    assert config_changes(after, after) == []


def test_changes_text_shows_old_and_new_and_caps_a_large_update():
    lines = cli.changes_text("c.X", {"A": {"B": "old"}}, {"A": {"B": "new", "C": [1, 2]}})
    assert lines == ['c.X: /A/B: "old" -> "new"', "c.X: /A/C: (absent) -> [1, 2]"]
    many = cli.changes_text("c.X", {}, {f"K{i:03}": i for i in range(cli.MAX_CHANGE_LINES + 7)})
    assert len(many) == cli.MAX_CHANGE_LINES + 1
    assert many[-1] == "c.X: ... and 7 more changed keys (--json shows all)"
    long = cli.changes_text("c.X", {}, {"K": "v" * 1000})[0]
    assert len(long) < 200 and long.endswith("...")


def test_totals_are_numbers_and_the_text_is_made_from_them():
    view = View(io.StringIO(), fold_seconds=60)
    view.report(thing="t", fmt="json", accepted=False, report_id=3, size=20, detail="bad")
    counts = view.counts()
    assert counts == {"reportsAccepted": 0, "reportsRejected": 1, "iotCoreMessages": 0, "localMessages": 0,
                      "denials": 0}
    assert view.totals() == totals_text(counts)
    assert "rejected 1" in totals_text(counts)
