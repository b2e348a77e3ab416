"""The daily baselines job on Apache Flink (BATCH runtime mode): one day of reports -> the day's partial ->
the model of the last 14 days (`fleet/baselines.py` holds the method and the files).

Pipeline: JSON-lines files (Firehose's S3 output in production, local files in tests) -> Python: each line
parsed by `fleet.records.parse_line` into the datapoints of the profile's ML behaviors, each with its sketch
slot (`baselines.slot`) -> Flink SQL (Java, parallel): one row per (thing, report id, series) so a report
delivered twice counts once, then datapoints counted per (series, slot) with the exact min and max, and the
input counters -> one Python trainer (parallelism 1) that, when the input is done, turns those few rows into
the day's partial, merges it with the 13 days before it and stores both partial and model in the state folder
(a directory, or s3://bucket/prefix on AWS). Only the Python parse touches every line.

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
from typing import Any, Callable, Dict, Iterator, List, Optional

from . import baselines as B

PROPERTIES_FILE = "/etc/flink/application_properties.json"
PROPERTY_GROUP = "FleetBaselines"
# property -> the CLI option it stands for (Input: comma-separated paths or s3:// prefixes)
PROPERTY_KEYS = {"Profile": "--profile", "Input": "--input", "State": "--state", "Day": "--day",
                 "MinDatapoints": "--min-datapoints", "MinDays": "--min-days", "Parallelism": "--parallelism"}
MAX_OUTPUT_BYTES = 1024 * 1024
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


class PartialBuilder:
    """The SQL results (tagged JSON rows: "slot" and "count"), one at a time -> the day's partial with the input
    counters; memory is the sketches' (bounded), whatever the number of rows."""

    def __init__(self, day: str):
        self.partial = B.DayPartial(day, {}, {"reports": 0, "duplicates": 0, "otherDays": 0, "rejected": {}})

    def add(self, r: dict) -> None:
        series, counts = r["series"], self.partial.counts
        if r["kind"] == "slot":
            d = self.partial.series.get(series)
            if d is None:
                d = self.partial.series[series] = B.Distribution()
            d.add_slot(int(r["slot"]), int(r["n"]), r["lo"], r["hi"])
        elif series == "#report":
            counts["reports"], counts["duplicates"] = int(r["uniq"]), int(r["n"]) - int(r["uniq"])
        elif series == "#otherDay":
            counts["otherDays"] = int(r["n"])
        elif series.startswith("#rejected:"):
            counts["rejected"][series.split(":", 1)[1]] = {"lines": int(r["n"]), "example": r["example"]}


def summary(partial: B.DayPartial, model: str, doc: dict) -> dict:
    return {"day": partial.day, "model": model, "input": partial.counts,
            "datapoints": sum(d.count for d in partial.series.values()),
            "behaviors": {k: {f: v[f] for f in ("status", "datapoints", "days")} for k, v in doc["behaviors"].items()}}


def build(env: Any, profile_doc: dict, inputs: List[str], state: str, day: str, out_dir: str, *,
          min_datapoints: int, min_days: int) -> None:
    """The job's graph on `env` (BATCH): lines -> rows -> SQL -> one trainer that stores the partial and the
    model at the end of the input and writes its summary (a JSON line) into `out_dir`."""
    from pyflink.common import Encoder, Row, Types, WatermarkStrategy
    from pyflink.datastream import KeyedProcessFunction
    from pyflink.datastream.connectors.file_system import FileSink, FileSource, StreamFormat
    from pyflink.table import StreamTableEnvironment

    from ggdefender.detect.profile import load_profile

    source = FileSource.for_record_stream_format(StreamFormat.text_line_format(), *inputs).build()
    lines = env.from_source(source, WatermarkStrategy.no_watermarks(), "reports")
    day_start = B.day_start_ms(day)
    compiled: dict = {}

    def parse(line: str) -> Iterator[Any]:
        if not compiled:  # once per Python worker: the profile is compiled there, not shipped compiled
            profile = load_profile(profile_doc)
            compiled["series"], compiled["types"] = B.series_of(profile), B.custom_types_of(profile)
        for row in parse_rows(line, compiled["series"], compiled["types"], day_start):
            yield Row(*row)

    row_type = Types.ROW_NAMED(["thing", "rid", "series", "slot", "v"],
                               [Types.STRING(), Types.STRING(), Types.STRING(), Types.LONG(), Types.DOUBLE()])
    rows = lines.flat_map(parse, output_type=row_type).name("parse")
    t_env = StreamTableEnvironment.create(env)
    t_env.create_temporary_view("datapoint_rows", t_env.from_data_stream(rows))
    slot_rows = t_env.to_data_stream(t_env.sql_query(SLOTS_SQL)).map(
        lambda r: json.dumps({"kind": "slot", "series": r[0], "slot": r[1], "n": r[2], "lo": r[3], "hi": r[4]}),
        output_type=Types.STRING())
    count_rows = t_env.to_data_stream(t_env.sql_query(COUNTS_SQL)).map(
        lambda r: json.dumps({"kind": "count", "series": r[0], "n": r[1], "uniq": r[2], "example": r[3]}),
        output_type=Types.STRING())

    class Train(KeyedProcessFunction):
        """Folds the SQL results on one key; in BATCH mode its timer fires when the input is done."""

        def open(self, runtime_context):
            self.builder = None

        def process_element(self, value, ctx):
            if self.builder is None:
                self.builder = PartialBuilder(day)
                ctx.timer_service().register_event_time_timer(END_OF_INPUT)
            self.builder.add(json.loads(value))

        def on_timer(self, timestamp, ctx):
            assert self.builder is not None  # the timer is registered with the first element
            partial, self.builder = self.builder.partial, None
            path, doc = B.train(state, load_profile(profile_doc), partial, min_datapoints=min_datapoints,
                                min_days=min_days)
            yield json.dumps(summary(partial, path, doc))

    summaries = slot_rows.union(count_rows).key_by(lambda _: 0, key_type=Types.INT()) \
        .process(Train(), output_type=Types.STRING()).name("train").set_parallelism(1)
    summaries.sink_to(FileSink.for_row_format(out_dir, Encoder.simple_string_encoder()).build()) \
        .name("summary").set_parallelism(1)


END_OF_INPUT = 2 ** 62  # an event-time timer no watermark reaches before the end of a batch input


def run_day(profile_doc: dict, inputs: List[str], state: str, day: str, *, min_datapoints: int = B.MIN_DATAPOINTS,
            min_days: int = B.MIN_DAYS, parallelism: int = 1, on_cluster: bool = False,
            progress: Callable[[str], None] = lambda m: None) -> dict:
    """Run the job and wait; its summary. Locally (a mini-cluster) the trainer's summary file is read back; on a
    cluster it was written on a task manager, so the summary says only where the model is."""
    from pyflink.datastream import RuntimeExecutionMode, StreamExecutionEnvironment

    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_runtime_mode(RuntimeExecutionMode.BATCH)
    env.set_python_executable(sys.executable)  # else the Python workers cannot import pyflink
    env.set_parallelism(parallelism)
    out_dir = tempfile.mkdtemp(prefix="ggdefender-baselines-")
    started = time.monotonic()
    done = threading.Event()

    def heartbeat() -> None:
        # the local mini-cluster stops with the job, so elapsed time is shown rather than polled job status
        while not done.wait(10.0):
            progress(f"  running for {time.monotonic() - started:.0f} s")

    ticker = threading.Thread(target=heartbeat, daemon=True)
    try:
        build(env, profile_doc, inputs, state, day, out_dir, min_datapoints=min_datapoints, min_days=min_days)
        progress(f"Flink job running (parallelism {parallelism})")
        ticker.start()
        env.execute(f"ggdefender baselines {day}")  # raises with Flink's error when the job failed
        done.set()
        seconds = time.monotonic() - started
        found = [{"day": day, "model": B.model_path(state, day)}] if on_cluster else read_summaries(out_dir)
    finally:
        done.set()
        if ticker.is_alive():
            ticker.join()
        shutil.rmtree(out_dir, ignore_errors=True)
    if not found:
        raise ValueError("the input held no line: nothing was written")
    result: Dict[str, Any] = found[0]
    result["seconds"] = round(seconds, 1)
    if "datapoints" in result:
        result["datapointsPerSecond"] = round(result["datapoints"] / seconds, 1) if seconds else None
    return result


def read_summaries(out_dir: str) -> List[dict]:
    out: List[dict] = []
    for path in sorted(glob.glob(os.path.join(out_dir, "**", "*"), recursive=True)):
        if os.path.isfile(path) and not os.path.basename(path).startswith((".", "_")):
            with open(path, encoding="utf-8") as fh:
                out.extend(json.loads(line) for line in fh.read(MAX_OUTPUT_BYTES).splitlines() if line.strip())
    return out


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

    on_cluster = False
    if argv is None:
        argv = sys.argv[1:]
        if not argv:
            try:
                from_properties = properties_argv()
            except (OSError, ValueError) as exc:
                print(f"ggdefender.fleet.baselines_job: {exc}", file=sys.stderr)
                return 2
            on_cluster = from_properties is not None
            argv = from_properties or []
    return cli_main(argv, on_cluster=on_cluster)


if __name__ == "__main__":
    sys.exit(main())
