"""The health document and configuration verdicts under `ggdefender local`, with the real component.

A bad deployment MERGE (an invalid Collector value) is rejected by the component: `local config update` prints the
reason and exits non-zero, `local status` shows the component degraded, and after a restart the collector still
runs on the last good section (CBOR every 20 s), not on built-in defaults (JSON every 300 s). A good MERGE is
accepted. Real processes: the core, process A, process B (over the relay) and the CLI.
"""

import datetime
import json
import os
import subprocess
import sys
import time

import cbor2
import pytest

from test_component_collector import built  # noqa: F401  (the module-scoped built component)

from ggdefender.local.ui import harness
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Greengrass components run on Linux")]

NAME = "ggdefender.Defender"
THING = "healthThing"
HEALTH_TOPIC = f"ggdefender/things/{THING}/health"


def cli(*args):
    return subprocess.run([sys.executable, "-m", "ggdefender", "local", *map(str, args)], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))


def docs(capture):
    return [json.loads(item[1]) for item in list(capture) if item[0] == HEALTH_TOPIC]


def verdict(doc, section):
    return (doc.get("configuration") or {}).get(section) or {}


def epoch(entry):
    return datetime.datetime.fromisoformat(entry["at"].replace("Z", "+00:00")).timestamp()


def test_bad_merge_is_rejected_visibly_and_the_last_good_section_survives_a_restart(built, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("GGDEFENDER_PYTHON", sys.executable)
    root = tmp_path / "core"
    with harness.LocalCore(root=root, thing=THING) as core:
        health = core.capture_iot(HEALTH_TOPIC)
        local_health = core.capture_local("ggdefender/health")
        reports = core.capture_iot(f"$aws/things/{THING}/defender/metrics/#")
        core.deploy(built.recipe.parent, built.artifact.parents[2], {built.name: built.version},
                    update_config={NAME: {"MERGE": {"Collector": {"ReportFormat": "cbor",
                                                                  "DevelopmentSampleIntervalSeconds": "20",
                                                                  "StartJitterPercent": "0"}}}})
        try:
            core.wait_for_state(NAME, "RUNNING", timeout=180)
            health.wait_for(lambda m: any(verdict(d, "Collector").get("accepted") and
                                          verdict(d, "Remediation").get("accepted") for d in docs(m)), timeout=90)
            local_health.wait_for(lambda m: len(m) >= 1, timeout=30)
            doc = docs(health)[-1]
            assert doc["thingName"] == THING and doc["component"] == NAME and doc["status"] in ("ok", "degraded")

            status = cli("status", "--root", root)
            assert status.returncode == 0, status.stderr
            assert f"health of {NAME}" in status.stdout and "configuration Collector: accepted" in status.stdout

            # Device Defender's answers reach lastReport: the offline cloud accepts, then "AWS" rejects one
            health.wait_for(lambda m: any((d.get("lastReport") or {}).get("status") == "ACCEPTED" for d in docs(m)),
                            timeout=90)
            core.publish_iot(f"$aws/things/{THING}/defender/metrics/cbor/rejected", cbor2.dumps(
                {"thingName": THING, "reportId": 42, "status": "REJECTED",
                 "statusDetails": {"ErrorCode": "InvalidPayload", "ErrorMessage": "Malformed"}}))
            health.wait_for(lambda m: any((d.get("lastReport") or {}).get("status") == "REJECTED" for d in docs(m)),
                            timeout=30)
            last = next(d for d in reversed(docs(health)) if (d.get("lastReport") or {}).get("status") == "REJECTED")
            assert last["status"] == "degraded" and last["lastReport"]["reportId"] == 42
            assert "InvalidPayload" in last["lastReport"]["reason"]

            # a deployment MERGE of an invalid value: rejected with the reason, non-zero exit
            bad = json.dumps({NAME: {"MERGE": {"Collector": {"DevelopmentSampleIntervalSeconds": "-5"}}}})
            out = cli("config", "update", "--root", root, "--update-config", bad, "--wait", "40")
            assert out.returncode == 1, (out.stdout, out.stderr)
            assert f"{NAME} Collector: REJECTED" in out.stdout and "DevelopmentSampleIntervalSeconds" in out.stdout
            assert "running on the last good configuration" in out.stdout

            status = cli("status", "--root", root, "--json")
            shown = json.loads(status.stdout)["health"][NAME]
            assert shown["status"] == "degraded"
            assert verdict(shown, "Collector")["accepted"] is False and verdict(shown, "Collector")["usingLastGood"]
            table = cli("status", "--root", root).stdout
            assert "DEGRADED" in table and "configuration Collector rejected" in table

            # a restart with the invalid value still configured: the saved last good section, not the defaults
            before = len(reports)
            restart_at = time.time()
            core.restart(NAME)
            core.wait_for_state(NAME, "RUNNING", timeout=120)

            def after_restart(d):  # the new process B's verdict, not one from before the restart
                return verdict(d, "Collector").get("usingLastGood") and epoch(verdict(d, "Collector")) > restart_at

            health.wait_for(lambda m: any(after_restart(d) for d in docs(m)), timeout=90)
            restarted = next(d for d in docs(health) if after_restart(d))
            assert verdict(restarted, "Collector")["accepted"] is False
            assert "DevelopmentSampleIntervalSeconds" in verdict(restarted, "Collector")["reason"]
            reports.wait_for(lambda m: len(m) > before, timeout=60)
            assert all(t.startswith(f"$aws/things/{THING}/defender/metrics/cbor") for t, *_ in list(reports)[before:])
            log = core.wait_for_log(NAME, "using the last good configuration")
            assert "then every 20s" in log.split("Collector configuration rejected")[-1]

            # a good MERGE: accepted, exit 0, the document is no longer degraded by it
            good = json.dumps({NAME: {"MERGE": {"Collector": {"DevelopmentSampleIntervalSeconds": "25"}}}})
            out = cli("config", "update", "--root", root, "--update-config", good, "--wait", "40")
            assert out.returncode == 0, (out.stdout, out.stderr)
            assert f"{NAME} Collector: accepted" in out.stdout
            shown = json.loads(cli("status", "--root", root, "--json").stdout)["health"][NAME]
            assert verdict(shown, "Collector")["accepted"] is True

            # process A's own section: judged when it changes, though it applies at the next start
            sup = json.dumps({NAME: {"MERGE": {"Supervisor": {"StopTimeoutSeconds": "0"}}}})
            out = cli("config", "update", "--root", root, "--update-config", sup, "--wait", "40")
            assert out.returncode == 1, (out.stdout, out.stderr)
            assert f"{NAME} Supervisor: REJECTED" in out.stdout and "StopTimeoutSeconds" in out.stdout
            sup = json.dumps({NAME: {"MERGE": {"Supervisor": {"StopTimeoutSeconds": "8"}}}})
            out = cli("config", "update", "--root", root, "--update-config", sup, "--wait", "40")
            assert out.returncode == 0, (out.stdout, out.stderr)
            assert "Supervisor: accepted (Supervisor settings take effect when the component restarts)" in out.stdout
        except BaseException:
            print(core.log_text(NAME)[-8000:])
            raise
