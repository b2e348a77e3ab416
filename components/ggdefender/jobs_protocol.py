"""The AWS IoT Jobs device protocol's names and limits, once, for both sides: the device's listener
(remediation/jobs.py) and the offline Jobs service of `ggdefender local` (local/cloud/jobs_service.py).

Where the AWS API defines a rule, this is the API's (tests/unit/test_aws_formats.py checks each against
botocore's service models). Stdlib only.
"""

from __future__ import annotations

import re

# \Z, not `$`: `$` would let a trailing newline through
JOB_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}\Z")  # CreateJob / UpdateJobExecution jobId
THING_NAME = re.compile(r"^[a-zA-Z0-9:_-]{1,128}\Z")  # UpdateJobExecution thingName
_DETAIL_KEY_CHARS = "a-zA-Z0-9:_-"
MAX_DETAIL_KEY = 128
DETAIL_KEY = re.compile(rf"^[{_DETAIL_KEY_CHARS}]{{1,{MAX_DETAIL_KEY}}}\Z")  # a statusDetails key
DETAIL_KEY_BAD = re.compile(rf"[^{_DETAIL_KEY_CHARS}]")  # a character a statusDetails key may not hold
MAX_DOCUMENT_CHARS = 32768  # CreateJob document

# the statuses a device may send in UpdateJobExecution, and the ones after which nothing changes any more
DEVICE_STATUSES = ("IN_PROGRESS", "SUCCEEDED", "FAILED", "REJECTED")
TERMINAL = ("SUCCEEDED", "FAILED", "REJECTED", "TIMED_OUT", "CANCELED", "REMOVED")


# -- topics (the non-namespaced Jobs MQTT API; Greengrass's `aws-gg-deployment` namespace is never used) -----
def jobs_prefix(thing: str) -> str:
    """`$aws/things/<thing>/jobs/`; ValueError for a thing name the API would refuse (no topic is built from it)."""
    if not THING_NAME.match(thing or ""):
        raise ValueError(f"invalid thing name {thing!r} (1-128 of [a-zA-Z0-9:_-])")
    return f"$aws/things/{thing}/jobs/"


def subscription_filters(thing: str) -> list:
    """What a device subscribes to: exact filters, `+` matches one level, so none of them can match a
    namespaced topic (one level more)."""
    p = jobs_prefix(thing)
    return [p + "notify", p + "notify-next", p + "start-next/+", p + "get/+", p + "+/get/+", p + "+/update/+"]


def notify(thing: str) -> str:
    return jobs_prefix(thing) + "notify"


def notify_next(thing: str) -> str:
    return jobs_prefix(thing) + "notify-next"


# what the service answers: a device's requests for any thing (the thing is read from the topic)
SERVICE_REQUEST_FILTERS = ("$aws/things/+/jobs/get", "$aws/things/+/jobs/start-next", "$aws/things/+/jobs/+/get",
                           "$aws/things/+/jobs/+/update")
