"""The whole component under `ggdefender local` with each IPC client (GGDEFENDER_IPC_CLIENT): process A speaks
IPC with awsiotsdk or with the pure-Python client (then it never maps awscrt), process B goes through A's
relay either way, and the offline Device Defender accepts the reports. Prints process A's resident memory with
each client (measured, not asserted)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from component_build import recipe_configuration

from ggdefender.local.ui import harness
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Greengrass components run on Linux")]

NAME = "ggdefender.Defender"
THING = "ipcClientThing"
HEALTH = f"ggdefender/things/{THING}/health"


@pytest.mark.parametrize("client", ["awsiotsdk", "pure"])
def test_the_component_reports_and_is_accepted_with_each_ipc_client(tmp_path, client):
    cfg = recipe_configuration()
    cfg["Collector"] = {"DevelopmentSampleIntervalSeconds": "1", "StartJitterPercent": "0"}
    with harness.LocalCore(tmp_path / "core", thing=THING) as core:
        replies = core.capture_iot(f"$aws/things/{THING}/defender/metrics/json/accepted")
        health = core.capture_iot(HEALTH)
        env = core.add_component(NAME, configuration=cfg)
        env["GGDEFENDER_STATE_DIR"] = str(tmp_path / "state")
        env["GGDEFENDER_IPC_CLIENT"] = client
        os.makedirs(env["GGDEFENDER_STATE_DIR"])
        proc = core.spawn(NAME, [sys.executable, "-m", "ggdefender", "run"], env=env)
        try:
            replies.wait_for(lambda m: len(m) >= 2, timeout=90)
            health.wait_for(lambda m: any((json.loads(p).get("ipcClient") or {}).get("name") for _, p, *_ in m),
                            timeout=30)
        except TimeoutError:
            raise AssertionError(core.log_text(NAME)[-3000:]) from None
        accepted = {a["reportId"] for a in core.service("DefenderService").accepted}
        assert {json.loads(p)["reportId"] for _, p, *_ in replies} <= accepted
        doc = next(json.loads(p) for _, p, *_ in reversed(list(health)) if json.loads(p).get("ipcClient"))
        assert doc["ipcClient"]["name"] == client
        assert f"IPC client: {client}" in core.log_text(NAME)
        # the component heard Device Defender's answer too (its IoT Core subscription, through this client)
        core.wait_for_log(NAME, f"report {json.loads(replies[0][1])['reportId']} accepted")
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert ("_awscrt" in maps) == (client == "awsiotsdk")  # pure: awscrt is never loaded
        rss = psutil.Process(proc.pid).memory_info().rss / 2**20
        print(f"\nprocess A with the {client} IPC client: {rss:.1f} MiB RSS after two accepted reports")
        assert proc.poll() is None  # still running


def test_an_unknown_ipc_client_stops_process_a_at_start_saying_why(tmp_path):
    with harness.LocalCore(tmp_path / "core", thing=THING) as core:
        env = core.add_component(NAME, configuration=recipe_configuration())
        env["GGDEFENDER_STATE_DIR"] = str(tmp_path / "state")
        env["GGDEFENDER_IPC_CLIENT"] = "crt"
        done = subprocess.run([sys.executable, "-m", "ggdefender", "run"], env=env, capture_output=True, text=True,
                              timeout=60)
    assert done.returncode == 2, done.stderr
    assert "GGDEFENDER_IPC_CLIENT='crt' is not an IPC client: use one of auto, awsiotsdk, pure" in done.stderr
    assert "Traceback" not in done.stderr
