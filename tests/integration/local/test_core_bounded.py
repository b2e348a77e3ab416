"""The local core stays bounded however many reports its components publish (issue 10, item 11: the core grew
~10 KB per report because the offline Device Defender kept every accepted report in memory).

The limits are lowered for the test so a few hundred reports cross every one of them; the structures are
asserted by count, not by time. bench/local_core_memory.py measures the bytes with the real limits.
"""

import json

import pytest

from ggdefender.local.cloud import defender_service as CD
from ggdefender.local.ui.harness import LocalCore

pytestmark = pytest.mark.integration

THING = "boundThing"


def _report(rid: int, n_conns: int = 40) -> bytes:
    conns = [{"remote_addr": f"10.0.0.{i + 1}:443", "local_port": 40000 + i, "local_interface": "eth0"}
             for i in range(n_conns)]
    return json.dumps({"header": {"report_id": rid, "version": "1.0"},
                       "metrics": {"tcp_connections": {"established_connections": {"connections": conns,
                                                                                    "total": n_conns}}}}).encode()


@pytest.fixture
def small_limits(monkeypatch):
    monkeypatch.setattr(CD, "MAX_KEPT_REPLIES", 50)
    monkeypatch.setattr(CD, "MAX_KEPT_REPORTS", 5)
    monkeypatch.setattr(CD, "MAX_REMEMBERED_IDS", 100)
    monkeypatch.setattr(CD, "MAX_THINGS", 3)


def test_many_reports_keep_every_structure_of_the_core_bounded(tmp_path, small_limits):
    n = 400
    with LocalCore(tmp_path / "gg", thing=THING) as core:
        replies = core.capture_iot("$aws/things/+/defender/metrics/json/+")
        for i in range(n):
            core.publish_iot(f"$aws/things/{THING}/defender/metrics/json", _report(1000 + i), source="test")
            if i % 50 == 0:  # a few bad ones too: rejected summaries are bounded as well
                core.publish_iot(f"$aws/things/{THING}/defender/metrics/json", b"{not json", source="test")
        replies.wait_for(lambda c: len(c) >= n + 8, timeout=120)
        svc = core.service("DefenderService")
        sizes = svc.structure_sizes()
        assert sizes == {"accepted": 50, "rejected": 8, "reportsKept": 5, "things": 1, "ids": 100}, sizes
        # a component inventing thing names in the topic: the things remembered are bounded too
        for t in range(10):
            core.publish_iot(f"$aws/things/ghost{t}/defender/metrics/json", _report(5000 + t), source="test")
        replies.wait_for(lambda c: len(c) >= n + 8 + 10, timeout=120)
        sizes = svc.structure_sizes()
        assert sizes == {"accepted": 50, "rejected": 8, "reportsKept": 5, "things": 3, "ids": 3}, sizes
        assert svc.counts == {"accepted": n + 10, "rejected": 8}   # counted, though not kept
        # the newest summaries are the ones kept, the newest of them with their report
        assert [a["reportId"] for a in svc.accepted][-1] == 5009
        assert all("report" in a for a in list(svc.accepted)[-5:])
        assert not any("report" in a for a in list(svc.accepted)[:-5])
        shown = core.control("defender-reports", {"limit": 1000})
        assert shown["accepted"] == n + 10 and len(shown["lastAccepted"]) == 50
        # everything else that sees every message is bounded by its own limit
        assert len(core.view.events) <= core.view.events.maxlen
        assert core.core.subscription_counts()["iot"] == len(core.core._iot)   # no subscription per message
        # every accepted report is still on disk (the Detect replay reads it)
        lines = (tmp_path / "gg" / "cloud" / "defender" / THING / "reports.jsonl").read_text().splitlines()
        assert len(lines) == n


def test_duplicate_detection_still_works_within_the_remembered_ids(tmp_path, small_limits):
    with LocalCore(tmp_path / "gg", thing=THING) as core:
        replies = core.capture_iot(f"$aws/things/{THING}/defender/metrics/json/+")
        for rid in (1, 2, 2):
            core.publish_iot(f"$aws/things/{THING}/defender/metrics/json", _report(rid, 1), source="test")
        replies.wait_for(lambda c: len(c) == 3, timeout=30)
        assert [t.rsplit("/", 1)[1] for t, *_ in replies] == ["accepted", "accepted", "rejected"]
