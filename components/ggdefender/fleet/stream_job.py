"""The fleet tier's streaming job on Apache Flink (PyFlink 1.20): reports in, violations out, in event time.

Topology (each step's logic is `fleet.evaluation`'s, which the tests compare this job with):

  source (JSON lines: files, optionally watched, or a socket; Kinesis in production)
   -> parse (fleet.records; bad lines to the "dropped" output with their reason)
   -> partitioned by thing, then event time = the report's time; watermarks: bounded out-of-orderness = the
      allowed lateness (a silent source split or Kinesis shard never stalls time: every subtask gets reports
      while any source has some; a device that stops never does either: the watermark follows the fleet)
   -> keyed by thing: dedupe, lateness, epoch-aligned windows -> datapoints (late and duplicate reports to
      the "dropped" output, never silently lost)
   -> statistical datapoints keyed by (behavior, window, shard): partial distributions, at the window's close
      -> merged per (behavior, window) -> the fleet threshold, broadcast to every thing's resolver
   -> keyed by thing (broadcast thresholds connected): verdicts, streaks, invalidation -> violations sink
      (JSON lines via FileSink: exactly once with checkpoints; Kinesis in production)

A window [s, e) of a thing closes when the thing's own newest report, or the watermark, reaches e + lateness;
the fleet threshold of (behavior, e) is computed when the watermark reaches e + lateness, and the things'
datapoints of e are resolved at e + lateness + 1 ms, after it has arrived. Timers are per (key, window end).

Run it: `ggdefender fleet run` (local mini-cluster), or `python -m ggdefender.fleet.stream_job` (Managed
Service for Apache Flink: the application properties at `/etc/flink/application_properties.json`, group
`FleetDetect`; see docs/fleet.md).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, List, Optional

KINESIS_JAR = "org.apache.flink:flink-sql-connector-kinesis:5.0.0-1.20"
PROPERTIES_FILE = "/etc/flink/application_properties.json"
PROPERTY_GROUP = "FleetDetect"
MODEL_CHECK_SECONDS = 60.0
PROGRESS_SECONDS = 1.0
WATERMARK_INTERVAL_MS = 200
STATE_CACHE_KEYS = 200_000
JOB_NAME = "ggdefender fleet detect"
LONG_MAX = 2 ** 63 - 1


class JobError(ValueError):
    """The job cannot start: the message names what is missing or wrong."""


@dataclass
class JobConfig:
    profile: dict                          # the CreateSecurityProfile document
    inputs: List[str] = field(default_factory=list)   # files or directories of JSON lines
    follow_seconds: Optional[float] = None            # watch the inputs for new files (continuous)
    socket: Optional[str] = None                      # HOST:PORT sending JSON lines (local runs)
    kinesis_stream: Optional[str] = None
    kinesis_output: Optional[str] = None
    region: Optional[str] = None
    out_dir: Optional[str] = None          # violations/ and dropped/ (JSON lines part files) are written here
    progress_dir: Optional[str] = None     # each subtask's counters, for `fleet run`'s progress and stats
    model_path: Optional[str] = None
    custom_types: dict = field(default_factory=dict)
    parallelism: int = 1
    lateness_ms: int = 60_000
    shards: int = 0                        # partial distributions per (behavior, window); 0: the parallelism
    exact_limit: int = 10_000
    checkpoint_dir: Optional[str] = None
    checkpoint_interval_ms: int = 10_000
    restore_from: Optional[str] = None     # a retained checkpoint (chk-N directory) to start from


@dataclass(frozen=True)
class Rejected:
    """An unreadable line on its way to the dropped output (event time 0, thing "")."""
    text: str
    thing: str = ""
    at_ms: int = 0


# -- progress counters (local runs) ------------------------------------------------------------------------------


class Progress:
    """A subtask's counters, written atomically to `<dir>/<name>-<subtask>.json` every second by a thread of
    its own (a continuous job's operators may sit idle, their counters must still show)."""

    def __init__(self, directory: Optional[str], name: str, subtask: int):
        self.path = os.path.join(directory, f"{name}-{subtask}.json") if directory else None
        self.counts: dict = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        if self.path:
            threading.Thread(target=self._loop, name=f"progress-{name}", daemon=True).start()

    def add(self, what: str, n: int = 1) -> None:
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + n
            # wall clock of the first and last work, so throughput excludes the job's start
            now = time.time()
            self.counts.setdefault("first_at", now)
            self.counts["last_at"] = now

    def reject(self, reason: str) -> None:
        with self.lock:
            rej = self.counts.setdefault("rejected", {})
            rej[reason] = rej.get(reason, 0) + 1

    def set(self, what: str, value: Any) -> None:
        with self.lock:
            self.counts[what] = value

    def _loop(self) -> None:
        while not self.stopped.wait(PROGRESS_SECONDS):
            self.flush()

    def flush(self) -> None:
        if self.path is None:
            return
        with self.lock:
            text = json.dumps(self.counts)
        tmp = f"{self.path}.{threading.get_ident()}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, self.path)

    def close(self) -> None:
        self.stopped.set()
        self.flush()


def read_progress(directory: str) -> dict:
    """The sum of every subtask's counters (max for the watermark and the last work, min for the first)."""
    total: dict = {}
    for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else ():
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(directory, name), encoding="utf-8") as fh:
                counts = json.load(fh)
        except (OSError, ValueError):
            continue  # being replaced: the next read has it
        for k, v in counts.items():
            if k in ("watermark", "last_at"):
                total[k] = max(total.get(k, v), v)
            elif k == "first_at":
                total[k] = min(total.get(k, v), v)
            elif isinstance(v, dict):
                sub = total.setdefault(k, {})
                for r, n in v.items():
                    sub[r] = sub.get(r, 0) + n
            else:
                total[k] = total.get(k, 0) + v
    return total


# -- the job's functions -----------------------------------------------------------------------------------------


def _behaviors(cfg: JobConfig) -> tuple:
    from ggdefender.detect.profile import load_profile

    return load_profile(cfg.profile, cfg.custom_types, source="profile").behaviors


def _functions():
    """The PyFlink function classes (defined here so importing this module needs no pyflink)."""
    from pyflink.common import Types
    from pyflink.datastream import OutputTag
    from pyflink.datastream.functions import KeyedBroadcastProcessFunction, KeyedProcessFunction, ProcessFunction
    from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor

    from . import evaluation as E
    from .records import RecordError, parse_line

    dropped_tag = OutputTag("dropped", Types.STRING())
    ranked_tag = OutputTag("ranked", Types.PICKLED_BYTE_ARRAY())
    thresholds_desc = MapStateDescriptor("thresholds", Types.STRING(), Types.PICKLED_BYTE_ARRAY())

    class Parse(ProcessFunction):
        def __init__(self, cfg: JobConfig):
            self.cfg = cfg

        def open(self, ctx):
            self.progress = Progress(self.cfg.progress_dir, "parse", ctx.get_index_of_this_subtask())

        def process_element(self, line, ctx):
            self.progress.add("records")
            try:
                r = parse_line(line, self.cfg.custom_types)
            except RecordError as exc:
                self.progress.reject(exc.reason)
                # in the main stream (PyFlink 1.20 hands a side output of this function to a chained
                # partitioner): the thing-keyed step writes it to the dropped output
                yield Rejected(json.dumps({"dropped": "rejected", "reason": str(exc), "line": str(line)[:1000]}))
                return
            self.progress.add("parsed")
            yield r

        def close(self):
            self.progress.close()

    class Things(KeyedProcessFunction):
        """Keyed by thing: dedupe, lateness, windows -> datapoints."""

        def __init__(self, cfg: JobConfig):
            self.cfg = cfg

        def open(self, ctx):
            self.behaviors = _behaviors(self.cfg)
            self.statistical = {b.key for b in self.behaviors if b.criteria_type == "STATISTICAL"}
            self.state = ctx.get_state(ValueStateDescriptor("windows", Types.PICKLED_BYTE_ARRAY()))
            self.progress = Progress(self.cfg.progress_dir, "things", ctx.get_index_of_this_subtask())

        def _emit(self, dps):
            if not dps:
                return
            self.progress.add("datapoints", len(dps))
            yield dps  # one record per report or timer: the resolver's state is read and written once for all
            for dp in dps:
                if dp.key in self.statistical:
                    yield ranked_tag, dp

        def _schedule(self, w, ctx):
            nxt = w.next_end()
            if nxt is not None:
                ctx.timer_service().register_event_time_timer(nxt + self.cfg.lateness_ms)

        def process_element(self, r, ctx):
            if isinstance(r, Rejected):
                yield dropped_tag, r.text
                return
            w = self.state.value() or E.ThingWindows()
            wm = ctx.timer_service().current_watermark()
            status, dps = w.add(r, self.behaviors, self.cfg.lateness_ms, wm)
            if status != "ok":
                self.progress.add(status if status == "late" else "duplicates")
                yield dropped_tag, json.dumps({"dropped": status, "thingName": r.thing, "reportId": r.report_id,
                                               "eventTime": r.at_ms / 1000.0, "watermark": wm})
                return
            self.state.update(w)
            yield from self._emit(dps)
            self._schedule(w, ctx)
            self.progress.set("watermark", wm)

        def on_timer(self, ts, ctx):
            w = self.state.value()
            if w is None:
                return
            yield from self._emit(w.close(ctx.get_current_key(), ts - self.cfg.lateness_ms))
            self.state.update(w)
            self._schedule(w, ctx)
            self.progress.set("watermark", ctx.timer_service().current_watermark())

        def close(self):
            self.progress.close()

    class Partial(KeyedProcessFunction):
        """Keyed by (behavior, window, shard): a partial distribution, emitted at the window's close."""

        def __init__(self, cfg: JobConfig):
            self.cfg = cfg

        def open(self, ctx):
            self.state = ctx.get_state(ValueStateDescriptor("partial", Types.PICKLED_BYTE_ARRAY()))

        def process_element(self, dp, ctx):
            v = self.state.value()
            if v is None:
                v = (dp.key, dp.end_ms, E.Distribution(self.cfg.exact_limit))
                ctx.timer_service().register_event_time_timer(dp.end_ms + self.cfg.lateness_ms)
            v[2].add(float(dp.value))
            self.state.update(v)

        def on_timer(self, ts, ctx):
            v = self.state.value()
            if v is not None:
                self.state.clear()
                yield v

    class Merge(KeyedProcessFunction):
        """Keyed by (behavior, window): the partials merged into the fleet's threshold."""

        def __init__(self, cfg: JobConfig):
            self.cfg = cfg

        def open(self, ctx):
            self.by_key = {b.key: b for b in _behaviors(self.cfg)}
            self.state = ctx.get_state(ValueStateDescriptor("merged", Types.PICKLED_BYTE_ARRAY()))

        def process_element(self, part, ctx):
            key, end, d = part
            v = self.state.value()
            if v is None:
                ctx.timer_service().register_event_time_timer(end + self.cfg.lateness_ms)
                v = (key, end, E.Distribution(self.cfg.exact_limit))
            v[2].merge(d)
            self.state.update(v)

        def on_timer(self, ts, ctx):
            v = self.state.value()
            if v is not None:
                self.state.clear()
                key, end, d = v
                yield (key, end, E.threshold_of(d, self.by_key[key]))

    class Resolve(KeyedBroadcastProcessFunction):
        """Keyed by thing, with the fleet's thresholds broadcast: verdicts, streaks, invalidation."""

        def __init__(self, cfg: JobConfig):
            self.cfg = cfg

        def open(self, ctx):
            self.behaviors = _behaviors(self.cfg)
            self.by_key = {b.key: b for b in self.behaviors}
            self.order = {b.key: i for i, b in enumerate(self.behaviors)}
            self.fp = E.profile_fingerprint(self.behaviors)
            self.state = ctx.get_state(ValueStateDescriptor("alarms", Types.PICKLED_BYTE_ARRAY()))
            self.progress = Progress(self.cfg.progress_dir, "resolve", ctx.get_index_of_this_subtask())
            self.models = None
            self.model_checked = 0.0
            self._reload_model()

        def _reload_model(self):
            # at most once a minute of processing time: the baselines job writes a new model daily
            now = time.monotonic()
            if self.cfg.model_path is None or (self.model_checked and now - self.model_checked < MODEL_CHECK_SECONDS):
                return
            self.model_checked = now
            from .baselines import load_latest

            models = load_latest(self.cfg.model_path)
            if self.models is None or (models.trained_at or 0) > (self.models.trained_at or 0):
                self.models = models

        def process_element(self, dps, ctx):
            st: tuple = self.state.value() or (E.ThingAlarms(), [])
            st[1].extend(dps)
            self.state.update(st)
            for end in {dp.end_ms for dp in dps}:
                ctx.timer_service().register_event_time_timer(end + self.cfg.lateness_ms + 1)

        def process_broadcast_element(self, th, ctx):
            key, end, threshold = th
            state = ctx.get_broadcast_state(thresholds_desc)
            state.put(f"{key}|{end}", (end, threshold))
            # thresholds of windows every thing has resolved are no longer needed
            wm = ctx.current_watermark()
            for k in [k for k, (e, _) in state.items() if e + self.cfg.lateness_ms + 1 <= wm]:
                state.remove(k)

        def on_timer(self, ts, ctx):
            st = self.state.value()
            if st is None:
                return
            self._reload_model()
            alarms, pending = st
            thing = ctx.get_current_key()
            due = [dp for dp in pending if dp.end_ms + self.cfg.lateness_ms + 1 <= ts]
            rest = [dp for dp in pending if dp.end_ms + self.cfg.lateness_ms + 1 > ts]
            state = ctx.get_broadcast_state(thresholds_desc)
            thresholds = {}
            for dp in due:
                got = state.get(f"{dp.key}|{dp.end_ms}")
                if got is not None:
                    thresholds[(dp.key, dp.end_ms)] = got[1]
            events = E.resolve_thing(alarms, thing, due, self.behaviors, self.fp, thresholds, self.models, self.order)
            # stale alarms: up to this timer's event time, but never past a datapoint still to resolve; the
            # final watermark of a bounded input is the end of time (every device has stopped)
            clock = E.END_OF_INPUT_MS if ctx.timer_service().current_watermark() >= LONG_MAX else \
                ts - self.cfg.lateness_ms - 1
            if rest:
                clock = min(clock, min(dp.t_ms for dp in rest))
            events += alarms.expire(thing, self.by_key, clock)
            nxt = alarms.next_expiry_ms()
            if nxt is not None:
                ctx.timer_service().register_event_time_timer(nxt + self.cfg.lateness_ms + 1)
            if alarms.states or rest:
                self.state.update((alarms, rest))
            else:
                self.state.clear()
            self.progress.add("violations", len(events))
            for e in events:
                yield json.dumps(e, sort_keys=True)

        def close(self):
            self.progress.close()

    return Parse, Things, Partial, Merge, Resolve, dropped_tag, ranked_tag, thresholds_desc


# -- building and running -----------------------------------------------------------------------------------------


def _java_class_present(name: str) -> bool:
    from pyflink.java_gateway import get_gateway

    try:
        jvm = get_gateway().jvm
        jvm.java.lang.Class.forName(name, False, jvm.Thread.currentThread().getContextClassLoader())
        return True
    except Exception:  # py4j's Py4JJavaError: ClassNotFoundException
        return False


def _source(env: Any, cfg: JobConfig) -> Any:
    from pyflink.common import Duration, Types, WatermarkStrategy

    if cfg.kinesis_stream:
        if not _java_class_present("org.apache.flink.streaming.connectors.kinesis.FlinkKinesisConsumer"):
            raise JobError(f"the Flink Kinesis connector is not on the classpath: add the jar {KINESIS_JAR} "
                           "(Maven Central) to the application (docs/fleet.md)")
        from pyflink.common.serialization import SimpleStringSchema
        from pyflink.datastream.connectors.kinesis import FlinkKinesisConsumer

        props = {"aws.region": cfg.region or "", "flink.stream.initpos": "LATEST"}
        return env.add_source(FlinkKinesisConsumer(cfg.kinesis_stream, SimpleStringSchema(), props),
                              "reports (Kinesis)", Types.STRING()).uid("source-kinesis")
    if cfg.socket:
        from pyflink.datastream.functions import SourceFunction
        from pyflink.java_gateway import get_gateway

        host, _, port = cfg.socket.rpartition(":")
        # Flink's own socket source (one reader; the job's input ends when the connection closes)
        j_source = get_gateway().jvm.org.apache.flink.streaming.api.functions.source.SocketTextStreamFunction(
            host, int(port), "\n", 0)
        return env.add_source(SourceFunction(j_source), "reports (socket)", Types.STRING()).uid("source-socket")
    from pyflink.datastream.connectors.file_system import FileSource, StreamFormat

    if not cfg.inputs:
        raise JobError("no input: give files or directories of JSON lines, a socket, or a Kinesis stream")
    paths = [os.path.abspath(p) for p in cfg.inputs]
    builder = FileSource.for_record_stream_format(StreamFormat.text_line_format(), *paths)
    if cfg.follow_seconds:
        builder = builder.monitor_continuously(Duration.of_millis(int(cfg.follow_seconds * 1000)))
    return env.from_source(builder.build(), WatermarkStrategy.no_watermarks(), "reports (files)").uid("source-files")


def _sink(stream: Any, cfg: JobConfig, name: str) -> None:
    from pyflink.common.serialization import Encoder
    from pyflink.datastream.connectors.file_system import FileSink, OutputFileConfig, RollingPolicy

    if name == "violations" and cfg.kinesis_output:
        if not _java_class_present("org.apache.flink.connector.kinesis.sink.KinesisStreamsSink"):
            raise JobError(f"the Flink Kinesis connector is not on the classpath: add the jar {KINESIS_JAR}")
        from pyflink.common.serialization import SimpleStringSchema
        from pyflink.datastream.connectors.kinesis import KinesisStreamsSink, PartitionKeyGenerator

        sink = KinesisStreamsSink.builder().set_kinesis_client_properties({"aws.region": cfg.region or ""}) \
            .set_serialization_schema(SimpleStringSchema()).set_stream_name(cfg.kinesis_output) \
            .set_partition_key_generator(PartitionKeyGenerator.random()).build()
        stream.sink_to(sink).name("violations (Kinesis)").uid("sink-kinesis")
        return
    if not cfg.out_dir:
        raise JobError("no output: give an output directory or a Kinesis stream for the violations")
    sink = FileSink.for_row_format(os.path.join(os.path.abspath(cfg.out_dir), name), Encoder.simple_string_encoder()) \
        .with_output_file_config(OutputFileConfig.builder().with_part_prefix(name).with_part_suffix(".jsonl").build()) \
        .with_rolling_policy(RollingPolicy.on_checkpoint_rolling_policy()).build()
    stream.sink_to(sink).name(name).uid(f"sink-{name}")


def build(cfg: JobConfig) -> Any:
    """The configured StreamExecutionEnvironment with the job's graph (not yet executed)."""
    from pyflink.common import Configuration, Duration, Types, WatermarkStrategy
    from pyflink.common.watermark_strategy import TimestampAssigner
    from pyflink.datastream import CheckpointingMode, StreamExecutionEnvironment

    _behaviors(cfg)  # a bad profile fails here, before Flink starts
    conf = Configuration()
    if cfg.restore_from:
        conf.set_string("execution.savepoint.path", cfg.restore_from)
    if cfg.checkpoint_dir:
        conf.set_string("execution.checkpointing.dir", "file://" + os.path.abspath(cfg.checkpoint_dir))
        # kept when the job stops, so a restart can start from it (PyFlink 1.20's setter names a missing class)
        conf.set_string("execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION")
    # keyed state is cached in the Python workers: the default (1,000 keys) is far fewer than the things of a
    # fleet, so every report would fetch its thing's state from the JVM
    conf.set_string("python.state.cache-size", str(STATE_CACHE_KEYS))
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_python_executable(sys.executable)  # the workers must import pyflink and ggdefender
    env.set_parallelism(cfg.parallelism)
    env.get_config().set_auto_watermark_interval(WATERMARK_INTERVAL_MS)
    if cfg.checkpoint_dir:
        env.enable_checkpointing(cfg.checkpoint_interval_ms, CheckpointingMode.EXACTLY_ONCE)
    Parse, Things, Partial, Merge, Resolve, dropped_tag, ranked_tag, thresholds_desc = _functions()
    shards = cfg.shards or cfg.parallelism

    class ReportTime(TimestampAssigner):
        def extract_timestamp(self, value, record_timestamp):
            return value.at_ms

    lines = _source(env, cfg)
    parsed = lines.process(Parse(cfg), output_type=Types.PICKLED_BYTE_ARRAY()).name("parse").uid("parse")
    if cfg.parallelism > 1:
        # event time is assigned after partitioning by thing: every subtask gets reports while any source split
        # or shard has some (an idle one never holds time back; PyFlink 1.20's `with_idleness` on a Python
        # timestamp assigner marks its input idle at once, so it is not used), and a thing's reports keep
        # their order (they come from one split or shard: the rule's Kinesis partition key is the thing)
        parsed = parsed.partition_custom(lambda thing, n: zlib.crc32(thing.encode()) % n, lambda r: r.thing)
    timed = parsed.assign_timestamps_and_watermarks(
        WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_millis(cfg.lateness_ms))
        .with_timestamp_assigner(ReportTime())).name("event time")
    dps = timed.key_by(lambda r: r.thing, key_type=Types.STRING()) \
        .process(Things(cfg), output_type=Types.PICKLED_BYTE_ARRAY()).name("windows per thing").uid("things")
    thresholds = dps.get_side_output(ranked_tag) \
        .key_by(lambda dp: f"{dp.key}|{dp.end_ms}|{zlib.crc32(dp.thing.encode()) % shards}", key_type=Types.STRING()) \
        .process(Partial(cfg), output_type=Types.PICKLED_BYTE_ARRAY()).name("partial ranks").uid("partial") \
        .key_by(lambda p: f"{p[0]}|{p[1]}", key_type=Types.STRING()) \
        .process(Merge(cfg), output_type=Types.PICKLED_BYTE_ARRAY()).name("fleet ranks").uid("merge")
    violations = dps.key_by(lambda batch: batch[0].thing, key_type=Types.STRING()) \
        .connect(thresholds.broadcast(thresholds_desc)) \
        .process(Resolve(cfg), output_type=Types.STRING()).name("verdicts and alarms").uid("resolve")
    _sink(violations, cfg, "violations")
    if cfg.out_dir:
        _sink(dps.get_side_output(dropped_tag), cfg, "dropped")
    return env


# -- Managed Service for Apache Flink: the application properties -------------------------------------------------


def config_from_properties(path: str = PROPERTIES_FILE) -> JobConfig:
    """The `FleetDetect` property group: ProfileJson or ProfileS3 (s3://bucket/key), InputStream,
    OutputStream, Region, ModelPath, AllowedLatenessSeconds, Parallelism (optional)."""
    try:
        with open(path, encoding="utf-8") as fh:
            groups = json.load(fh)
    except (OSError, ValueError) as exc:
        raise JobError(f"{path}: cannot read the application properties ({exc})") from None
    props = next((g.get("PropertyMap", {}) for g in groups if isinstance(g, dict)
                  and g.get("PropertyGroupId") == PROPERTY_GROUP), None) if isinstance(groups, list) else None
    if props is None:
        raise JobError(f"{path}: no property group {PROPERTY_GROUP!r}")
    if props.get("ProfileJson"):
        profile = json.loads(props["ProfileJson"])
    elif props.get("ProfileS3"):
        import boto3

        bucket, _, key = props["ProfileS3"].removeprefix("s3://").partition("/")
        body = boto3.client("s3", region_name=props.get("Region")).get_object(Bucket=bucket, Key=key)["Body"]
        profile = json.loads(body.read(1024 * 1024))
    else:
        raise JobError(f"{PROPERTY_GROUP}: give ProfileJson or ProfileS3")
    for k in ("InputStream", "OutputStream", "Region"):
        if not props.get(k):
            raise JobError(f"{PROPERTY_GROUP}: {k} is required")
    return JobConfig(profile=profile, kinesis_stream=props["InputStream"], kinesis_output=props["OutputStream"],
                     region=props["Region"], model_path=props.get("ModelPath"),
                     lateness_ms=int(float(props.get("AllowedLatenessSeconds", 60)) * 1000),
                     parallelism=int(props.get("Parallelism", 1)))


def main() -> int:
    try:
        env = build(config_from_properties())
    except (JobError, ValueError) as exc:
        print(f"ggdefender fleet stream job: {exc}", file=sys.stderr)
        return 2
    env.execute(JOB_NAME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
