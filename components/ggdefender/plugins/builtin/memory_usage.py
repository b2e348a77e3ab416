"""Built-in `memory_usage`: share of physical memory in use (psutil's "used by applications" view)."""

from __future__ import annotations

import psutil

from ..contract import Plugin, ValueType
from .declaration import Declaration


class MemoryUsage(Plugin):
    name = "memory_usage"
    value_type = ValueType.NUMBER
    unit = "percent"
    description = "physical memory in use: (total - available) / total"

    def sample(self):
        # `percent` counts reclaimable page cache as free, which is what an operator means by "in use"
        return round(psutil.virtual_memory().percent, 2)


DECLARATION = Declaration(MemoryUsage, report_order=2, sample_config="", docs="""\
Reclaimable page cache counts as available, which is what an operator means by "free".
""")
