"""Built-in `cpu_usage`: system-wide CPU busy percent, averaged since the previous report."""

from __future__ import annotations

from ... import settings
from ..contract import Plugin, ValueType
from .cpu_times import CpuSampler


class CpuUsage(Plugin):
    name = "cpu_usage"
    value_type = ValueType.NUMBER
    unit = "percent"
    description = "system-wide CPU busy time since the previous sample (first sample over a real interval)"
    options = {"MinIntervalSeconds": 1.0}

    def __init__(self):
        self._sampler = CpuSampler(percpu=False)

    def configure(self, options):
        self._sampler.min_interval = settings.as_float(
            options["MinIntervalSeconds"], "MinIntervalSeconds", minimum=0.1, maximum=10)

    def sample(self):
        return self._sampler.measure()
