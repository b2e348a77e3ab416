"""Replay recorded reports through a profile: test a profile before deploying it.

Inputs: the reports `ggdefender local` kept (`<root>/cloud/defender/<thing>/reports.jsonl`, lines
`{"receivedAt", "topic", "report"}`), a JSON-lines file of plain reports, or a folder of report files
(`*.json` one report or record each, `*.jsonl`, `*.cbor`). A report's time is its recorded timestamp
(`receivedAt`) when there is one, else its `report_id` read as epoch milliseconds (values above 10^11) or
seconds. Reports are replayed in time order; an exact duplicate `report_id` is dropped and a report_id
that is not a positive integer is skipped. Short-name and CBOR reports are
expanded to long names with the collector's codec.
"""

from __future__ import annotations

import contextlib
import gc
import glob
import json
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, List, Optional

from ggdefender.detect import metrics as M
from ggdefender.detect.evaluator import Evaluator
from ggdefender.detect.statistics import History, StatsConfig

try:  # replay runs on a workstation, not on the device: orjson (extra `local`) parses reports ~3x faster
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - the stdlib parser gives the same results, slower
    _loads = json.loads

MAX_LINE_BYTES = 1024 * 1024
MS_THRESHOLD = 10 ** 11  # report_id above this is epoch milliseconds (10^11 s is year 5138)


class ReplayError(ValueError):
    pass


@dataclass
class Record:
    at: float
    report: dict
    thing: Optional[str]
    where: str


def _long(report: dict) -> dict:
    if "header" in report or "metrics" in report or "custom_metrics" in report:
        return report
    try:
        from ggdefender.collector.report import to_long
    except ImportError:  # pragma: no cover - the collector always ships with detect
        return report
    return to_long(report)


def report_time(record: dict, report: dict) -> Optional[float]:
    for key in ("receivedAt", "timestamp", "at"):
        v = record.get(key) if record is not report else None
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
            return float(v) / 1000.0 if v > MS_THRESHOLD else float(v)
    rid = (report.get("header") or {}).get("report_id")
    if isinstance(rid, int) and not isinstance(rid, bool) and rid > 0:
        return rid / 1000.0 if rid > MS_THRESHOLD else float(rid)
    return None


def _from_obj(obj: Any, where: str, thing: Optional[str]) -> Optional[Record]:
    if not isinstance(obj, dict):
        raise ReplayError(f"{where}: expected a JSON object")
    given = obj.get("report")
    report = given if isinstance(given, dict) else obj
    report = _long(report)
    at = report_time(obj, report)
    if at is None:
        return None  # neither a timestamp nor a positive integer report_id: cannot be placed in time
    t = thing
    topic = obj.get("topic")
    if isinstance(topic, str) and topic.startswith("$aws/things/"):
        t = topic.split("/")[2]
    return Record(at, report, t, where)


def _read_jsonl(path: str, thing: Optional[str]) -> Iterator[Record]:
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
            if len(line) > MAX_LINE_BYTES:
                raise ReplayError(f"{path}:{lineno}: line longer than {MAX_LINE_BYTES} bytes")
            line = line.strip()
            if not line:
                continue
            try:
                obj = _loads(line)
            except ValueError as exc:
                raise ReplayError(f"{path}:{lineno}: not JSON: {exc}") from None
            rec = _from_obj(obj, f"{path}:{lineno}", thing)
            if rec is not None:
                yield rec


def _read_file(path: str, thing: Optional[str]) -> Iterator[Record]:
    if path.endswith(".cbor"):
        import cbor2

        with open(path, "rb") as fh:
            try:
                obj = cbor2.load(fh)
            except Exception as exc:
                raise ReplayError(f"{path}: not CBOR: {exc}") from None
        rec = _from_obj(obj, path, thing)
        return iter([rec] if rec else [])
    if path.endswith(".jsonl"):
        return _read_jsonl(path, thing)
    with open(path, "rb") as fh:
        head = fh.read(MAX_LINE_BYTES * 16)
    try:
        obj = _loads(head)
    except ValueError:
        return _read_jsonl(path, thing)  # a .json file holding JSON lines
    if isinstance(obj, list):
        return iter([r for i, o in enumerate(obj) if (r := _from_obj(o, f"{path}[{i}]", thing))])
    rec = _from_obj(obj, path, thing)
    return iter([rec] if rec else [])


def _thing_from_path(path: str) -> Optional[str]:
    parts = os.path.abspath(path).split(os.sep)
    if len(parts) >= 4 and parts[-1] == "reports.jsonl" and parts[-3] == "defender" and parts[-4] == "cloud":
        return parts[-2]
    return None


@contextlib.contextmanager
def _bulk():
    """Pause the cyclic GC during bulk work: its collections would otherwise rescan the growing list of
    parsed reports again and again (measured: 3/4 of the load time; this data has no reference cycles)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load_records(path: str) -> list:
    """All records of a file or folder, in time order, duplicates of (thing, report_id) dropped."""
    with _bulk():
        return _load_records(path)


def _load_records(path: str) -> list:
    if os.path.isdir(path):
        files = sorted(p for p in glob.glob(os.path.join(path, "**", "*"), recursive=True)
                       if os.path.isfile(p) and p.endswith((".json", ".jsonl", ".cbor")))
        if not files:
            raise ReplayError(f"{path}: no .json, .jsonl or .cbor files")
    elif os.path.isfile(path):
        files = [path]
    else:
        raise ReplayError(f"{path}: no such file or folder")
    records: List[Record] = []
    for f in files:
        records.extend(_read_file(f, _thing_from_path(f)))
    records.sort(key=lambda r: r.at)  # stable: equal times keep file order
    # plain reports carry no thing name: with at most one named thing they all belong to it
    per_thing = len({r.thing for r in records if r.thing}) > 1
    seen, out = set(), []
    for r in records:
        rid = (r.report.get("header") or {}).get("report_id")
        key = (r.thing if per_thing else None, rid)
        if rid is not None and key in seen:
            continue
        seen.add(key)
        out.append(r)
    return out


@dataclass
class Series:
    """What one behavior saw: datapoints (t, value, threshold, verdict) and alarm periods."""
    behavior: object
    points: list = field(default_factory=list)
    alarms: list = field(default_factory=list)  # [start, end or None, event type that ended it]


@dataclass
class ReplayResult:
    events: list
    series: dict
    reports: int
    datapoints: int
    first: Optional[float]
    last: Optional[float]


def replay(profiles: Iterable[Any], records: list, *, stats: StatsConfig = StatsConfig(), thing: Optional[str] = None,
           custom_types: Optional[dict] = None, keep_series: bool = True) -> ReplayResult:
    behaviors = [b for p in profiles for b in p.behaviors]
    series = {b.key: Series(b) for b in behaviors}
    counter = [0]

    def recorder(b, t, value, threshold, verdict):
        counter[0] += 1
        if keep_series:
            series[b.key].points.append((t, value, threshold, verdict))

    name = thing or next((r.thing for r in records if r.thing), None) or "replay"
    ev = Evaluator(name, behaviors, history=History(stats), recorder=recorder)
    events = []
    with _bulk():
        for r in records:
            out = ev.observe(M.extract(r.report, custom_types), r.at)
            for e in out:
                key = f"{e['securityProfileName']}/{e['behavior']['name']}"
                s = series.get(key)
                if s is not None:
                    if e["violationEventType"] == "in-alarm":
                        s.alarms.append([e["violationEventTime"], None, None])
                    elif s.alarms and s.alarms[-1][1] is None:
                        s.alarms[-1][1] = e["violationEventTime"]
                        s.alarms[-1][2] = e["violationEventType"]
            events.extend(out)
    return ReplayResult(events, series, len(records), counter[0],
                        records[0].at if records else None, records[-1].at if records else None)


def format_event(e: dict) -> str:
    from ggdefender.detect.findings import iso

    value = e.get("metricValue") or {}
    shown = json.dumps(next(iter(value.values())) if len(value) == 1 else value, separators=(",", ":"))
    line = (f"{iso(e['violationEventTime'])}  {e['violationEventType']:<17}  "
            f"{e['securityProfileName']}/{e['behavior'].get('name')}  {e['behavior'].get('metric')}={shown}")
    if e.get("offendingValues"):
        line += f"  offending={json.dumps(e['offendingValues'], separators=(',', ':'))}"
    if e.get("thresholdValue") is not None:
        line += f"  threshold={e['thresholdValue']}"
    if e.get("reason"):
        line += f"  ({e['reason']})"
    return line
