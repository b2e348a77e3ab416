"""Nucleus lite takes IPC messages of at most 10,000 bytes and drops the whole connection over a bigger one, so a
PublishToIoTCore payload must stay at or under ~7,000 bytes there (ggdefender.ipc.LITE_MAX_IOT_PAYLOAD). With
hundreds of listening ports the report would be far larger: it is cut to fit (lists shortened, their `total`
kept, as with Collector.MaxReportBytes), accepted by Device Defender, and the component's IPC connection stays."""

import json
import subprocess
import sys
import time

import pytest

from lite_session import DEFENDER

pytestmark = pytest.mark.integration

LISTENERS = 400
CODE = ("import socket, sys, time\n"
        "socks = []\n"
        f"for _ in range({LISTENERS}):\n"
        "    s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1); socks.append(s)\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n")


def test_reports_over_lites_ipc_limit_are_cut_to_fit_and_accepted(lite):
    from ggdefender.ipc import LITE_MAX_IOT_PAYLOAD

    log_before = len(lite.component_log(DEFENDER))
    many = subprocess.Popen(["nsenter", "-t", str(lite.core.netns_pid), "-n", sys.executable, "-c", CODE],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert many.stdout.readline().strip() == "ready"
        since = time.time()
        topic = f"$aws/things/{lite.thing}/defender/metrics/json"

        def big(at, t, p):
            if at < since or t != topic:
                return False
            ports = json.loads(p)["metrics"].get("listening_tcp_ports", {})
            return ports.get("total", 0) >= LISTENERS

        _, _, payload = lite.observer.wait_for(big, 60, f"a report counting {LISTENERS} listening ports")
        report = json.loads(payload)
        ports = report["metrics"]["listening_tcp_ports"]
        # 7,200 bytes: the largest payload the probe saw lite take (test_lite_vs_local.py)
        assert len(payload) <= 7200 and len(ports["ports"]) < ports["total"]
        rid = report["header"]["report_id"]
        lite.observer.wait_for(lambda at, t, p: t == topic + "/accepted" and json.loads(p).get("reportId") == rid,
                               30, f"Device Defender accepting the cut report {rid}")
    finally:
        many.kill()
        many.wait(5)
    during = lite.component_log(DEFENDER)[log_before:]
    assert "IPC connection lost" not in during and "reports not published" not in during
    # the violation listing 400 ports went to IoT Core once; lite refused its local copy (over 255 values),
    # which must not make detect's outbox send it again
    def raised(at, t, p):
        return at >= since and t.endswith("/violations") and json.loads(p).get("violationEventType") == "in-alarm"

    lite.observer.wait_for(raised, 30, "the violation for the 400 listeners")
    later = time.time()  # a few more reports: detect's outbox has had its chances to send it again
    for _ in range(3):
        _, _, p = lite.observer.wait_for(lambda at, t, p: at > later and t == topic + "/accepted", 30,
                                         "reports after the violation")
        later = time.time()
    assert len([m for m in lite.observer.since(since) if raised(*m)]) == 1
    assert f"reports are kept at or under {LITE_MAX_IOT_PAYLOAD} bytes" in lite.component_log(DEFENDER)
