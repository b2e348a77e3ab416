"""Built-in `disk_usage`: percent of a filesystem in use, one number metric per configured mount.

`Mounts` maps metric name -> mount path, so each mount is its own custom metric in AWS (a behavior
watches one metric): default `{"disk_usage": "/"}`; e.g. add `"disk_usage_data": "/data"`.
"""

from __future__ import annotations

import logging
import os

from ... import settings
from ..contract import Plugin, SampleError, ValueType, check_metric_name
from .declaration import Declaration
from .system import disk_percent

log = logging.getLogger("ggdefender.plugins")

MAX_MOUNTS = 16


class DiskUsage(Plugin):
    name = "disk_usage"
    value_type = ValueType.NUMBER
    unit = "percent"
    description = "space used on `/`; one metric per mount you configure (see `Mounts`)"
    options = {"Mounts": {"disk_usage": "/"}}

    def __init__(self):
        self.mounts = dict(self.options["Mounts"])

    def configure(self, options):
        mounts = settings.as_section(options["Mounts"], "Mounts")
        if not mounts:
            raise settings.ConfigError("Mounts: name at least one mount (metric name -> path)")
        if len(mounts) > MAX_MOUNTS:
            raise settings.ConfigError(f"Mounts: {len(mounts)} mounts, more than the limit of {MAX_MOUNTS}")
        checked = {}
        for metric, path in mounts.items():
            try:
                check_metric_name(metric)
            except SampleError as exc:
                raise settings.ConfigError(f"Mounts: {exc}") from None
            path = settings.as_str(path, f"Mounts.{metric}")
            if not os.path.isabs(path):
                raise settings.ConfigError(f"Mounts.{metric}: {path!r} is not an absolute path")
            checked[metric] = os.path.normpath(path)
        self.mounts = checked

    def metrics(self):
        return {metric: ValueType.NUMBER for metric in self.mounts}

    def collect(self):
        values = {}
        for metric, path in self.mounts.items():
            try:
                values[metric] = round(disk_percent(path), 2)
            except OSError as exc:  # one missing mount must not hide the others
                log.warning("plugin 'disk_usage': metric %r: cannot read %s: %s; skipped for this report",
                            metric, path, exc.strerror or exc)
        return values

    def sample(self):
        return self.collect().get(next(iter(self.mounts)))


DECLARATION = Declaration(DiskUsage, report_order=3, sample_config="""\
Mounts:                 # metric name -> absolute mount path, one number metric each (at most 16)
  disk_usage: /
""", docs="""\
Each mount is its own custom metric, because a Device Defender behavior watches one metric: add e.g.
`disk_usage_data: /data` to `Mounts` and register `disk_usage_data` in AWS too. A mount that cannot be read
is logged and left out of that report; the others are still reported.
""")
