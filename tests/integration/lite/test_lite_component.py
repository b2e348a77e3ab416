"""ggdefender.Defender on the real Greengrass nucleus lite (one lite instance per session: conftest.py)."""

import json
import time

import pytest

from conftest import DEFENDER, report_of

pytestmark = pytest.mark.integration


def _accepted(lite, fmt: str, timeout: float = 60) -> dict:
    """Wait for a report in `fmt` that the offline Device Defender accepted; return it."""
    topic = f"$aws/things/{lite.thing}/defender/metrics/{fmt}"
    at, _, payload = lite.observer.wait_for(lambda at, t, p: t == topic, timeout, f"a report on {topic}")
    report = report_of(topic, payload)
    rid = report["header" if fmt == "json" else "hed"]["report_id" if fmt == "json" else "rid"]
    lite.observer.wait_for(
        lambda at, t, p: t == topic + "/accepted" and json_or_cbor(p, fmt).get("thingName") == lite.thing
        and _reply_id(p, fmt) == rid, 30, f"Device Defender accepting report {rid}")
    return report


def json_or_cbor(payload: bytes, fmt: str) -> dict:
    if fmt == "json":
        return json.loads(payload)
    import cbor2
    return cbor2.loads(payload)


def _reply_id(payload: bytes, fmt: str):
    return json_or_cbor(payload, fmt).get("reportId")


def test_reports_published_and_accepted_json(lite):
    report = _accepted(lite, "json")
    assert report["header"]["version"] == "1.0"
    assert "metrics" in report
