"""One collection: sample -> network deltas -> report -> validate -> encode. Shared by the service and the CLI.

Keeps the previous network counters (for deltas) and the report-id counter; everything else is stateless.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, List, Mapping, Optional

from ggdefender.collector import report as rpt
from ggdefender.collector import sources
from ggdefender.collector.config import CollectorSettings
from ggdefender.collector.report_id import ReportIds

log = logging.getLogger("ggdefender.collector")


class ReportInvalid(ValueError):
    def __init__(self, problems: List[str]):
        super().__init__("report failed validation: " + "; ".join(problems[:10]))
        self.problems = problems


@dataclass(frozen=True)
class Built:
    report: dict  # long names
    payload: bytes
    fmt: str
    report_id: int


class Pipeline:
    def __init__(self, settings: CollectorSettings, ids: ReportIds, source: Any = None, validate: bool = True):
        self.settings = settings
        self.ids = ids
        # Full jsonschema validation of every report. The running component turns it off (see
        # docs/performance.md): importing jsonschema costs ~12 MiB RSS of the 60 MiB budget and validating
        # took more than half of a report's time at 10k sockets, while what it checks is already guaranteed
        # (the builder is tested against the schema; custom metrics pass plugins.contract.validate_value).
        self.validate = validate
        self._injected = source  # tests hand in a fixture source; otherwise one is picked per settings
        self._source: Any = None
        self._source_key: Optional[tuple] = None
        self._previous_counters: Optional[Mapping] = None
        self._baseline_of_last: Optional[Mapping] = None  # the baseline the last built report's delta used

    def reconfigure(self, settings: CollectorSettings) -> None:
        if self._key(settings) != self._key(self.settings):
            self._previous_counters = None  # another interface set: restart the baseline
        self.settings = settings

    @staticmethod
    def _key(st: CollectorSettings) -> tuple:
        return (st.source, st.interface_include, st.interface_exclude)

    def source(self):
        key = self._key(self.settings)
        if self._source is None or self._source_key != key:
            if self._injected is not None:
                self._injected.interface_filter = self.settings.interface_filter()
                self._source = self._injected
            else:
                self._source = sources.pick_source(self.settings.source,
                                                   interface_filter=self.settings.interface_filter())
            self._source_key = key
        return self._source

    def build(self, custom_metrics: Optional[Mapping[str, list]] = None) -> Built:
        st = self.settings
        sample = self.source().sample(st.metrics)
        for problem in sample.errors:
            log.warning("collection problem (group left out of this report): %s", problem)
        net = None
        self._baseline_of_last = self._previous_counters
        if sample.counters is not None:
            net = rpt.network_delta(self._previous_counters, sample.counters)
            if net is None and self._previous_counters is not None:
                log.info("network counters went backwards (interface reset or counter wrap): "
                         "network_stats left out of this report")
            self._previous_counters = sample.counters
        else:
            # not collected this time (group switched off, or the read failed): a later delta from the old
            # baseline would span several reports, so the next report starts a new one instead
            self._previous_counters = None
        report_id = self.ids.next()
        report = rpt.build_report(
            sample, report_id, network_stats=net,
            custom_metrics=custom_metrics if st.include_custom_metrics else None,
            fmt=st.report_format, max_list=st.max_list_size, max_bytes=st.max_report_bytes)
        if custom_metrics and st.include_custom_metrics:
            dropped = sorted(set(custom_metrics) - set(report.get("custom_metrics", ())))
            if dropped:
                log.warning("custom metrics together exceed MaxReportBytes (%d); left out of report %d, largest "
                            "first: %s", st.max_report_bytes, report_id, ", ".join(dropped))
        payload = rpt.encode(report, st.report_format)
        if self.validate:
            from ggdefender.collector.schema import validate_report

            problems = validate_report(payload, st.report_format)
            if problems:
                raise ReportInvalid(problems)
        return Built(report, payload, st.report_format, report_id)

    def not_delivered(self) -> None:
        """The last built report never reached IoT Core: the next report's network_stats then count from
        that report's baseline, so the traffic of a failed interval is carried over instead of lost."""
        self._previous_counters = self._baseline_of_last
