"""The lite tests' probe component: tries IPC calls its recipe does or does not grant and writes each outcome
(ok or the error's class name) to the JSON file named by argv[1], then stays up until stopped."""

import json
import os
import sys
import time

from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
from awsiot.greengrasscoreipc.model import JsonMessage, PublishMessage


def main() -> None:
    out, thing = sys.argv[1], sys.argv[2]
    client = GreengrassCoreIPCClientV2()
    message = PublishMessage(json_message=JsonMessage(message={"probe": True}))
    calls = {
        "publish-granted-local": lambda: client.publish_to_topic(
            topic=f"ggdefender/lite-probe/{thing}", publish_message=message),
        "publish-ungranted-local": lambda: client.publish_to_topic(
            topic="ggdefender/collector/commands", publish_message=message),
        "subscribe-ungranted-local": lambda: client.subscribe_to_topic(
            topic="ggdefender/collector/events", on_stream_event=lambda e: None),
        "publish-ungranted-iot": lambda: client.publish_to_iot_core(
            topic_name=f"$aws/things/{thing}/defender/metrics/json", qos="1", payload=b"{}"),
        "subscribe-ungranted-iot": lambda: client.subscribe_to_iot_core(
            topic_name=f"$aws/things/{thing}/jobs/notify-next", qos="1", on_stream_event=lambda e: None),
        "restart-other-component": lambda: client.restart_component(component_name="ggdefender.Defender"),
    }
    outcomes = {}
    for name, call in calls.items():
        try:
            call()
            outcomes[name] = "ok"
        except Exception as exc:  # the outcome is the error's class
            outcomes[name] = type(exc).__name__
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(outcomes, f)
    os.replace(tmp, out)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
