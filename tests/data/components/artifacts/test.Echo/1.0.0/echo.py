"""Test component for `ggdefender local`: the unmodified awsiotsdk IPC client, nothing from ggdefender.

Writes what it sees into its work folder (env.json, events.log) and reports on the local topic
test/echo/status so a test can follow it. Local message {"command": ...} on test/echo/in drives it:
"restart" (RestartComponent on itself), "errored" (UpdateState ERRORED), "exit" (exit code given).
IoT Core messages on test/things/<thing>/in are echoed to test/things/<thing>/out.
"""

import json
import os
import signal
import sys
import threading
import time

from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
from awsiot.greengrasscoreipc.model import (BinaryMessage, JsonMessage, PublishMessage, QOS,
                                             UnauthorizedError)

NAME = os.environ.get("ECHO_NAME", "test.Echo")
THING = os.environ["AWS_IOT_THING_NAME"]
stop = threading.Event()


def record(line):
    with open("events.log", "a") as fh:
        fh.write(line + "\n")
    print(line, flush=True)


def on_term(signum, frame):
    record("sigterm")
    stop.set()


signal.signal(signal.SIGTERM, on_term)
record("start")
with open("env.json", "w") as fh:
    json.dump({k: v for k, v in os.environ.items()
               if k.startswith(("AWS_", "SVCUID", "GGC_", "ECHO_"))} | {"cwd": os.getcwd()}, fh)

ipc = GreengrassCoreIPCClientV2()


def status(event, **fields):
    msg = dict(event=event, pid=os.getpid(), **fields)
    ipc.publish_to_topic(topic="test/echo/status", publish_message=PublishMessage(json_message=JsonMessage(message=msg)))


config = ipc.get_configuration(key_path=[]).value
record("config " + json.dumps(config.get("Mode")))
if config.get("Mode") == "fail":
    record("failing on purpose")
    sys.exit(3)

try:
    ipc.publish_to_iot_core(topic_name=f"test/things/{THING}/hello", qos=QOS.AT_LEAST_ONCE, payload=b"hello")
    hello = "ok"
except UnauthorizedError as exc:
    hello = "UnauthorizedError"
    record("hello denied: " + str(exc.message))


def on_iot(event):
    ipc.publish_to_iot_core(topic_name=f"test/things/{THING}/out", qos=QOS.AT_LEAST_ONCE,
                            payload=bytes(event.message.payload))


def on_local(event):
    msg = event.json_message.message if event.json_message else {}
    cmd = msg.get("command")
    record("command " + str(cmd))
    if cmd == "restart":
        resp = ipc.restart_component(component_name=NAME)
        record("restart " + str(resp.restart_status))
    elif cmd == "errored":
        ipc.update_state(state="ERRORED")
    elif cmd == "exit":
        os._exit(int(msg.get("code", 0)))


def on_config(event):
    value = ipc.get_configuration(key_path=["Mode"]).value
    status("config", mode=value.get("Mode"), keyPath=list(event.configuration_update_event.key_path))


try:
    ipc.subscribe_to_iot_core(topic_name=f"test/things/{THING}/in", qos=QOS.AT_LEAST_ONCE, on_stream_event=on_iot)
except UnauthorizedError:
    record("iot subscribe denied")
ipc.subscribe_to_topic(topic="test/echo/in", on_stream_event=on_local)
ipc.subscribe_to_configuration_update(key_path=[], on_stream_event=on_config)
ipc.update_state(state="RUNNING")
status("ready", hello=hello, greeting=os.environ.get("ECHO_GREETING"))
record("ready " + hello)
while not stop.wait(0.2):
    pass
record("exiting")
sys.exit(0)
