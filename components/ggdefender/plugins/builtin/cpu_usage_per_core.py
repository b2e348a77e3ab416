"""Built-in `cpu_usage_per_core` (number_list): CPU busy percent of each logical CPU, in CPU order."""

from __future__ import annotations

from ... import settings
from ..contract import Plugin, ValueType
from .cpu_times import CpuSampler


class CpuUsagePerCore(Plugin):
    name = "cpu_usage_per_core"
    value_type = ValueType.NUMBER_LIST
    unit = "percent"
    description = "busy percent of each logical CPU since the previous sample (one value per CPU)"
    options = {"MinIntervalSeconds": 1.0}

    def __init__(self):
        self._sampler = CpuSampler(percpu=True)

    def configure(self, options):
        self._sampler.min_interval = settings.as_float(
            options["MinIntervalSeconds"], "MinIntervalSeconds", minimum=0.1, maximum=10)

    def sample(self):
        return self._sampler.measure()
