"""The local core's HealthBoard (view.py): latest document per publisher, verdict waits, bounds; and the CLI text."""

import json
import threading
import time

from ggdefender.local.ui.cli import health_text, verdict_text
from ggdefender.local.ui.view import MAX_HEALTH_COMPONENTS, HealthBoard, View


def doc(**conf):
    return json.dumps({"status": "degraded" if any(not v.get("accepted") for v in conf.values()) else "ok",
                       "configuration": conf}).encode()


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def test_update_reports_only_changes_of_status_or_problems():
    board = HealthBoard()
    assert board.update("c", doc(Collector={"accepted": True, "at": iso(1)})) == ("ok", [])
    assert board.update("c", doc(Collector={"accepted": True, "at": iso(2)})) is None
    status, problems = board.update("c", doc(Collector={"accepted": False, "reason": "bad", "at": iso(3)}))
    assert status == "degraded" and problems == ["configuration Collector rejected: bad"]
    assert board.sections("c") == ["Collector"] and board.has("c") and not board.has("other")


def test_garbage_and_too_many_publishers_are_ignored():
    board = HealthBoard()
    assert board.update("c", b"not json") is None and board.update("c", b"[1]") is None
    assert not board.has("c")
    for i in range(MAX_HEALTH_COMPONENTS + 5):
        board.update(f"c{i}", doc())
    assert len(board.documents()) == MAX_HEALTH_COMPONENTS


def test_wait_verdicts_waits_for_a_verdict_dated_after_the_update():
    board = HealthBoard()
    since = time.time()
    board.update("c", doc(Collector={"accepted": True, "at": iso(since - 10)}))  # an older verdict: not it
    assert board.wait_verdicts("c", ["Collector"], since, 0) == {"Collector": None}
    later = threading.Timer(0.2, lambda: board.update(
        "c", doc(Collector={"accepted": False, "reason": "x", "at": iso(since + 0.1)})))
    later.start()
    got = board.wait_verdicts("c", ["Collector"], since, 30)
    later.join()
    assert got["Collector"]["accepted"] is False


def test_view_prints_a_line_when_health_changes():
    class Out(list):
        def write(self, s):
            self.append(s)

        def flush(self):
            pass
    out = Out()
    view = View(out)
    view.health_document("ggdefender.Defender", doc(Detect={"accepted": False, "reason": "Detect.X: bad"}))
    assert any("health ggdefender.Defender: degraded: configuration Detect rejected: Detect.X: bad" in line
               for line in out)


def test_health_text_and_verdict_text():
    d = {"status": "degraded", "updatedAt": "t",
         "configuration": {"Collector": {"accepted": False, "reason": "Interval: bad", "usingLastGood": True}},
         "privilegeSeparation": {"on": True, "collectorUser": "nobody"},
         "outbox": {"pending": 1, "dropped": 2}, "lastReport": {"status": "ACCEPTED", "reportId": 4}}
    text = health_text("x.Y", d)
    assert "health of x.Y: DEGRADED" in text and "! configuration Collector rejected: Interval: bad" in text
    assert "running on the last good configuration" in text and "collector user nobody" in text
    assert "1 pending, 2 dropped" in text and "last report: ACCEPTED (id 4)" in text
    assert verdict_text({"accepted": False, "usingLastGood": False}).endswith("running on the built-in fallback)")
