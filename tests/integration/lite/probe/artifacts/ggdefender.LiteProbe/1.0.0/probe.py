"""The lite tests' probe component: makes IPC calls its recipe does or does not grant, and other calls whose
answer differs between cores, and writes each outcome ("ok" plus the value, or the error's class name) to the
JSON file named by argv[1]; then stays up until stopped. The same probe runs on nucleus lite and under
`ggdefender local`, and the tests compare the outcomes."""

import datetime
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
            topic=f"ggdefender/lite-probe/{thing}", publish_message=message) and None,
        "publish-ungranted-local": lambda: client.publish_to_topic(
            topic="ggdefender/collector/commands", publish_message=message) and None,
        "subscribe-ungranted-local": lambda: client.subscribe_to_topic(
            topic="ggdefender/collector/events", on_stream_event=lambda e: None) and None,
        "publish-ungranted-iot": lambda: client.publish_to_iot_core(
            topic_name=f"$aws/things/{thing}/defender/metrics/json", qos="1", payload=b"{}") and None,
        "subscribe-ungranted-iot": lambda: client.subscribe_to_iot_core(
            topic_name=f"$aws/things/{thing}/jobs/notify-next", qos="1", on_stream_event=lambda e: None) and None,
        "restart-other-component": lambda: client.restart_component(component_name="ggdefender.Defender") and None,
        "get-own-number": lambda: client.get_configuration(key_path=["Number"]).value,
        "get-own-missing-key": lambda: client.get_configuration(key_path=["NoSuchKey"]).value,
        "get-nucleus-region": lambda: client.get_configuration(
            component_name="aws.greengrass.Nucleus", key_path=["awsRegion"]).value,
        "update-own-access-control": lambda: client.update_configuration(
            key_path=["accessControl"], value_to_merge={"x": {}},
            timestamp=datetime.datetime.now(datetime.timezone.utc)) and None,
        "update-state-running": lambda: client.update_state(state="RUNNING") and None,
    }
    # which of the variables a core sets for a component are there (names only: values differ by design)
    outcomes = {"core-environment": "ok " + json.dumps(sorted(
        k for k in os.environ if k == "SVCUID" or k.startswith(("AWS_", "GG_", "GGC_"))))}
    for name, call in calls.items():
        try:
            value = call()
            outcomes[name] = "ok" if value is None else f"ok {json.dumps(value, sort_keys=True)}"
        except Exception as exc:  # the outcome is the error's class
            outcomes[name] = type(exc).__name__
    # the largest IoT Core payload the core takes over IPC; last, as a core may drop the connection over it
    dropped = False
    for size in (7000, 7200, 7400, 16000):
        name = f"publish-iot-{size}-bytes"
        if dropped:
            outcomes[name] = "not tried: connection gone"
            continue
        try:
            client.publish_to_iot_core(topic_name=f"ggdefender/lite-probe/{thing}", qos="0", payload=b"x" * size)
            outcomes[name] = "ok"
        except Exception as exc:
            dropped = type(exc).__name__ in ("StreamClosedError", "ConnectionClosedError", "EventStreamError")
            outcomes[name] = "connection dropped" if dropped else type(exc).__name__
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(outcomes, f)
    os.replace(tmp, out)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
