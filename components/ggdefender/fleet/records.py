"""One input line of the streaming job -> a `Report` (thing, event time, report id, metrics, size), or a
`RecordError` naming the problem.

Two line formats are read:

- the topic rule's output (docs/fleet.md's SQL: the report's fields plus `thingName` and `receivedAt`, epoch
  milliseconds from IoT Core's `timestamp()`); a CBOR rule's `{"report": <base64 CBOR>, "thingName"}` too;
- a line of `ggdefender local`'s `<root>/cloud/rules/<rule>/messages.jsonl`: `{"receivedAt"` (epoch SECONDS,
  the local core's clock), `"topic": "$aws/rules/<rule>/things/<thing>/defender/metrics/json|cbor"`,
  `"payloadBase64"}`.

Event time is `receivedAt` (the broker's clock: a device cannot skew it); without it, the report id (the
collector's ids are epoch milliseconds, docs/detect.md). `size` is the payload's bytes, for
`aws:message-byte-size` (for a rule's JSON output the report is re-encoded compactly, as the device sent it).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any, Optional

from ggdefender.collector.report import decode
from ggdefender.detect import metrics as M
from ggdefender.ipc import IOT_CORE_MAX_PAYLOAD

# a base64 payload of IoT Core's largest message plus the envelope
MAX_LINE_BYTES = IOT_CORE_MAX_PAYLOAD * 4 // 3 + 4096
THING_RE = re.compile(r"[a-zA-Z0-9:_-]{1,128}\Z")
TOPIC_RE = re.compile(r"\$aws/rules/[a-zA-Z0-9_]{1,128}/things/([^/]+)/defender/metrics/(json|cbor)\Z")
RULE_KEYS = ("thingName", "receivedAt")
# event times outside these bounds are a unit mistake (seconds for ms) or garbage, not a report
MIN_EVENT_MS = 946_684_800_000       # 2000-01-01
MAX_EVENT_MS = 4_102_444_800_000     # 2100-01-01


class RecordError(ValueError):
    """A line that is not a report; `reason` is a short category for the counters."""

    def __init__(self, reason: str, detail: str):
        self.reason = reason
        super().__init__(f"{reason}: {detail}")


@dataclass(frozen=True)
class Report:
    thing: str
    at_ms: int            # event time, epoch milliseconds
    report_id: int
    metrics: dict         # {metric name: datapoint}, device-side, custom and the derivable cloud-side ones
    size: int             # payload bytes


def _int(v: Any) -> Optional[int]:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _event_ms(received: Any, scale: int, rid: int) -> int:
    if received is not None:
        if not isinstance(received, (int, float)) or isinstance(received, bool):
            raise RecordError("bad-time", f"receivedAt must be a number, got {type(received).__name__}")
        at = int(round(received * scale))
        what = "receivedAt"
    else:
        at, what = rid, "report_id (no receivedAt)"
    if not MIN_EVENT_MS <= at <= MAX_EVENT_MS:
        raise RecordError("bad-time", f"{what} {received if received is not None else rid} is not an epoch time "
                                      f"between 2000 and 2100 (receivedAt: ms from a rule, s from ggdefender local)")
    return at


def _report_id(report: dict) -> int:
    header = report.get("header")
    rid = _int(header.get("report_id")) if isinstance(header, dict) else None
    if rid is None or rid < 0:
        raise RecordError("no-report-id", "the report has no header.report_id (a non-negative integer)")
    return rid


def _b64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise RecordError("bad-payload", f"{what} must be a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RecordError("bad-payload", f"{what} is not base64 ({exc})") from None


def _decode(payload: bytes, fmt: str) -> dict:
    if len(payload) > IOT_CORE_MAX_PAYLOAD:
        raise RecordError("too-large", f"payload of {len(payload)} bytes (IoT Core's limit: {IOT_CORE_MAX_PAYLOAD})")
    try:
        report = decode(payload, fmt)
    except Exception as exc:  # cbor2 and json raise several types for malformed input
        raise RecordError("bad-payload", f"payload is not valid {fmt.upper()} ({exc})") from None
    if not isinstance(report, dict):
        raise RecordError("bad-payload", "the payload is not a report object")
    return report


def parse_line(line: Any, custom_types: Optional[dict] = None) -> Report:
    """One JSON line (str or bytes) -> Report; RecordError otherwise."""
    if isinstance(line, str):
        line = line.encode("utf-8", "surrogatepass")
    if len(line) > MAX_LINE_BYTES:
        raise RecordError("too-large", f"line of {len(line)} bytes (limit {MAX_LINE_BYTES})")
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise RecordError("not-json", str(exc)) from None
    if not isinstance(obj, dict):
        raise RecordError("not-json", "the line is not a JSON object")
    if "topic" in obj and "payloadBase64" in obj:  # ggdefender local's rules sink
        topic = obj["topic"]
        m = TOPIC_RE.match(topic) if isinstance(topic, str) else None
        if not m:
            raise RecordError("bad-topic", f"topic {topic!r} is not "
                                           "$aws/rules/<rule>/things/<thing>/defender/metrics/json|cbor")
        thing, fmt = m.group(1), m.group(2)
        payload = _b64(obj["payloadBase64"], "payloadBase64")
        report = _decode(payload, fmt)
        size, scale = len(payload), 1000
    else:  # the topic rule's output
        thing = obj.get("thingName")
        if isinstance(obj.get("report"), str):  # a CBOR rule: encode(*, 'base64') AS report
            payload = _b64(obj["report"], "report")
            report = _decode(payload, "cbor")
            size = len(payload)
        else:
            report = {k: v for k, v in obj.items() if k not in RULE_KEYS}
            size = len(json.dumps(report, separators=(",", ":")).encode())
        scale = 1
    if not isinstance(thing, str) or not THING_RE.match(thing):
        raise RecordError("bad-thing", f"thing name {thing!r} is not 1-128 of [a-zA-Z0-9:_-]")
    rid = _report_id(report)
    at = _event_ms(obj.get("receivedAt"), scale, rid)
    values = M.extract(report, custom_types)
    # the cloud-side metrics the stream sees itself: one message of this size
    values["aws:num-messages-sent"] = 1
    values["aws:message-byte-size"] = size
    return Report(thing, at, rid, values, size)
