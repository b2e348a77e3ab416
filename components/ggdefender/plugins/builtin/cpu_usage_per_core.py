"""Built-in `cpu_usage_per_core` (number_list): CPU busy percent of each logical CPU, in CPU order."""

from __future__ import annotations

from ..contract import ValueType
from .cpu_times import CpuPercentPlugin


class CpuUsagePerCore(CpuPercentPlugin):
    name = "cpu_usage_per_core"
    value_type = ValueType.NUMBER_LIST
    description = "busy percent of each logical CPU since the previous sample (one value per CPU)"
    percpu = True
