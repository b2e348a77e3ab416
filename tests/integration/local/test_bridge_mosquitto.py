"""`--broker`: IoT Core traffic bridged to a real mosquitto started on a free loopback port."""

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ggdefender.local.ui.harness import LocalCore

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[2] / "data" / "components"
MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def broker(tmp_path):
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    port = _free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"mosquitto did not start: {proc.stderr.read().decode(errors='replace')}")
            time.sleep(0.05)
    yield f"mqtt://127.0.0.1:{port}", port
    proc.terminate()
    proc.wait(10)


class Watcher:
    """An outside MQTT client (like mosquitto_sub) recording everything."""

    def __init__(self, port: int):
        import paho.mqtt.client as mqtt

        self.messages = []
        self.cond = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        subscribed = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([("#", 1), ("$aws/#", 1)])
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(10), "watcher could not subscribe"

    def _on_message(self, client, userdata, msg):
        with self.cond:
            self.messages.append((msg.topic, bytes(msg.payload)))
            self.cond.notify_all()

    def wait_for(self, predicate, timeout=30):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate(self.messages):
                left = deadline - time.monotonic()
                assert left > 0, f"broker messages: {self.messages}"
                self.cond.wait(left)

    def publish(self, topic, payload):
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def test_component_traffic_goes_out_and_broker_traffic_comes_in(tmp_path, broker):
    url, port = broker
    watcher = Watcher(port)
    try:
        with LocalCore(tmp_path / "gg", thing="testThing", broker=url) as core:
            status = core.capture_local("test/echo/status")
            core.deploy(DATA / "recipes", DATA / "artifacts", {"test.Echo": "1.0.0"},
                        update_config={"test.Echo": {"MERGE": {"Python": sys.executable}}})
            status.wait_for(lambda m: any(x[1].get("event") == "ready" for x in m), 60)
            # the component's publish reached the broker
            watcher.wait_for(lambda m: ("test/things/testThing/hello", b"hello") in m)
            # an outside client drives the component through the broker; its echo comes back out once
            watcher.publish("test/things/testThing/in", b"from-outside")
            watcher.wait_for(lambda m: ("test/things/testThing/out", b"from-outside") in m)
            # the offline Device Defender answers a report injected through the broker
            report = {"header": {"report_id": 77, "version": "1.0"},
                      "metrics": {"listening_tcp_ports": {"ports": [], "total": 0}}}
            topic = "$aws/things/testThing/defender/metrics/json"
            watcher.publish(topic, json.dumps(report).encode())
            watcher.wait_for(lambda m: any(t == topic + "/accepted" for t, _ in m))
            assert core.service("DefenderService").accepted[0]["reportId"] == 77
            time.sleep(0.5)  # let any echo loop show itself before counting
            bridge = core.runtime.bridge
            assert bridge.received >= 2 and bridge.sent >= 3
        counts = {}
        for t, p in watcher.messages:
            counts[(t, p)] = counts.get((t, p), 0) + 1
        # no echo loops: every message crossed the bridge once
        assert counts[("test/things/testThing/in", b"from-outside")] == 1
        assert counts[("test/things/testThing/out", b"from-outside")] == 1
        assert counts[(topic, json.dumps(report).encode())] == 1
        assert sum(1 for t, _ in watcher.messages if t == topic + "/accepted") == 1
    finally:
        watcher.close()


def test_unreachable_broker_is_a_clear_error(tmp_path):
    from ggdefender.local.cloud.bridge import BridgeError

    port = _free_port()
    core = LocalCore(tmp_path / "gg", broker=f"mqtt://127.0.0.1:{port}")
    with pytest.raises(BridgeError, match="cannot reach the broker"):
        core.start()
    assert not (tmp_path / "gg" / "ipc.socket").exists()
