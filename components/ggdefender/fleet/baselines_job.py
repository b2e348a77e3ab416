"""The daily baselines job on Apache Flink (BATCH runtime mode): one day of reports -> the day's partial ->
the model of the last 14 days (`fleet/baselines.py` holds the method and the files).

Pipeline: JSON-lines files (Firehose's S3 output in production, local files in tests) -> Python: each line
parsed by `fleet.records.parse_line` into the datapoints of the profile's ML behaviors, each with its sketch
slot (`baselines.slot`) -> Flink SQL (Java, parallel): one row per (thing, report id, series) so a report
delivered twice counts once, then datapoints counted per (series, slot) with the exact min and max -> two
small JSON-lines outputs (slot counts; input counters) that this process turns into the day's partial, merges
with the 13 days before it, and writes as the model. Only the Python parse touches every line.

`python -m ggdefender.fleet.baselines_job` is the main: its arguments are `ggdefender fleet baselines`'s; with
none, on Managed Service for Apache Flink, it reads them from the property group `PROPERTY_GROUP` of
`PROPERTIES_FILE` (keys `PROPERTY_KEYS`).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from typing import Any, Callable, Dict, List, Optional

from . import baselines as B

PROPERTIES_FILE = "/etc/flink/application_properties.json"
PROPERTY_GROUP = "FleetBaselines"
# property -> the CLI option it stands for (Input: comma-separated paths or s3:// prefixes)
PROPERTY_KEYS = {"Profile": "--profile", "Input": "--input", "State": "--state", "Day": "--day",
                 "MinDatapoints": "--min-datapoints", "MinDays": "--min-days", "Parallelism": "--parallelism"}
MAX_OUTPUT_BYTES = 256 * 1024 * 1024
MAX_EXAMPLE = 200


def parse_rows(line: str, series: Dict[str, B.Series], custom_types: dict, day_start: int) -> List[tuple]:
    """One input line -> rows (thing, report id, series, slot, value). Input counters ride along as rows of
    series '#report' (thing, id: to count duplicates), '#otherDay' and '#rejected:<reason>' (thing: an example
    of the problem, id: unique so none is taken for a duplicate)."""
    from .records import RecordError, parse_line

    try:
        r = parse_line(line, custom_types)
    except RecordError as exc:
        return [(str(exc)[:MAX_EXAMPLE], uuid.uuid4().hex, f"#rejected:{exc.reason}", 0, 0.0)]
    rid = str(r.report_id)
    if not day_start <= r.at_ms < day_start + B.DAY_MS:
        return [(r.thing, rid, "#otherDay", 0, 0.0)]
    rows = [(r.thing, rid, "#report", 0, 0.0)]
    for key, value in B.datapoints(series, r.metrics):
        rows.append((r.thing, rid, key, B.slot(value), value))
    return rows


SLOTS_SQL = """
SELECT series, slot, COUNT(*) AS n, MIN(v) AS lo, MAX(v) AS hi FROM (
  SELECT thing, rid, series, MAX(slot) AS slot, MAX(v) AS v FROM datapoint_rows
  WHERE series NOT LIKE '#%' GROUP BY thing, rid, series)
GROUP BY series, slot
"""
# a report's duplicates have equal values; should two differ, MAX keeps one, and slot is monotonic in the value
COUNTS_SQL = """
SELECT series, COUNT(*) AS n, COUNT(DISTINCT CONCAT(thing, '/', rid)) AS uniq, MIN(thing) AS example
FROM datapoint_rows WHERE series LIKE '#%' GROUP BY series
"""


def run_flink(profile_doc: dict, inputs: List[str], day: str, out_dir: str, parallelism: int = 1,
              progress: Callable[[str], None] = lambda m: None) -> None:
    """The Flink part: writes `out_dir/slots/` and `out_dir/counts/` (JSON lines)."""
    from pyflink.common import Row, Types, WatermarkStrategy
    from pyflink.datastream import RuntimeExecutionMode, StreamExecutionEnvironment
    from pyflink.datastream.connectors.file_system import FileSource, StreamFormat
    from pyflink.table import StreamTableEnvironment

    from ggdefender.detect.profile import load_profile

    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_runtime_mode(RuntimeExecutionMode.BATCH)
    env.set_python_executable(sys.executable)  # else the Python workers cannot import pyflink
    env.set_parallelism(parallelism)
    source = FileSource.for_record_stream_format(StreamFormat.text_line_format(), *inputs).build()
    lines = env.from_source(source, WatermarkStrategy.no_watermarks(), "reports")
    day_start = B.day_start_ms(day)
    state: dict = {}

    def parse(line: str):
        if not state:  # once per Python worker: the profile is compiled there, not shipped compiled
            profile = load_profile(profile_doc)
            state["series"], state["types"] = B.series_of(profile), B.custom_types_of(profile)
        for row in parse_rows(line, state["series"], state["types"], day_start):
            yield Row(*row)

    row_type = Types.ROW_NAMED(["thing", "rid", "series", "slot", "v"],
                               [Types.STRING(), Types.STRING(), Types.STRING(), Types.LONG(), Types.DOUBLE()])
    rows = lines.flat_map(parse, output_type=row_type).name("parse")
    t_env = StreamTableEnvironment.create(env)
    t_env.create_temporary_view("datapoint_rows", t_env.from_data_stream(rows))
    for name, columns in (("slots", "series STRING, slot BIGINT, n BIGINT, lo DOUBLE, hi DOUBLE"),
                          ("counts", "series STRING, n BIGINT, uniq BIGINT, example STRING")):
        path = os.path.join(out_dir, name)
        t_env.execute_sql(f"CREATE TEMPORARY TABLE {name}_out ({columns}) WITH ("
                          f"'connector' = 'filesystem', 'path' = '{_sql_string(path)}', 'format' = 'json')")
    statements = t_env.create_statement_set()
    statements.add_insert("slots_out", t_env.sql_query(SLOTS_SQL))
    statements.add_insert("counts_out", t_env.sql_query(COUNTS_SQL))
    result = statements.execute()
    progress(f"Flink job {result.get_job_client().get_job_id()} running (parallelism {parallelism})")
    done = threading.Event()

    def heartbeat() -> None:
        # the local mini-cluster stops with the job, so elapsed time is shown rather than polled job status
        started = time.monotonic()
        while not done.wait(10.0):
            progress(f"  running for {time.monotonic() - started:.0f} s")

    ticker = threading.Thread(target=heartbeat, daemon=True)
    ticker.start()
    try:
        result.wait()  # raises with Flink's error when the job failed
    finally:
        done.set()
        ticker.join()


def _sql_string(text: str) -> str:
    return text.replace("'", "''")


def read_output(out_dir: str, day: str) -> B.DayPartial:
    """The Flink job's output files -> the day's partial (with the input counters)."""
    def rows(name: str):
        total = 0
        for path in sorted(glob.glob(os.path.join(out_dir, name, "**", "*"), recursive=True)):
            base = os.path.basename(path)
            if os.path.isdir(path) or base.startswith((".", "_")):
                continue
            total += os.path.getsize(path)
            if total > MAX_OUTPUT_BYTES:
                raise RuntimeError(f"the job's output in {out_dir} exceeds {MAX_OUTPUT_BYTES} bytes")
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    if line.strip():
                        yield json.loads(line)

    slots: Dict[str, list] = {}
    for r in rows("slots"):
        entry = slots.setdefault(r["series"], [[], float("inf"), float("-inf")])
        entry[0].append((int(r["slot"]), int(r["n"])))
        entry[1], entry[2] = min(entry[1], r["lo"]), max(entry[2], r["hi"])
    partial = B.DayPartial(day, {k: B.Distribution.from_slots(sorted(c), lo, hi) for k, (c, lo, hi) in slots.items()})
    counts: dict = {"reports": 0, "duplicates": 0, "otherDays": 0, "rejected": {}}
    for r in rows("counts"):
        series, n = r["series"], int(r["n"])
        if series == "#report":
            counts["reports"], counts["duplicates"] = int(r["uniq"]), n - int(r["uniq"])
        elif series == "#otherDay":
            counts["otherDays"] = n
        elif series.startswith("#rejected:"):
            counts["rejected"][series.split(":", 1)[1]] = {"lines": n, "example": r["example"]}
    partial.counts = counts
    return partial


def run_day(profile_doc: dict, inputs: List[str], state: str, day: str, *, min_datapoints: int = B.MIN_DATAPOINTS,
            min_days: int = B.MIN_DAYS, parallelism: int = 1, work_dir: Optional[str] = None,
            progress: Callable[[str], None] = lambda m: None) -> dict:
    """Build `day`'s partial with Flink, then train and store the model; the summary."""
    from ggdefender.detect.profile import load_profile

    profile = load_profile(profile_doc)
    started = time.monotonic()
    out_dir = tempfile.mkdtemp(prefix="ggdefender-baselines-", dir=work_dir)
    try:
        run_flink(profile_doc, inputs, day, out_dir, parallelism, progress)
        partial = read_output(out_dir, day)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    flink_seconds = time.monotonic() - started
    path, doc = B.train(state, profile, partial, min_datapoints=min_datapoints, min_days=min_days)
    datapoints = sum(d.count for d in partial.series.values())
    return {"day": day, "model": path, "partial": B.partial_path(state, day), "input": partial.counts,
            "datapoints": datapoints, "flinkSeconds": round(flink_seconds, 1),
            "datapointsPerSecond": round(datapoints / flink_seconds, 1) if flink_seconds else None,
            "behaviors": {k: {f: v[f] for f in ("status", "datapoints", "days")} for k, v in doc["behaviors"].items()}}


def properties_argv(path: str = PROPERTIES_FILE) -> Optional[List[str]]:
    """Managed Service for Apache Flink's application properties -> the CLI's arguments; None without the file."""
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as fh:
        groups = json.load(fh)
    group = next((g for g in groups if isinstance(g, dict) and g.get("PropertyGroupId") == PROPERTY_GROUP), None)
    if group is None:
        raise ValueError(f"{path}: no property group {PROPERTY_GROUP!r}")
    props = group.get("PropertyMap") or {}
    unknown = set(props) - set(PROPERTY_KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown {PROPERTY_GROUP} properties {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(PROPERTY_KEYS)})")
    argv: List[str] = []
    for key, option in PROPERTY_KEYS.items():
        value = props.get(key)
        if value is None or value == "":
            continue
        argv.append(option)
        argv.extend([p.strip() for p in str(value).split(",") if p.strip()] if key == "Input" else [str(value)])
    return argv


def main(argv: Optional[List[str]] = None) -> int:
    from .baselines_cli import main as cli_main

    if argv is None:
        argv = sys.argv[1:]
        if not argv:
            try:
                argv = properties_argv() or []
            except (OSError, ValueError) as exc:
                print(f"ggdefender.fleet.baselines_job: {exc}", file=sys.stderr)
                return 2
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
