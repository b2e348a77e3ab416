#!/usr/bin/env python3
"""Example out-of-process custom-metrics plugin for ggdefender.Defender.

Every `IntervalSeconds` it publishes the number of file descriptors allocated on the device (first field of
/proc/sys/fs/file-nr; a leak or a flood of connections shows up here) as a `number` custom metric on the
local topic `ggdefender/custom-metrics`. ggdefender.Defender validates the sample and puts it in its next
Device Defender report. Any language works the same way: publish this JSON on that topic.

Settings come from this component's own configuration over IPC (no recipe variables in a shell command):
`IntervalSeconds` (default 60) and `MetricName` (default `open_file_descriptors`).
"""

import logging
import re
import sys
import time

from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
from awsiot.greengrasscoreipc.model import JsonMessage, PublishMessage

TOPIC = "ggdefender/custom-metrics"
SOURCE = "ggdefender.ExamplePlugin"
MAX_FAILURES = 5  # consecutive publish failures before exiting, so Greengrass restarts us

log = logging.getLogger("example_plugin")


def open_file_descriptors(path: str = "/proc/sys/fs/file-nr") -> int:
    with open(path, encoding="ascii") as handle:
        allocated, _unused, _maximum = handle.read().split()
    return int(allocated)


def read_settings(client) -> tuple:
    config = client.get_configuration(key_path=[]).value or {}
    interval = float(config.get("IntervalSeconds", 60))  # Greengrass may hand numbers over as strings
    if not 1 <= interval <= 86400:
        raise ValueError(f"IntervalSeconds must be between 1 and 86400, got {interval:g}")
    metric = str(config.get("MetricName", "open_file_descriptors"))
    if not re.fullmatch(r"[A-Za-z0-9:_-]{1,128}", metric) or metric.lower().startswith("aws:"):
        raise ValueError(f"MetricName {metric!r} is not a valid custom metric name")
    return interval, metric


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    client = GreengrassCoreIPCClientV2()
    try:
        interval, metric = read_settings(client)
    except ValueError as exc:
        log.error("bad configuration: %s", exc)
        return 2
    log.info("publishing %s every %g s on %s", metric, interval, TOPIC)
    failures = 0
    while True:
        sample = {"metric": metric, "type": "number", "value": open_file_descriptors(),
                  "timestamp": round(time.time(), 3), "source": SOURCE}
        try:
            client.publish_to_topic(topic=TOPIC, publish_message=PublishMessage(json_message=JsonMessage(message=sample)))
            failures = 0
        except Exception as exc:  # IPC errors: retry a few times, then let Greengrass restart us
            failures += 1
            log.warning("publish failed (%d/%d): %s", failures, MAX_FAILURES, exc)
            if failures >= MAX_FAILURES:
                return 1
        time.sleep(interval)


if __name__ == "__main__":
    sys.exit(main())
