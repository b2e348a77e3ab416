"""Built-in `cpu_usage`: system-wide CPU busy percent, averaged since the previous report."""

from __future__ import annotations

from ..contract import ValueType
from .cpu_times import SAMPLE_CONFIG, CpuPercentPlugin
from .declaration import Declaration


class CpuUsage(CpuPercentPlugin):
    name = "cpu_usage"
    value_type = ValueType.NUMBER
    description = "system-wide CPU busy time since the previous report"
    percpu = False


DECLARATION = Declaration(CpuUsage, report_order=1, sample_config=SAMPLE_CONFIG, docs="""\
The first report is measured over a real interval (at least `MinIntervalSeconds`), never the meaningless
first reading psutil gives; later ones cover the whole time since the previous report.
""")
