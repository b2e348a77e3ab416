"""Device Defender's device-side metrics endpoint, offline.

Listens on `$aws/things/+/defender/metrics/+`, validates each report with the collector's validator
(`ggdefender.collector.schema.validate_report`, the same rules the agent checks before publishing), replies on
`.../accepted` or `.../rejected` in the request's encoding, and appends accepted reports to
`<root>/cloud/defender/<thing>/reports.jsonl` (one `{"receivedAt", "topic", "report"}` object per line, the
report in long-name JSON; the Detect replay reads this file).

Emulator policy where AWS is silent (see ../shared/reference/device-defender.md §1.7 and G1): every failure is
`ErrorCode: InvalidPayload` with a specific `ErrorMessage`; a report_id the thing already used is rejected as a
duplicate (AWS discards it); a lower report_id than the last one is accepted with a warning.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any, Optional

from ggdefender.collector.report import to_long
from ggdefender.collector.schema import validate_report

from .core import thing_name_problem  # also keeps "..", "." out of <root>/cloud/defender/<thing>/

log = logging.getLogger("ggdefender.local.cloud_defender")

TOPIC_FILTER = "$aws/things/+/defender/metrics/+"
FORMATS = ("json", "cbor")
MAX_REMEMBERED_IDS = 100_000  # per thing, for duplicate detection
MAX_KEPT_REPLIES = 1000


def _decode(payload: bytes, fmt: str) -> Any:
    if fmt == "json":
        return json.loads(payload)
    import cbor2

    return cbor2.loads(payload)


def _encode(obj: dict, fmt: str) -> bytes:
    if fmt == "json":
        return json.dumps(obj, separators=(",", ":")).encode()
    import cbor2

    return cbor2.dumps(obj)


def _report_id(report: Any) -> Optional[int]:
    if not isinstance(report, dict):
        return None
    header = report.get("header", report.get("hed"))
    if not isinstance(header, dict):
        return None
    rid = header.get("report_id", header.get("rid"))
    return rid if isinstance(rid, int) and not isinstance(rid, bool) else None


class DefenderService:
    """The offline Device Defender metrics endpoint (a cloud service of `ggdefender local`)."""

    def __init__(self, core, root_dir: Path, view=None):
        self.core = core
        self.view = view
        self.store = Path(root_dir) / "cloud" / "defender"
        self.accepted: list = []  # dicts: thing, format, reportId, report (long names), topic, receivedAt
        self.rejected: list = []  # dicts: thing, format, reportId, errorMessage, topic, receivedAt
        self._ids: dict[str, collections.OrderedDict] = {}
        self._last: dict[str, int] = {}
        self._lock = threading.Lock()
        self._unsubscribe = core.subscribe_iot(TOPIC_FILTER, self._on_report)

    # -- bookkeeping ---------------------------------------------------------------------------------
    def reports_file(self, thing: str) -> Path:
        return self.store / thing / "reports.jsonl"

    def _seen_ids(self, thing: str) -> collections.OrderedDict:
        seen = self._ids.get(thing)
        if seen is None:
            seen = collections.OrderedDict()
            path = self.reports_file(thing)
            if path.is_file():  # report ids survive a restart of the core, as they do in AWS
                with open(path, encoding="utf-8", errors="replace") as fh:
                    for line in fh:
                        try:
                            rid = _report_id(json.loads(line).get("report"))
                        except (ValueError, AttributeError):
                            continue
                        if rid is not None:
                            seen[rid] = True
                            self._last[thing] = rid
                while len(seen) > MAX_REMEMBERED_IDS:
                    seen.popitem(last=False)
            self._ids[thing] = seen
        return seen

    def _keep(self, bucket: list, item: dict) -> None:
        bucket.append(item)
        if len(bucket) > MAX_KEPT_REPLIES:
            del bucket[: len(bucket) - MAX_KEPT_REPLIES]

    # -- the endpoint ----------------------------------------------------------------------------------
    def _on_report(self, topic: str, payload: bytes, source: str) -> None:
        parts = topic.split("/")
        if len(parts) != 6 or parts[5] not in FORMATS:
            if self.view is not None:
                self.view.note("defender", f"{topic}: not a metrics topic (format must be json or cbor); ignored",
                               level="warning")
            return
        thing, fmt = parts[2], parts[5]
        now = time.time()
        problems: list
        report: Any = None
        problem = thing_name_problem(thing)
        if problem:
            problems = [problem]
        else:
            try:
                report = _decode(payload, fmt)
            except Exception as exc:
                problems = [f"payload is not valid {fmt.upper()}: {exc}"]
            else:
                problems = validate_report(payload, fmt)
        rid = _report_id(report)
        warning = ""
        with self._lock:
            if not problems and rid is not None:
                seen = self._seen_ids(thing)
                if rid in seen:
                    problems = [f"report_id {rid} was already received from {thing} (duplicate discarded)"]
                else:
                    last = self._last.get(thing)
                    if last is not None and rid < last:
                        warning = f"report_id {rid} is lower than the previous {last}"
                    seen[rid] = True
                    if len(seen) > MAX_REMEMBERED_IDS:
                        seen.popitem(last=False)
                    self._last[thing] = rid
            if problems:
                self._reject(thing, fmt, topic, rid, problems, now, len(payload))
            else:
                self._accept(thing, fmt, topic, rid, report, now, len(payload), warning)

    def _accept(self, thing: str, fmt: str, topic: str, rid: int, report: dict, now: float, size: int,
                warning: str) -> None:
        long_report = to_long(report)
        record = {"receivedAt": now, "topic": topic, "report": long_report}
        path = self.reports_file(thing)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._keep(self.accepted, {"thing": thing, "format": fmt, "reportId": rid, "report": long_report,
                                   "topic": topic, "receivedAt": now})
        reply = {"thingName": thing, "reportId": rid, "status": "ACCEPTED", "timestamp": int(now * 1000)}
        self.core.publish_iot(f"{topic}/accepted", _encode(reply, fmt), source="cloud")
        if self.view is not None:
            self.view.report(thing=thing, fmt=fmt, accepted=True, report_id=rid, size=size, detail=warning)

    def _reject(self, thing: str, fmt: str, topic: str, rid: Optional[int], problems: list, now: float,
                size: int) -> None:
        message = "Malformed metrics report: " + "; ".join(problems[:20])
        if len(problems) > 20:
            message += f"; and {len(problems) - 20} more"
        reply: dict = {"thingName": thing, "status": "REJECTED",
                       "statusDetails": {"ErrorCode": "InvalidPayload", "ErrorMessage": message},
                       "timestamp": int(now * 1000)}
        if rid is not None:
            reply["reportId"] = rid
        self._keep(self.rejected, {"thing": thing, "format": fmt, "reportId": rid, "errorMessage": message,
                                   "topic": topic, "receivedAt": now})
        self.core.publish_iot(f"{topic}/rejected", _encode(reply, fmt), source="cloud")
        if self.view is not None:
            self.view.report(thing=thing, fmt=fmt, accepted=False, report_id=rid, size=size, detail=message)

    # -- control channel -------------------------------------------------------------------------------
    def control_commands(self) -> dict:
        return {"defender-reports": self._cmd_reports}

    def _cmd_reports(self, args: dict) -> dict:
        limit = max(1, min(int(args.get("limit", 20)), 1000))
        with self._lock:
            return {"accepted": len(self.accepted), "rejected": len(self.rejected),
                    "lastAccepted": [{k: v for k, v in a.items() if k != "report"} for a in self.accepted[-limit:]],
                    "lastRejected": self.rejected[-limit:]}

    def close(self) -> None:
        self._unsubscribe()
