"""`ggdefender collect`: print (or write) Device Defender reports with no Greengrass around.

`--once` prints one report; without it a report is printed every interval until Ctrl-C. The first report
of a run has no `network_stats` (there is nothing to take a delta from yet); `--network-window S` takes
a first look S seconds earlier so a one-shot report carries them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import sys
import threading
import time
from typing import Callable, Optional

from ggdefender import topics

log = logging.getLogger("ggdefender.collector")

MAX_CONFIG_BYTES = 1 << 20
MAX_SECONDS = 86400.0


class CliError(Exception):
    """Bad input to `ggdefender collect`: printed as one line, exit status 2."""


def _seconds(minimum_exclusive: bool) -> Callable[[str], float]:
    """argparse type: a finite number of seconds, > 0 (or >= 0), at most a day."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
        low_ok = value > 0 if minimum_exclusive else value >= 0
        if not math.isfinite(value) or not low_ok or value > MAX_SECONDS:
            bound = "> 0" if minimum_exclusive else ">= 0"
            raise argparse.ArgumentTypeError(f"{text!r} must be {bound} and at most {MAX_SECONDS:g} seconds")
        return value
    return parse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("collect", help="print Device Defender metrics reports (no Greengrass needed)",
                              description=__doc__.splitlines()[0])
    p.add_argument("--once", action="store_true", help="print one report and exit")
    p.add_argument("--format", choices=topics.REPORT_FORMATS, help="report encoding (default: Collector.ReportFormat)")
    p.add_argument("--output", "-o", metavar="FILE", help="write the report here instead of stdout "
                   "(each loop report replaces the file)")
    p.add_argument("--config", metavar="FILE", help="component configuration (JSON or YAML) with "
                   "Collector / Plugins sections; defaults apply otherwise")
    p.add_argument("--interval", type=_seconds(True), metavar="S", help="seconds between reports in loop mode "
                   "(default: the configured interval)")
    p.add_argument("--network-window", type=_seconds(False), default=0.0, metavar="S",
                   help="take a baseline S seconds before the first report so it carries network_stats")
    p.add_argument("--state-dir", metavar="DIR", help="persist the report-id counter here "
                   "(default: $GGDEFENDER_STATE_DIR if set, else in memory)")
    p.add_argument("--proc-root", default="/proc", help=argparse.SUPPRESS)  # fixture trees in tests
    p.add_argument("--no-custom-metrics", action="store_true", help="leave plugin custom metrics out")
    p.set_defaults(func=main)


def _load_config(path: Optional[str]) -> dict:
    """The configuration file as a dict of sections; CliError names the file and the problem."""
    if not path:
        return {}
    try:
        with open(path, "rb") as f:
            text = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise CliError(f"--config {path}: {exc.strerror or exc}") from None
    if len(text) > MAX_CONFIG_BYTES:
        raise CliError(f"--config {path}: larger than {MAX_CONFIG_BYTES} bytes")
    import yaml

    try:
        data = yaml.safe_load(text)  # YAML is a superset of JSON
    except yaml.YAMLError as exc:
        raise CliError(f"--config {path}: not valid JSON or YAML: {' '.join(str(exc).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CliError(f"--config {path}: expected an object with configuration sections "
                       f"(Collector, Plugins), got {type(data).__name__}")
    return data


def main(args: argparse.Namespace) -> int:
    from ggdefender.collector import config as cfg
    from ggdefender.collector import sources
    from ggdefender.collector.pipeline import Pipeline, ReportInvalid
    from ggdefender.collector.report import ReportTooLarge
    from ggdefender.collector.report_id import ReportIds
    from ggdefender.settings import ConfigError, unknown_sections

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        conf = _load_config(args.config)
        for w in unknown_sections(conf):
            log.warning("--config %s: %s", args.config, w)
        settings = cfg.parse(conf.get("Collector"))
        plugins = None
        if not args.no_custom_metrics and settings.include_custom_metrics:
            plugins = _plugin_host(conf.get("Plugins"))
    except CliError as exc:
        print(f"ggdefender collect: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"ggdefender collect: invalid configuration: {exc}", file=sys.stderr)
        return 2
    for w in settings.warnings:
        log.warning("%s", w)
    if args.format:
        settings = dataclasses.replace(settings, report_format=args.format)
    state = args.state_dir or os.environ.get("GGDEFENDER_STATE_DIR")
    ids = ReportIds.in_state_dir(state) if state else ReportIds()
    source = None
    if args.proc_root != "/proc":
        source = sources.create("procfs", proc_root=args.proc_root)
    pipeline = Pipeline(settings, ids, source=source)

    def emit() -> bool:
        custom = None
        if plugins is not None:
            try:
                custom = plugins.collect()
            except Exception as exc:  # a plugin bug must not cost the report
                log.warning("custom metrics failed: %s", exc)
        try:
            built = pipeline.build(custom)
        except (ReportInvalid, ReportTooLarge) as exc:
            print(f"ggdefender collect: {exc}", file=sys.stderr)
            return False
        data = built.payload
        if args.output:
            from ggdefender.statefile import atomic_write

            try:
                atomic_write(args.output, data)
            except OSError as exc:
                print(f"ggdefender collect: cannot write --output {args.output}: {exc.strerror or exc}",
                      file=sys.stderr)
                return False
        elif built.fmt == "json":
            sys.stdout.write(json.dumps(built.report, indent=2) + "\n")
            sys.stdout.flush()
        else:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        return True

    try:
        if args.network_window > 0:
            pipeline.build()  # baseline only; its report is discarded
            time.sleep(args.network_window)
        if args.once:
            return 0 if emit() else 1
        interval = args.interval or settings.interval
        stop = threading.Event()
        next_at = time.monotonic()
        while not stop.is_set():
            emit()
            next_at += interval
            stop.wait(max(0.0, next_at - time.monotonic()))
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        if plugins is not None:
            try:
                plugins.close()
            except Exception:
                pass


def _plugin_host(section):
    """A PluginHost for the `Plugins` section; ConfigError when the section is invalid.

    Unlike the running component (which falls back to the defaults and keeps reporting), a one-shot
    command tells the user at once that the file they gave is wrong.
    """
    from ggdefender.plugins.host import PluginHost

    return PluginHost(section or {})  # raises ConfigError naming the bad key
