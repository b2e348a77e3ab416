"""Persisted state under faults, with the real component under `ggdefender local` (issue 10, items 5, 6, 10).

- a remediation journal of valid JSON but the wrong shape is moved aside and the next job still runs;
- an outbox item that can never be published is dropped after bounded tries, later violations go out, and the
  drop shows in the health document;
- SIGTERM (the core stopping the component) saves detect's statistics history recorded since its last
  periodic save (DetectService.close runs on the way out of process B).
"""

import json
import os
import signal
import sys
from pathlib import Path

import pytest

from component_build import full_configuration, wait_until

pytestmark = pytest.mark.integration

from ggdefender.local.ui import harness

THING = "stateThing"
COMPONENT = "ggdefender.Defender"
OURS = "ggdefender.remediation/1"
TERMINAL = ("SUCCEEDED", "FAILED", "REJECTED")


def _config(interval: int = 2, detect: dict | None = None) -> dict:
    cfg = full_configuration()
    cfg["Collector"].update({"DevelopmentSampleIntervalSeconds": str(interval), "StartJitterPercent": "0"})
    cfg["Remediation"].update({"ReplyTimeoutSeconds": "3", "RetryInitialSeconds": "0.5"})
    if detect:
        cfg["Detect"].update(detect)
    return cfg


def _start(core, tmp_path: Path, config: dict, seed: dict | None = None):
    """Start process A as the core would; `seed` maps paths relative to the state folder to file content.
    Returns (state folder, process A)."""
    state = tmp_path / "state"
    for rel, content in (seed or {}).items():
        path = state / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        os.chmod(path, 0o644)  # process B may run as another user
    state.mkdir(exist_ok=True)
    env = core.add_component(COMPONENT, configuration=config)
    env["GGDEFENDER_STATE_DIR"] = str(state)
    proc = core.spawn(COMPONENT, [sys.executable, "-m", "ggdefender", "run"], env=env)
    return state, proc


def _asides(folder: Path, name: str) -> list:
    return sorted(p for p in folder.glob(name + ".bad-*"))


def test_a_journal_of_the_wrong_shape_is_moved_aside_and_the_next_job_succeeds(tmp_path):
    bad = '{"entries":{"seed#1":"x"}}'
    with harness.LocalCore(tmp_path / "core", thing=THING) as core:
        state, _ = _start(core, tmp_path, _config(), seed={"remediation-journal.json": bad})
        jobs = core.service("JobsService")
        step = {"operation": "set-config",
                "arguments": {"section": "Collector", "values": {"DevelopmentSampleIntervalSeconds": "3"}}}
        jobs.create_job({"schema": OURS, "steps": [step]}, "after-bad-journal")
        done = jobs.wait_for("after-bad-journal", TERMINAL, timeout=90)
        assert done["status"] == "SUCCEEDED", done["statusDetails"]
        private = state / "supervisor"  # process A's own state folder (statefile.private_dir)
        (aside,) = _asides(private, "remediation-journal.json")
        assert aside.read_text() == bad
        assert not (state / "remediation-journal.json").exists()  # moved in from where an older version kept it
        journal = json.loads((private / "remediation-journal.json").read_text())
        assert "after-bad-journal#1" in journal["entries"]
        core.wait_for_log(COMPONENT, "remediation job journal", str(aside))
        assert core.state(COMPONENT) == "RUNNING"


ALWAYS = {"securityProfileName": "H5Always", "behaviors": [
    {"name": "cpu-always", "metric": "cpu_usage",
     "criteria": {"comparisonOperator": "less-than", "value": {"number": -1}}}]}  # never normal: always in alarm


def _violations(cap) -> list:
    return [json.loads(p) for t, p, *_ in list(cap) if t.endswith("/violations")]


def test_an_outbox_item_that_is_never_publishable_is_dropped_and_later_violations_go_out(tmp_path):
    from ggdefender.detect.outbox import MAX_TRIES
    from ggdefender.ipc import IOT_CORE_MAX_PAYLOAD

    # left over from an earlier run: a violation too large for any core, at the head of the outbox
    poison = {"violationId": "poison-1", "thingName": THING, "securityProfileName": "H5Always",
              "behavior": {"name": "cpu-always"}, "violationEventType": "in-alarm",
              "padding": "x" * IOT_CORE_MAX_PAYLOAD}
    # and one process A's relay refuses (a violation about another thing: relay_guard denies it)
    foreign = {"violationId": "foreign-1", "thingName": "someOtherThing", "securityProfileName": "H5Always",
               "behavior": {"name": "cpu-always"}, "violationEventType": "in-alarm"}
    items = [["violation", poison, 0], ["violation", foreign, 0]]
    seed = {"collector/detect-state.json": json.dumps({"version": 2, "states": {}, "findings": {}, "extra": {},
                                                       "outbox": {"items": items, "dropped": 0,
                                                                  "lastDropReason": None}})}
    with harness.LocalCore(tmp_path / "core", thing=THING) as core:
        detect = core.capture_iot(f"ggdefender/things/{THING}/violations")
        health = core.capture_iot(f"ggdefender/things/{THING}/health")
        _start(core, tmp_path, _config(detect={"Profiles": [ALWAYS]}), seed=seed)
        # the first report raises the alarm: its violation is published although the poisoned item is older
        detect.wait_for(lambda c: any(v["securityProfileName"] == "H5Always" for v in _violations(c)), timeout=90)
        assert not {"poison-1", "foreign-1"} & {v["violationId"] for v in _violations(detect)}

        def dropped(c):
            docs = [json.loads(p) for _, p, *_ in list(c)]
            return [d["outbox"] for d in docs if d.get("outbox", {}).get("dropped", 0) >= 2]
        # dropped after MAX_TRIES flushes (start-up, then each report), counted in the health document
        health.wait_for(dropped, timeout=30 + 10 * MAX_TRIES)
        outbox = dropped(health)[-1]
        assert outbox["dropped"] == 2 and outbox["pending"] == 0 and "-1 (in-alarm)" in outbox["lastDropReason"]
        # process A refused them (RelayDenied); B did not retry them forever
        core.wait_for_log(COMPONENT, "violation poison-1 (in-alarm) dropped",
                          "violation foreign-1 (in-alarm) dropped", "RelayDenied")
        assert not {"poison-1", "foreign-1"} & {v["violationId"] for v in _violations(detect)}


STATS = {"securityProfileName": "H5Stats", "behaviors": [
    {"name": "cpu-p90", "metric": "cpu_usage",
     "criteria": {"comparisonOperator": "greater-than", "statisticalThreshold": {"statistic": "p90"}}}]}


def test_sigterm_saves_the_statistics_history_recorded_since_the_last_periodic_save(tmp_path):
    with harness.LocalCore(tmp_path / "core", thing=THING) as core:
        reports = core.capture_iot(f"$aws/things/{THING}/defender/metrics/json")
        state, proc = _start(core, tmp_path, _config(interval=1, detect={"Profiles": [STATS]}))
        stats = state / "collector" / "detect-statistics.json"
        def saved():
            try:
                return json.loads(stats.read_text())["series"].get("cpu_usage@0")
            except (FileNotFoundError, ValueError):
                return None
        # the first periodic save with datapoints (detect saves its history at most once a minute)
        first = wait_until(saved, 120, "a periodic save of the statistics history")
        # periodic saves are a minute apart: these reports are only in process B's memory
        reports.wait_for(lambda c: len(c) >= len(first) + 4, timeout=60)
        assert len(saved()) == len(first)
        published = len(reports)
        os.killpg(proc.pid, signal.SIGTERM)  # as the core stops a component: SIGTERM to its process group
        assert proc.wait(60) == 0
        points = json.loads(stats.read_text())["series"]["cpu_usage@0"]
        # every report B built was observed by detect before it was published: all of them are in the file
        assert len(points) >= published > len(first)
