"""What process B may say on each topic the relay lets it use (process A checks every message).

The relay policy (relay_server.Policy) decides which topics B may use; this guard decides what B may put there,
so a compromised collector cannot publish arbitrary bytes as Device Defender reports or forge answers to
other parts' requests:
- metrics topics: a Device Defender report in the topic's format (JSON or CBOR), structurally: header with
  an integer `report_id` and version "1.0", `metrics` / `custom_metrics` of the documented shape, under the
  IoT Core payload limit, and `report_id` strictly above every report A relayed before (across collector
  restarts; per destination: in Collector.Export mode "also" the same report goes to Device Defender's topic and
  then to the export rule's, `$aws/rules/<rule>/things/<thing>/defender/metrics/<fmt>`). *Decision:* not the collector's full JSON Schema validator (collector/schema.py): it would load
  jsonschema (~4.5 MiB RSS) into process A for every report (docs/architecture.md, memory rule), and the
  values inside a report are the collector's own claims that A cannot check anyway; AWS validates them and
  its accepted/rejected reply is visible. The structure is what keeps arbitrary bytes off the topic.
- violations / findings (IoT Core and local): a violation event of this thing, or an ASFF finding whose
  resource is this thing; bounded in size.
- `ggdefender/collector/events`: B may only answer a collect-now requestId that A delivered to it from
  `ggdefender/collector/commands` (each once), and a `report-published` event must name a report (id and
  topic) that A relayed.
One guard per process A (the supervisor's), so the report and request memory outlives collector restarts.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any, Dict, Optional, Tuple

from ggdefender import topics
from ggdefender.detect.violations import CLEARED, IN_ALARM, INVALIDATED
from ggdefender.ipc import IOT_CORE_MAX_PAYLOAD
from ggdefender.plugins.contract import SampleError, ValueType, check_metric_name

MAX_PAYLOAD = IOT_CORE_MAX_PAYLOAD  # local copies of violations and findings get the same bound
MAX_REMEMBERED = 256  # delivered requestIds and relayed reports kept for matching answers
MAX_REPORT_ID = 2**63 - 1
VIOLATION_TYPES = (IN_ALARM, CLEARED, INVALIDATED)
ASFF_VERSION = "2018-10-08"
CUSTOM_VALUE_KINDS = tuple(t.report_key for t in ValueType)
METRIC_NAMES = ("tcp_connections", "listening_tcp_ports", "listening_udp_ports", "network_stats")


class ContentDenied(PermissionError):
    """B's message is well-formed but not something B may say (a forged answer, a replayed report id)."""


class ContentInvalid(ValueError):
    """B's message does not have the shape of what the topic carries."""


class ContentGuard:
    def __init__(self, thing: str):
        if not thing:
            raise ValueError("relay guard: no thing name")
        self.thing = thing
        self.metric_topics = {topics.metrics(thing, "json"): "json", topics.metrics(thing, "cbor"): "cbor"}
        self._lock = threading.Lock()
        self._last_report_id: Dict[str, int] = {}  # per destination ("defender", "export"): the last id relayed
        self._reports: "OrderedDict[int, Tuple[str, ...]]" = OrderedDict()  # relayed report id -> its topics
        self._delivered: "OrderedDict[str, None]" = OrderedDict()  # collect-now requestIds B was given

    # -- what A delivered or relayed --------------------------------------------------------------------------
    def delivered(self, topic: str, message: Any) -> None:
        """A local message A passes to B; a collect-now command's requestId may then be answered once."""
        if topic != topics.COLLECTOR_COMMANDS or not isinstance(message, dict):
            return
        rid = message.get("requestId")
        if isinstance(rid, str) and 0 < len(rid) <= 128:
            with self._lock:
                self._delivered[rid] = None
                self._delivered.move_to_end(rid)
                while len(self._delivered) > MAX_REMEMBERED:
                    self._delivered.popitem(last=False)

    def relayed_report(self, topic: str, report_id: int) -> None:
        """After a successful relayed publish of a report (`check_iot` gave its id): the id is now used."""
        where = self.report_topic(topic)
        if where is None:
            return
        with self._lock:
            self._last_report_id[where[0]] = max(self._last_report_id.get(where[0], 0), report_id)
            if topic not in self._reports.get(report_id, ()):
                self._reports[report_id] = (*self._reports.get(report_id, ()), topic)
            while len(self._reports) > MAX_REMEMBERED:
                self._reports.popitem(last=False)

    # -- checks (raise ContentInvalid / ContentDenied) --------------------------------------------------------
    def check_iot(self, topic: str, data: bytes) -> Optional[int]:
        """None, or the report id when `topic` is a metrics topic (pass it to `relayed_report` once sent)."""
        if len(data) >= MAX_PAYLOAD:
            raise ContentInvalid(f"payload of {len(data)} bytes is over the IoT Core limit ({MAX_PAYLOAD - 1})")
        where = self.report_topic(topic)
        if where is not None:
            report_id = check_report(_decode(data, where[1]))
            with self._lock:
                last = self._last_report_id.get(where[0], 0)
            if report_id <= last:
                raise ContentDenied(f"report_id {report_id} is not above the last relayed report_id {last}")
            return report_id
        self._check_event(topic, _json(data), "iot")
        return None

    def report_topic(self, topic: str) -> Optional[Tuple[str, str]]:
        """(destination, format) when `topic` carries this thing's reports: Device Defender's or an export rule's
        (which rule B may use is the relay policy's call, from A's own configuration), else None."""
        fmt = self.metric_topics.get(topic)
        if fmt is not None:
            return ("defender", fmt)
        if topic.startswith(topics.BASIC_INGEST_PREFIX):
            rule = topic[len(topics.BASIC_INGEST_PREFIX):].partition("/")[0]
            for fmt in topics.REPORT_FORMATS:
                if topic == topics.export(rule, self.thing, fmt):
                    return ("export", fmt)
        return None

    def check_local(self, topic: str, message: Any) -> None:
        if isinstance(message, (bytes, bytearray)):
            if len(message) >= MAX_PAYLOAD:
                raise ContentInvalid(f"payload of {len(message)} bytes is over {MAX_PAYLOAD - 1}")
            message = _json(bytes(message))
        elif len(json.dumps(message, separators=(",", ":"))) >= MAX_PAYLOAD:
            raise ContentInvalid(f"message is over {MAX_PAYLOAD - 1} bytes")
        if topic == topics.COLLECTOR_EVENTS:
            self._check_collector_event(message)
        else:
            self._check_event(topic, message, "local")

    def _check_event(self, topic: str, message: Any, where: str) -> None:
        if topic in (topics.violations(self.thing), topics.LOCAL_VIOLATIONS):
            check_violation(message, self.thing)
        elif topic in (topics.findings(self.thing), topics.LOCAL_FINDINGS):
            check_finding(message, self.thing)
        else:  # the relay policy allows no other topic; a new one needs a check here first
            raise ContentDenied(f"no content rule for {where} topic {topic!r}")

    def _check_collector_event(self, message: Any) -> None:
        if not isinstance(message, dict):
            raise ContentInvalid("a collector event must be an object")
        kind: Any = message.get("event")
        allowed = {"report-published": {"event", "requestId", "reportId", "topic"},
                   "report-failed": {"event", "requestId", "reason"}}.get(kind)
        if allowed is None:
            raise ContentInvalid(f"unknown collector event {str(kind)[:64]!r}")
        unknown = sorted(map(str, set(message) - allowed))
        if unknown:
            raise ContentInvalid(f"{kind}: unknown field(s) {', '.join(unknown)[:200]}")
        rid = message.get("requestId")
        if kind == "report-failed" and not (isinstance(message.get("reason"), str) and len(message["reason"]) <= 500):
            raise ContentInvalid("report-failed: 'reason' must be a string of at most 500 characters")
        with self._lock:
            if not isinstance(rid, str) or rid not in self._delivered:
                raise ContentDenied(f"{kind} answers requestId {str(rid)[:128]!r}, which was never delivered "
                                    "to the collector (or was already answered)")
            if kind == "report-published":
                report_id: Any = message.get("reportId")
                topic = message.get("topic")
                if topic not in self._reports.get(report_id, ()) or isinstance(report_id, bool):
                    raise ContentDenied(f"report-published names report {str(report_id)[:32]} on {str(topic)[:200]!r}, "
                                        "which was not relayed")
            del self._delivered[rid]


# -- shapes (pure) ---------------------------------------------------------------------------------------------
def _json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ContentInvalid(f"payload is not JSON: {exc or 'nested too deeply'}") from None


def _decode(data: bytes, fmt: str) -> Any:
    if fmt == "json":
        return _json(data)
    try:
        import cbor2

        return cbor2.loads(data)
    except Exception as exc:  # cbor2 raises several types for garbage
        raise ContentInvalid(f"payload is not CBOR: {exc}") from None


def check_report(report: Any) -> int:
    """The report's id when `report` has a Device Defender report's structure (long or short names)."""
    from ggdefender.collector.report import to_long

    if not isinstance(report, dict):
        raise ContentInvalid(f"a report must be an object, got {type(report).__name__}")
    try:
        report = to_long(report)
    except RecursionError:
        raise ContentInvalid("report: nested too deeply") from None
    extra = set(report) - {"header", "metrics", "custom_metrics"}
    if extra:
        raise ContentInvalid(f"report: unknown top-level key(s) {', '.join(sorted(map(str, extra)))[:200]}")
    header = report.get("header")
    if not isinstance(header, dict) or set(header) != {"report_id", "version"}:
        raise ContentInvalid("report: 'header' must be exactly {report_id, version}")
    rid = header["report_id"]
    if not isinstance(rid, int) or isinstance(rid, bool) or not 0 < rid <= MAX_REPORT_ID:
        raise ContentInvalid("report: header.report_id must be a positive 64-bit integer")
    if header["version"] != "1.0":
        raise ContentInvalid("report: header.version must be \"1.0\"")
    if "metrics" not in report and "custom_metrics" not in report:
        raise ContentInvalid("report: at least one of metrics or custom_metrics is required")
    metrics = report.get("metrics", {})
    if not isinstance(metrics, dict) or set(metrics) - set(METRIC_NAMES) or \
            not all(isinstance(v, dict) for v in metrics.values()):
        raise ContentInvalid(f"report: 'metrics' must be an object of {', '.join(METRIC_NAMES)} objects")
    custom = report.get("custom_metrics", {})
    if not isinstance(custom, dict):
        raise ContentInvalid("report: 'custom_metrics' must be an object")
    for name, value in custom.items():
        try:
            check_metric_name(name)
        except SampleError as exc:
            raise ContentInvalid(f"report: custom metric: {exc}") from None
        if not (isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict)
                and len(value[0]) == 1 and next(iter(value[0])) in CUSTOM_VALUE_KINDS):
            raise ContentInvalid(f"report: custom metric {name!r} must be [{{one of "
                                 f"{', '.join(CUSTOM_VALUE_KINDS)}: value}}]")
    return rid


def check_violation(event: Any, thing: str) -> None:
    if not isinstance(event, dict):
        raise ContentInvalid("a violation event must be an object")
    if event.get("thingName") != thing:
        raise ContentDenied(f"violation for thing {str(event.get('thingName'))[:128]!r}, not {thing!r}")
    for key in ("violationId", "securityProfileName"):
        if not isinstance(event.get(key), str) or not 0 < len(event[key]) <= 256:
            raise ContentInvalid(f"violation: {key!r} must be a string of 1-256 characters")
    if event.get("violationEventType") not in VIOLATION_TYPES:
        raise ContentInvalid(f"violation: 'violationEventType' must be one of {', '.join(VIOLATION_TYPES)}")
    behavior = event.get("behavior")
    if not isinstance(behavior, dict) or not isinstance(behavior.get("name"), str):
        raise ContentInvalid("violation: 'behavior' must be an object with a name")


def check_finding(finding: Any, thing: str) -> None:
    if not isinstance(finding, dict):
        raise ContentInvalid("a finding must be an object")
    if finding.get("SchemaVersion") != ASFF_VERSION:
        raise ContentInvalid(f"finding: SchemaVersion must be {ASFF_VERSION!r} (ASFF)")
    if not isinstance(finding.get("Id"), str) or not 0 < len(finding["Id"]) <= 512:
        raise ContentInvalid("finding: 'Id' must be a string of 1-512 characters")
    resources = finding.get("Resources")
    if not isinstance(resources, list) or not resources or not all(isinstance(r, dict) for r in resources):
        raise ContentInvalid("finding: 'Resources' must be a non-empty list of objects")
    fields = finding.get("ProductFields")
    if not isinstance(fields, dict) or fields.get("ggdefender/thingName") != thing or \
            not any(str(r.get("Id", "")).endswith(f":thing/{thing}") for r in resources):
        raise ContentDenied(f"finding is not about this thing ({thing!r})")
