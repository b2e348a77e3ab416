"""Built-in `cpu_usage`: system-wide CPU busy percent, averaged since the previous report."""

from __future__ import annotations

from ..contract import ValueType
from .cpu_times import CpuPercentPlugin


class CpuUsage(CpuPercentPlugin):
    name = "cpu_usage"
    value_type = ValueType.NUMBER
    description = "system-wide CPU busy time since the previous sample (first sample over a real interval)"
    percpu = False
