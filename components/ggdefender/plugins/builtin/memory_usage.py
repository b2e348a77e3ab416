"""Built-in `memory_usage`: share of physical memory in use (what `free` calls used: total - available)."""

from __future__ import annotations

from ..contract import Plugin, ValueType
from .declaration import Declaration
from .system import memory_percent


class MemoryUsage(Plugin):
    name = "memory_usage"
    value_type = ValueType.NUMBER
    unit = "percent"
    description = "physical memory in use: (total - available) / total"

    def sample(self):
        # reclaimable page cache counts as available, which is what an operator means by "in use"
        return round(memory_percent(), 2)


DECLARATION = Declaration(MemoryUsage, report_order=2, sample_config="", docs="""\
Reclaimable page cache counts as available, which is what an operator means by "free".
""")
