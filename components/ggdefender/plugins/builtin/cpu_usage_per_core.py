"""Built-in `cpu_usage_per_core` (number_list): CPU busy percent of each logical CPU, in CPU order."""

from __future__ import annotations

from ..contract import ValueType
from .cpu_times import SAMPLE_CONFIG, CpuPercentPlugin
from .declaration import Declaration


class CpuUsagePerCore(CpuPercentPlugin):
    name = "cpu_usage_per_core"
    value_type = ValueType.NUMBER_LIST
    description = "busy percent of each logical CPU since the previous report, in CPU order"
    percpu = True


DECLARATION = Declaration(CpuUsagePerCore, report_order=5, sample_config=SAMPLE_CONFIG, docs="""\
Measured like `cpu_usage`. A CPU going on- or offline between two reports leaves that report without a
value (the two readings cannot be compared).
""")
