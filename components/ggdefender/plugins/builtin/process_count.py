"""Built-in `process_count`: number of processes on the device (all users, not only visible ones)."""

from __future__ import annotations

from ..contract import Plugin, ValueType
from .declaration import Declaration
from .system import pid_count


class ProcessCount(Plugin):
    name = "process_count"
    value_type = ValueType.NUMBER
    unit = "count"
    description = "processes running on the device"

    def sample(self):
        # /proc lists every process, also to an unprivileged user
        return pid_count()


DECLARATION = Declaration(ProcessCount, report_order=4, sample_config="", docs="""\
Counts every process of every user, kernel threads included (the entries of `/proc`); an unprivileged
collector sees them all.
""")
