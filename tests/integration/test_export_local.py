"""Collector.Export under `ggdefender local`, with the real component (process A, process B over the relay).

Mode "also": the offline Device Defender accepts each report and the offline rules sink (local/cloud/rules_service.py)
keeps the same bytes under `<root>/cloud/rules/<rule>/messages.jsonl`. Then a deployment MERGE switches to mode
"only" with another rule: reports reach that rule alone, nothing more on the Device Defender topic.
"""

import base64
import json
import os
import sys

import pytest

from test_component_collector import built  # noqa: F401  (the module-scoped built component)

from ggdefender import topics
from ggdefender.local.cloud.rules_service import messages_path
from ggdefender.local.ui import harness

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Greengrass components run on Linux")]

NAME = "ggdefender.Defender"
THING = "exportThing"


def _rule_lines(root, rule):
    path = messages_path(root, rule)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _rid(payload: bytes) -> int:
    return json.loads(payload)["header"]["report_id"]


def test_reports_reach_the_rule_too_then_only(built, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("GGDEFENDER_PYTHON", sys.executable)
    root = tmp_path / "core"
    with harness.LocalCore(root=root, thing=THING) as core:
        defender = core.capture_iot(topics.metrics(THING, "json"))
        accepted = core.capture_iot(topics.metrics(THING, "json") + "/accepted")
        rules = core.capture_iot(topics.BASIC_INGEST_PREFIX + "#")
        core.deploy(built.recipe.parent, built.artifact.parents[2], {built.name: built.version},
                    update_config={NAME: {"MERGE": {"Collector": {
                        "DevelopmentSampleIntervalSeconds": "2", "StartJitterPercent": "0",
                        "Export": {"Mode": "also"}}}}})
        core.wait_for_state(NAME, "RUNNING", timeout=180)
        exported = topics.export(topics.DEFAULT_EXPORT_RULE, THING, "json")
        rules.wait_for(lambda m: len(m) >= 2, timeout=90)
        accepted.wait_for(lambda m: len(m) >= 2, timeout=60)
        assert {t for t, *_ in rules} == {exported}
        by_id = {_rid(p): p for _, p, *_ in defender}
        for _, payload, *_ in list(rules)[:2]:  # the same report bytes as Device Defender got (and accepted)
            assert by_id[_rid(payload)] == payload
        assert {json.loads(p)["reportId"] for _, p, *_ in accepted} >= {_rid(p) for _, p, *_ in list(rules)[:2]}
        kept = _rule_lines(root, topics.DEFAULT_EXPORT_RULE)
        assert kept and kept[0]["topic"] == exported
        assert base64.b64decode(kept[0]["payloadBase64"]) == rules[0][1]
        assert kept[0]["json"]["header"]["report_id"] == _rid(rules[0][1])

        # mode "only", another rule (its accessControl merged, as docs/fleet.md says a customer does)
        mine = topics.export("mine", THING, "json")
        core.update_config(NAME, {"MERGE": {
            "Collector": {"Export": {"Mode": "only", "RuleName": "mine"}},
            "accessControl": {"aws.greengrass.ipc.mqttproxy": {"ggdefender.Defender:mqttproxy:export": {
                "policyDescription": "Collector.Export to rule mine",
                "operations": ["aws.greengrass#PublishToIoTCore"],
                "resources": ["$aws/rules/mine/things/{iot:thingName}/defender/metrics/json"]}}}}})
        rules.wait_for(lambda m: sum(t == mine for t, *_ in m) >= 2, timeout=60)
        first_only = min(_rid(p) for t, p, *_ in rules if t == mine)
        assert all(_rid(p) < first_only for _, p, *_ in defender), "a report reached Device Defender in mode only"
        assert len(_rule_lines(root, "mine")) >= 2
        log = core.log_text(NAME)
        assert "not exported" not in log and "relay policy" not in log, log[-3000:]
