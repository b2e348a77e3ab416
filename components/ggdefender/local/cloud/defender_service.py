"""Device Defender's device-side metrics endpoint, offline.

Listens on `$aws/things/+/defender/metrics/+`, validates each report with the collector's validator
(`ggdefender.collector.schema.validate_report`, the same rules the agent checks before publishing), replies on
`.../accepted` or `.../rejected` in the request's encoding, and appends accepted reports to
`<root>/cloud/defender/<thing>/reports.jsonl` (one `{"receivedAt", "topic", "report"}` object per line, the
report in long-name JSON; the Detect replay reads this file).

Emulator policy where AWS is silent: every failure is
`ErrorCode: InvalidPayload` with a specific `ErrorMessage`; a report_id the thing already used is rejected as a
duplicate (AWS discards it); a lower report_id than the last one is accepted with a warning.

In memory it keeps only bounded summaries (the MAX_* constants below); the reports themselves are on disk.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any, Optional

from ggdefender import topics
from ggdefender.collector.report import to_long
from ggdefender.collector.schema import validate_report

from ..nucleus.core import thing_name_problem  # also keeps "..", "." out of <root>/cloud/defender/<thing>/
from .services import Declaration

log = logging.getLogger("ggdefender.local.cloud.defender_service")

TOPIC_FILTER = topics.metrics("+", "+")  # every thing, every format: the topic the device publishes on
# Memory is bounded whatever the components publish (a soak at one report a second must not grow the core):
MAX_REMEMBERED_IDS = 10_000  # report ids per thing for duplicate detection (~35 days at 300 s; ~1 MiB)
MAX_THINGS = 8  # things whose ids are remembered: the topic names the thing, so a component could invent many
MAX_KEPT_REPLIES = 1000  # summaries of the latest accepted and rejected reports (`defender-reports`, tests)
MAX_KEPT_REPORTS = 20  # of those, the newest keep the whole report in memory; every one is in reports.jsonl


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

    def __init__(self, core: Any, root_dir: Path, view: Any = None):
        self.core = core
        self.view = view
        self.store = Path(root_dir) / "cloud" / "defender"
        # dicts: thing, format, reportId, topic, receivedAt, bytes, and "report" (long names) for the newest
        # MAX_KEPT_REPORTS only
        self.accepted: collections.deque = collections.deque(maxlen=MAX_KEPT_REPLIES)
        self.rejected: collections.deque = collections.deque(maxlen=MAX_KEPT_REPLIES)  # ... errorMessage
        self.counts = {"accepted": 0, "rejected": 0}  # since the core started
        self._ids: "collections.OrderedDict[str, collections.OrderedDict]" = collections.OrderedDict()
        self._last: dict[str, int] = {}
        self._lock = threading.Lock()
        self._unsubscribe = core.subscribe_iot(TOPIC_FILTER, self._on_report)

    # -- bookkeeping ---------------------------------------------------------------------------------
    def reports_file(self, thing: str) -> Path:
        return self.store / thing / "reports.jsonl"

    def _seen_ids(self, thing: str) -> collections.OrderedDict:
        seen = self._ids.get(thing)
        if seen is not None:
            self._ids.move_to_end(thing)
            return seen
        seen = collections.OrderedDict()
        path = self.reports_file(thing)
        if path.is_file():  # report ids survive a restart of the core, as they do in AWS
            with open(path, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    try:
                        rid = _report_id(json.loads(line).get("report"))
                    except (ValueError, AttributeError, RecursionError):
                        continue
                    if rid is not None:
                        seen[rid] = True
                        self._last[thing] = rid
                        if len(seen) > MAX_REMEMBERED_IDS:
                            seen.popitem(last=False)
        self._ids[thing] = seen
        while len(self._ids) > MAX_THINGS:  # forget the thing that reported least recently
            old, _ = self._ids.popitem(last=False)
            self._last.pop(old, None)
        return seen

    def structure_sizes(self) -> dict:
        """How much each in-memory structure holds (tests and bench/local_core_memory.py check the bounds)."""
        with self._lock:
            return {"accepted": len(self.accepted), "rejected": len(self.rejected),
                    "reportsKept": sum("report" in a for a in self.accepted), "things": len(self._ids),
                    "ids": sum(len(s) for s in self._ids.values())}

    # -- the endpoint ----------------------------------------------------------------------------------
    def _on_report(self, topic: str, payload: bytes, source: str) -> None:
        parts = topic.split("/")
        if len(parts) != 6 or parts[5] not in topics.REPORT_FORMATS:
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

    def _accept(self, thing: str, fmt: str, topic: str, rid: Optional[int], report: dict, now: float, size: int,
                warning: str) -> None:
        long_report = to_long(report)
        record = {"receivedAt": now, "topic": topic, "report": long_report}
        path = self.reports_file(thing)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.counts["accepted"] += 1
        self.accepted.append({"thing": thing, "format": fmt, "reportId": rid, "report": long_report,
                              "topic": topic, "receivedAt": now, "bytes": size})
        if len(self.accepted) > MAX_KEPT_REPORTS:
            self.accepted[-MAX_KEPT_REPORTS - 1].pop("report", None)
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
        self.counts["rejected"] += 1
        self.rejected.append({"thing": thing, "format": fmt, "reportId": rid, "errorMessage": message,
                              "topic": topic, "receivedAt": now, "bytes": size})
        self.core.publish_iot(f"{topic}/rejected", _encode(reply, fmt), source="cloud")
        if self.view is not None:
            self.view.report(thing=thing, fmt=fmt, accepted=False, report_id=rid, size=size, detail=message)

    # -- control channel -------------------------------------------------------------------------------
    def control_commands(self) -> dict:
        return {"defender-reports": self._cmd_reports}

    def _cmd_reports(self, args: dict) -> dict:
        limit = max(1, min(int(args.get("limit", 20)), 1000))
        with self._lock:
            return {"accepted": self.counts["accepted"], "rejected": self.counts["rejected"],
                    "lastAccepted": [{k: v for k, v in a.items() if k != "report"}
                                     for a in list(self.accepted)[-limit:]],
                    "lastRejected": list(self.rejected)[-limit:]}

    def close(self) -> None:
        self._unsubscribe()


DECLARATION = Declaration("defender", DefenderService,
                          "Device Defender: accepts or rejects metrics reports on the defender/metrics topics")
