"""Built-in `process_count`: number of processes on the device (all users, not only visible ones)."""

from __future__ import annotations

import psutil

from ..contract import Plugin, ValueType
from .declaration import Declaration


class ProcessCount(Plugin):
    name = "process_count"
    value_type = ValueType.NUMBER
    unit = "count"
    description = "processes running on the device"

    def sample(self):
        # pids() lists /proc entries, which an unprivileged user sees for every process
        return len(psutil.pids())


DECLARATION = Declaration(ProcessCount, report_order=4, sample_config="", docs="""\
Counts every process of every user, kernel threads included (the entries of `/proc`); an unprivileged
collector sees them all.
""")
