"""Process B behind the IPC relay, in the running component under `ggdefender local`.

B publishes reports and answers collect-now through A's relay, yet it has no IPC token in its environment and
never maps awscrt's native library (the ~13 MiB the relay exists to save); A does. A restarted B gets a fresh
relay and A's subscriptions of the old one are gone (the core sees no growing subscriber list).
"""

import os
import signal
import sys
import threading
from pathlib import Path

import psutil
import pytest

from component_build import recipe_configuration

from ggdefender.local.ui import harness
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Greengrass components run on Linux")]

NAME = "ggdefender.Defender"
THING = "relayThing"


def _config() -> dict:
    # the recipe's configuration and a partial MERGE of two Collector keys, as a deployment would send:
    # every other setting comes from the component's code defaults (defaults.py)
    cfg = recipe_configuration()
    cfg["Collector"] = {"DevelopmentSampleIntervalSeconds": "1", "StartJitterPercent": "0"}
    return cfg


def _part(a_pid: int):
    for child in psutil.Process(a_pid).children():
        if "part" in child.cmdline():
            return child
    return None


def _wait(cond, what, tries=600):
    ev = threading.Event()
    for _ in range(tries):
        value = cond()
        if value:
            return value
        ev.wait(0.1)
    raise AssertionError(f"not reached: {what}")


def _maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def _environ(pid: int) -> dict:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


def test_process_b_works_through_the_relay_without_token_or_awscrt(tmp_path):
    with harness.LocalCore(tmp_path / "core", thing=THING) as core:
        reports = core.capture_iot(f"$aws/things/{THING}/defender/metrics/json")
        events = core.capture_local("ggdefender/collector/events")
        env = core.add_component(NAME, configuration=_config())
        env["GGDEFENDER_STATE_DIR"] = str(tmp_path / "state")
        os.makedirs(env["GGDEFENDER_STATE_DIR"])
        proc = core.spawn(NAME, [sys.executable, "-m", "ggdefender", "run"], env=env)
        try:
            reports.wait_for(lambda m: len(m) >= 2, timeout=90)
        except TimeoutError:
            raise AssertionError(core.log_text(NAME)[-3000:]) from None
        part = _wait(lambda: _part(proc.pid), "process B running")

        # A holds the IPC connection (so the check below can fail); B holds neither the library nor the token
        assert "_awscrt" in _maps(proc.pid)
        assert "_awscrt" not in _maps(part.pid)
        b_env = _environ(part.pid)
        assert "SVCUID" not in b_env and "AWS_CONTAINER_AUTHORIZATION_TOKEN" not in b_env
        assert b_env.get("GGDEFENDER_RELAY_FD", "").isdigit()

        # a command in through a relayed subscription, the answer out through a relayed publish
        core.publish_local("ggdefender/collector/commands", {"command": "collect-now", "requestId": "relay-1"})
        events.wait_for(lambda m: any(isinstance(x[1], dict) and x[1].get("requestId") == "relay-1"
                                      and x[1].get("event") == "report-published" for x in m), timeout=60)

        # B killed: A restarts it with a fresh relay, and the new B works the same
        part.send_signal(signal.SIGKILL)
        part.wait(30)
        new = _wait(lambda: (p := _part(proc.pid)) is not None and p.pid != part.pid and p, "process B restarted")
        count = len(reports)
        reports.wait_for(lambda m: len(m) >= count + 2, timeout=90)
        assert "_awscrt" not in _maps(new.pid)
        core.publish_local("ggdefender/collector/commands", {"command": "collect-now", "requestId": "relay-2"})
        events.wait_for(lambda m: any(isinstance(x[1], dict) and x[1].get("requestId") == "relay-2"
                                      and x[1].get("event") == "report-published" for x in m), timeout=60)
        # exactly one answer to relay-2: the dead incarnation's subscription was closed, not left delivering
        assert sum(1 for x in list(events) if isinstance(x[1], dict) and x[1].get("requestId") == "relay-2") == 1
        # every call B makes is on the allow-list
        assert "denied to the collector process" not in core.log_text(NAME)
