"""The built-in plugins, one module each; `BUILTINS` maps plugin name -> class, in report order."""

from __future__ import annotations

from .cpu_usage import CpuUsage
from .cpu_usage_per_core import CpuUsagePerCore
from .disk_usage import DiskUsage
from .dns_resolvers import DnsResolvers
from .listening_processes import ListeningProcesses
from .memory_usage import MemoryUsage
from .process_count import ProcessCount

BUILTINS = {cls.name: cls for cls in (
    CpuUsage, MemoryUsage, DiskUsage, ProcessCount, CpuUsagePerCore, ListeningProcesses, DnsResolvers,
)}
