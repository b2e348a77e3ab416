"""The built component under `ggdefender local`: real processes, the real IPC protocol, the offline cloud.

Builds the component like gdk would (into a copy of the project), deploys it with a 1-second development
interval and checks what reaches "IoT Core": valid reports, strictly increasing ids (also across a
restart), deltas from the second report on, collect-now answered, a live switch to CBOR.
"""

import json
import sys

import cbor2
import pytest

from component_build import build_copy
from ggdefender.collector.schema import validate_report

from ggdefender.local.ui import harness
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Greengrass components run on Linux")]

NAME = "ggdefender.Defender"
THING = "collectorThing"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_copy(tmp_path_factory.mktemp("proj"))


def reports(capture, fmt):
    out = []
    for item in list(capture):
        topic, payload = item[0], item[1]
        if topic == f"$aws/things/{THING}/defender/metrics/{fmt}":
            out.append(payload)
    return out


def rid(payload, fmt):
    obj = json.loads(payload) if fmt == "json" else cbor2.loads(payload)
    header = obj.get("header") or obj.get("hed")
    return header.get("report_id", header.get("rid"))


def test_component_reports_over_real_ipc(built, tmp_path, monkeypatch):
    # Install reuses this interpreter when it already has exactly the pinned requirements (no download)
    monkeypatch.setenv("GGDEFENDER_PYTHON", sys.executable)
    with harness.LocalCore(root=tmp_path / "core", thing=THING) as core:
        cap = core.capture_iot(f"$aws/things/{THING}/defender/metrics/#")
        events = core.capture_local("ggdefender/collector/events")
        core.deploy(built.recipe.parent, built.artifact.parents[2], {built.name: built.version},
                    update_config={NAME: {"MERGE": {"Collector": {"DevelopmentSampleIntervalSeconds": "1",
                                                                  "StartJitterPercent": "0"}}}})
        try:
            core.wait_for_state(NAME, "RUNNING", timeout=180)
            cap.wait_for(lambda m: len(reports(m, "json")) >= 3, timeout=90)

            sent = reports(cap, "json")
            for payload in sent:
                assert validate_report(payload, "json") == []
            ids = [rid(p, "json") for p in sent]
            assert ids == sorted(set(ids))
            first, second = json.loads(sent[0]), json.loads(sent[1])
            assert "network_stats" not in first["metrics"] and "network_stats" in second["metrics"]
            # the offline cloud accepted them and its replies came back on /accepted
            cap.wait_for(lambda m: any(t.endswith("/json/accepted") for t, *_ in m), timeout=30)
            assert not any(t.endswith("/rejected") for t, *_ in cap)
            accepted = {a["reportId"] for a in core.service("DefenderService").accepted}
            assert set(ids[:3]) <= accepted

            # collect-now, as the remediation part asks for it
            core.publish_local("ggdefender/collector/commands", {"command": "collect-now", "requestId": "it-1"})
            ev = events.wait_for(lambda m: any(isinstance(x[1], dict) and x[1].get("requestId") == "it-1"
                                               for x in m), timeout=30)
            answer = next(x[1] for x in ev if isinstance(x[1], dict) and x[1].get("requestId") == "it-1")
            assert answer["event"] == "report-published" and answer["reportId"] in {
                rid(p, "json") for p in reports(cap, "json")}

            # a live configuration change: reports switch to CBOR with short names
            core.update_config(NAME, {"MERGE": {"Collector": {"ReportFormat": "cbor"}}})
            cap.wait_for(lambda m: len(reports(m, "cbor")) >= 1, timeout=60)
            cb = reports(cap, "cbor")[0]
            assert validate_report(cb, "cbor") == [] and "hed" in cbor2.loads(cb)

            # a restart keeps ids strictly increasing (persisted in the work folder)
            last = max(rid(p, f) for f in ("json", "cbor") for p in reports(cap, f))
            before = len(reports(cap, "cbor"))
            core.restart(NAME)
            cap.wait_for(lambda m: len(reports(m, "cbor")) >= before + 2, timeout=90)
            after = [rid(p, "cbor") for p in reports(cap, "cbor")[before:]]
            assert min(after) > last
        except BaseException:
            print(core.log_text(NAME)[-8000:])
            raise
