"""ggdefender.Defender on the real Greengrass nucleus lite (one lite instance per session: conftest.py)."""

import json
import time

import pytest

from lite_session import DEFENDER, report_of

pytestmark = pytest.mark.integration


def _accepted(lite, fmt: str, timeout: float = 60, since: float = 0.0) -> dict:
    """Wait for a report in `fmt` published at or after `since` that the offline Device Defender accepted."""
    topic = f"$aws/things/{lite.thing}/defender/metrics/{fmt}"
    at, _, payload = lite.observer.wait_for(lambda at, t, p: at >= since and t == topic, timeout,
                                            f"a report on {topic}")
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


def test_configuration_change_applied_live_reports_switch_to_cbor(lite):
    _accepted(lite, "json")
    changed = time.time()
    lite.update_defender_config({"Collector": {"ReportFormat": "cbor"}})
    try:
        report = _accepted(lite, "cbor", since=changed)
        assert report["hed"]["v"] == "1.0"
    finally:
        back = time.time()
        lite.update_defender_config({"Collector": {"ReportFormat": "json"}})
    _accepted(lite, "json", since=back)


def test_example_plugin_metric_in_a_report(lite):
    topic = f"$aws/things/{lite.thing}/defender/metrics/json"

    def has_metric(at, t, p):
        if t != topic:
            return False
        values = json.loads(p).get("custom_metrics", {}).get("open_file_descriptors")
        return bool(values) and values[0].get("number", 0) > 0
    lite.observer.wait_for(has_metric, 60, "a report carrying the example plugin's open_file_descriptors")


def test_access_control_denies_what_the_recipe_does_not_grant(lite):
    outcomes = lite.probe_outcomes()
    assert outcomes["publish-granted-local"] == "ok"  # {iot:thingName} in a resource, interpolated by lite
    ungranted = ("publish-ungranted-local", "subscribe-ungranted-local", "publish-ungranted-iot",
                 "subscribe-ungranted-iot", "restart-other-component")
    assert {name: outcomes[name] for name in ungranted} == {name: "UnauthorizedError" for name in ungranted}
