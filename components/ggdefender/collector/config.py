"""The `Collector` configuration section -> immutable `CollectorSettings`.

The whole section is validated before anything is swapped in: `parse()` raises one `ConfigError` that
lists every bad key, so the service keeps its last good settings and logs exactly what was wrong.
Reference: docs/configuration.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Tuple

from ggdefender import settings as s
from ggdefender import topics
from ggdefender.collector import export as export_config
from ggdefender.collector import sources
from ggdefender.collector.report import DEFAULT_MAX_BYTES, MQTT_LIMIT
from ggdefender.collector.sources.data import GROUPS, InterfaceFilter

MIN_INTERVAL = 300  # AWS throttles faster reporting; every reference agent uses this floor
KNOWN_KEYS = (
    "Enabled", "SampleIntervalSeconds", "DevelopmentSampleIntervalSeconds", "StartJitterPercent",
    "ReportFormat", "Metrics", "InterfaceInclude", "InterfaceExclude", "MaxListSize", "MaxReportBytes",
    "PublishQos", "IncludeCustomMetrics", "Source", "MinCollectNowSeconds", "Export",
)


@dataclass(frozen=True)
class CollectorSettings:
    enabled: bool = True
    sample_interval_seconds: int = MIN_INTERVAL
    development_interval_seconds: Optional[float] = None
    start_jitter_percent: float = 10.0
    report_format: str = "json"
    metrics: Tuple[str, ...] = GROUPS
    interface_include: Tuple[str, ...] = ("*",)
    interface_exclude: Tuple[str, ...] = ("lo",)
    max_list_size: int = 1000
    max_report_bytes: int = DEFAULT_MAX_BYTES
    publish_qos: int = 1
    include_custom_metrics: bool = True
    source: str = "auto"
    min_collect_now_seconds: float = 10.0  # on-demand reports never come closer together than this
    export: export_config.ExportSettings = export_config.ExportSettings()  # reports to a customer's Basic Ingest rule too
    warnings: Tuple[str, ...] = field(default=(), compare=False)

    @property
    def interval(self) -> float:
        """Seconds between reports actually used."""
        if self.development_interval_seconds is not None:
            return self.development_interval_seconds
        return float(self.sample_interval_seconds)

    def interface_filter(self) -> InterfaceFilter:
        return InterfaceFilter(self.interface_include, self.interface_exclude)


def parse(section: Any) -> CollectorSettings:
    """Validate a `Collector` section (None = all defaults). Raises ConfigError naming every bad key."""
    section = s.as_section(section, "Collector")
    problems = s.Problems("Collector.")
    warnings = problems.warnings
    values = {}

    def read(key, attr, fn):
        if key not in section or section[key] is None:
            return
        with problems.check():
            values[attr] = fn(section[key])

    read("Enabled", "enabled", lambda v: s.as_bool(v, "Enabled"))

    def interval(v):
        n = s.as_int(v, "SampleIntervalSeconds", minimum=1, maximum=86400)
        if n < MIN_INTERVAL:
            warnings.append(f"Collector.SampleIntervalSeconds {n} is below the minimum {MIN_INTERVAL}; using "
                            f"{MIN_INTERVAL} (use DevelopmentSampleIntervalSeconds for faster test reporting)")
            n = MIN_INTERVAL
        return n

    read("SampleIntervalSeconds", "sample_interval_seconds", interval)

    def dev_interval(v):
        if isinstance(v, str) and not v.strip():
            return None  # "" switches the override off
        n = s.as_float(v, "DevelopmentSampleIntervalSeconds", minimum=0, maximum=86400)
        if n == 0:
            return None  # 0 switches the override off too
        if n < 1:
            raise s.ConfigError(f"DevelopmentSampleIntervalSeconds: {n:g} is below the minimum 1")
        warnings.append(f"Collector.DevelopmentSampleIntervalSeconds={n:g} is set: reporting every {n:g} s "
                        f"instead of SampleIntervalSeconds. For development only: AWS IoT throttles devices "
                        f"that report more often than every {MIN_INTERVAL} s")
        return n

    read("DevelopmentSampleIntervalSeconds", "development_interval_seconds", dev_interval)
    read("StartJitterPercent", "start_jitter_percent",
         lambda v: s.as_float(v, "StartJitterPercent", minimum=0, maximum=100))
    read("MinCollectNowSeconds", "min_collect_now_seconds",
         lambda v: s.as_float(v, "MinCollectNowSeconds", minimum=0, maximum=3600))
    read("ReportFormat", "report_format", lambda v: s.as_choice(v, "ReportFormat", topics.REPORT_FORMATS))

    def metrics(v):
        items = s.as_str_list(v, "Metrics", max_items=len(GROUPS))
        unknown = [x for x in items if x not in GROUPS]
        if unknown:
            raise s.ConfigError(f"Metrics: unknown metric group(s) {', '.join(unknown)}; "
                                f"known: {', '.join(GROUPS)}")
        return tuple(g for g in GROUPS if g in items)  # spec order, duplicates dropped

    read("Metrics", "metrics", metrics)

    def globs(key):
        def fn(v):
            items = s.as_str_list(v, key, max_items=64)
            for p in items:
                if len(p) > 64 or any(c.isspace() for c in p):
                    raise s.ConfigError(f"{key}: {p!r} is not an interface name pattern")
            return tuple(items)
        return fn

    def include(v):
        items = globs("InterfaceInclude")(v)
        if not items:
            # an empty include list would report network_stats of exactly 0 forever, which reads as "no traffic"
            raise s.ConfigError("InterfaceInclude: empty, so no interface would count; use [\"*\"] for all, "
                                "or leave network_stats out of Metrics")
        return items

    read("InterfaceInclude", "interface_include", include)
    read("InterfaceExclude", "interface_exclude", globs("InterfaceExclude"))
    read("MaxListSize", "max_list_size", lambda v: s.as_int(v, "MaxListSize", minimum=0, maximum=100000))
    read("MaxReportBytes", "max_report_bytes",
         lambda v: s.as_int(v, "MaxReportBytes", minimum=1024, maximum=MQTT_LIMIT - 1))
    read("PublishQos", "publish_qos", lambda v: s.as_int(v, "PublishQos", minimum=0, maximum=1))
    read("IncludeCustomMetrics", "include_custom_metrics", lambda v: s.as_bool(v, "IncludeCustomMetrics"))

    def source(v: Any) -> str:
        name = s.as_choice(v, "Source", ("auto", "procfs", "psutil"))
        if name != "auto" and not sources.available(name):  # e.g. psutil not installed: say so, not every report
            raise s.ConfigError(f"Source: {name} is not available on this system; use auto")
        return name

    read("Source", "source", source)
    read("Export", "export", export_config.parse)

    # a typo must not silently fall back to a default (the Device Client "interval" trap): said, not fatal
    problems.keys(section, KNOWN_KEYS, "Collector", strict=False)
    problems.raise_if_any()
    return CollectorSettings(**values, warnings=tuple(warnings))

