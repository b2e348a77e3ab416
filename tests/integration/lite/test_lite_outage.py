"""Lite's iotcored has no queue: while it has no broker connection every PublishToIoTCore fails at once. The
component degrades (says so once in its log; lastReport PUBLISH_FAILED in its health document), keeps its
processes (a refused publish is not an IPC outage, so Supervisor.IpcRetryBudgetSeconds does not run out), and
its reports and health document reach IoT Core again when the broker is back.

(The local copy of the health document cannot be observed on lite: lite's ggipcd drops local pub/sub messages
of more than 50 values on delivery, see docs/local-core.md.)"""

import json
import time

import pytest

from lite_session import DEFENDER, INTERVAL

pytestmark = pytest.mark.integration

OUTAGE = 3 * INTERVAL  # several refused reports
# iotcored reconnects with full-jitter backoff from 5 s doubling to 5 min (gg_backoff in lite's SDK), so after an
# outage of some seconds the next attempt may be a few minutes away in the worst case
RECONNECT_WAIT = 200


def _wait_log(lite, since: int, text: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while text not in lite.component_log(DEFENDER)[since:]:
        assert time.monotonic() < deadline, f"{text!r} not in the log:\n{lite.component_log(DEFENDER)[since:]}"
        time.sleep(0.2)
    return lite.component_log(DEFENDER)[since:]


def test_broker_outage_degrades_once_and_reports_resume(lite):
    topic = f"$aws/things/{lite.thing}/defender/metrics/json"
    health_topic = f"ggdefender/things/{lite.thing}/health"
    # a report accepted from now on: an earlier test may have restarted the component, and its old
    # acceptance must not stand for this instance's (the log slice below must start after its start-up)
    start = time.time()
    lite.observer.wait_for(lambda at, t, p: at >= start and t == topic + "/accepted", 60,
                           "a report accepted before the outage")
    log_before = len(lite.component_log(DEFENDER))
    lite.core.stop_broker()
    try:
        _wait_log(lite, log_before, "reports not published", OUTAGE + 30)
        time.sleep(OUTAGE)  # more refused reports: still said once
    finally:
        lite.core.start_broker()
    back = time.time()
    lite.observer.wait_for(lambda at, t, p: at >= back and t == topic + "/accepted", RECONNECT_WAIT,
                           "a report accepted after the broker came back")
    lite.observer.wait_for(lambda at, t, p: at >= back and t == health_topic, 90,
                           "the health document published again after the broker came back")
    during = _wait_log(lite, log_before, "reports reach IoT Core again", 30)
    said = [line for line in during.splitlines() if "reports not published" in line]
    assert len(said) == 1, said
    assert "PUBLISH_FAILED in health" in said[0] and "refused by the nucleus" in said[0]
    assert sum("health: publish failed" in line for line in during.splitlines()) == 1
    # neither process was restarted: the supervisor did not take refused publishes for a lost core
    assert "collector process started" not in during and "giving up" not in during
    assert lite.core.running(DEFENDER)


def test_started_before_iot_core_is_reachable_it_waits_instead_of_failing(lite):
    # a device boots before its network: lite refuses SubscribeToIoTCore (and publishes) until iotcored is
    # connected; the component's parts must neither fail nor restart, and work once IoT Core is there
    lite.core.stop_component(DEFENDER)
    lite.core.stop_broker()
    log_before = len(lite.component_log(DEFENDER))
    try:
        lite.core.launch(DEFENDER, "run")  # installed already: as when the nucleus starts it at boot
        _wait_log(lite, log_before, "refused by the nucleus", 60)
        time.sleep(OUTAGE)
    finally:
        lite.core.start_broker()
    back = time.time()
    lite.jobs.create_job({"schema": "ggdefender.remediation/1", "steps": [{"operation": "collect-now"}]},
                         "after-boot")
    done = lite.jobs.wait_for("after-boot", ("SUCCEEDED", "FAILED", "REJECTED"), timeout=RECONNECT_WAIT)
    assert done["status"] == "SUCCEEDED", done["statusDetails"]
    topic = f"$aws/things/{lite.thing}/defender/metrics/json"
    lite.observer.wait_for(lambda at, t, p: at >= back and t == topic + "/accepted", 60,
                           "a report accepted once IoT Core is reachable")
    during = lite.component_log(DEFENDER)[log_before:]
    assert "remediation listener failed" not in during and "collector process exited" not in during
    assert sum("IoT Core subscription" in line and "refused" in line for line in during.splitlines()) == 1
    assert lite.core.running(DEFENDER)
