"""Built-in `process_count`: number of processes on the device (all users, not only visible ones)."""

from __future__ import annotations

import psutil

from ..contract import Plugin, ValueType


class ProcessCount(Plugin):
    name = "process_count"
    value_type = ValueType.NUMBER
    unit = "count"
    description = "number of running processes (kernel threads included, as in /proc)"

    def sample(self):
        # pids() lists /proc entries, which an unprivileged user sees for every process
        return len(psutil.pids())
