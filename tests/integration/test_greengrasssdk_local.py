"""The Greengrass v1 facade in a real component process under `ggdefender local` (real IPC, real authorization).

v1-style code (`client('iot-data').publish(...)`) reaches IoT Core; a publish the component's accessControl
does not allow is dropped under BestEffort and raises PublishError under AllOrException, as v1 code expects.
"""

import subprocess
import sys

import pytest

from ggdefender.local.ui import harness
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Greengrass components run on Linux")]

NAME = "acme.V1Port"
V1_CODE = r'''
import json, sys
from ggdefender import greengrasssdk

client = greengrasssdk.client("iot-data")
client.publish(topic="factory/line1/temp", payload=json.dumps({"t": 21.5}))
client.publish(topic="factory/line1/temp", payload=b"raw", queueFullPolicy="AllOrException")
client.publish(topic="factory/forbidden", payload="dropped", queueFullPolicy="BestEffort")
try:
    client.publish(topic="factory/forbidden", payload="x", queueFullPolicy="AllOrException")
except greengrasssdk.PublishError as exc:
    print("PublishError:", exc)
    sys.exit(0)
sys.exit(3)
'''


def test_v1_publish_over_real_ipc(tmp_path):
    access = {"aws.greengrass.ipc.mqttproxy": {f"{NAME}:mqttproxy:1": {
        "operations": ["aws.greengrass#PublishToIoTCore"], "resources": ["factory/line1/temp"]}}}
    with harness.LocalCore(tmp_path / "core") as core:
        captured = core.capture_iot("factory/#")
        env = core.add_component(NAME, configuration={"accessControl": access})
        proc = core.spawn(NAME, [sys.executable, "-c", V1_CODE], env=env)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"v1 code did not finish:\n{core.log_text(NAME)}")
        log = core.log_text(NAME)
        assert code == 0, log
        captured.wait_for(lambda msgs: len(msgs) >= 2, timeout=30)
        messages = [(topic, bytes(payload)) for topic, payload, *_ in captured]
    assert messages == [("factory/line1/temp", b'{"t": 21.5}'), ("factory/line1/temp", b"raw")]
    assert "PublishError: publish to 'factory/forbidden' failed" in log
    assert 'Publish to "factory/forbidden" dropped (BestEffort)' in log
