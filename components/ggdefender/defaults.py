"""The component's default configuration, once, in code (docs/configuration.md lists every key).

Why not in the recipe: Greengrass nucleus lite reads a recipe of at most 8,196 bytes with at most 255
sub-objects in all (docs/deploy.md), and these defaults alone are about 315. The recipe keeps only
`accessControl`, which a nucleus must see; everything here is merged *under* the component's live
configuration where it is read (`Ipc.get_config`, the one place every part reads through, process B via the
relay), so a deployment's partial MERGE still keeps the other defaults and a RESET of a key brings back the
value below.

Numbers are strings on purpose, as they were in the recipe: Greengrass turns YAML numbers into floats (and
lite into strings); every reader (settings.py) accepts both.
"""

from __future__ import annotations

import copy
import logging
from typing import Any, Optional, Sequence

from ggdefender import settings

DEFAULTS: dict = {
    "Collector": {
        "Enabled": True,
        "SampleIntervalSeconds": "300",
        "DevelopmentSampleIntervalSeconds": "0",
        "StartJitterPercent": "10",
        "ReportFormat": "json",
        "Metrics": ["listening_tcp_ports", "listening_udp_ports", "tcp_connections", "network_stats"],
        "InterfaceInclude": ["*"],
        "InterfaceExclude": ["lo"],
        "MaxListSize": "1000",
        "MaxReportBytes": "128000",
        "PublishQos": "1",
        "MinCollectNowSeconds": "10",
        "IncludeCustomMetrics": True,
        "Source": "auto",
        # reports to the customer's own topic rule through Basic Ingest (docs/fleet.md); off: Defender only
        "Export": {"Mode": "off", "RuleName": "ggdefender_fleet"},
    },
    # custom metrics (docs/plugins.md): seven built-ins, pip-installed plugins, external samples
    "Plugins": {
        "Enabled": True,
        "TimeoutSeconds": "5",
        "MaxSampleAgeSeconds": "3600",
        "Builtins": {
            "cpu_usage": {"Enabled": True},
            "memory_usage": {"Enabled": True},
            "disk_usage": {"Enabled": True, "Mounts": {"disk_usage": "/"}},
            "process_count": {"Enabled": True},
            "cpu_usage_per_core": {"Enabled": True},
            "listening_processes": {"Enabled": True},
            "dns_resolvers": {"Enabled": True},
        },
        "EnableInstalled": True,
        "External": {"Enabled": True, "MaxMetrics": "50", "MaxAgeSeconds": "900"},
    },
    # remediation job listener (docs/jobs.md)
    "Remediation": {
        "Enabled": True,
        # = the operations' declarations (remediation/operations/; not imported here: process B loads this)
        "AllowedOperations": ["block-ip", "collect-now", "kill-process", "restart-component", "set-config",
                              "stop-listener", "unblock-ip", "runHandler"],
        "ProtectedProcessNames": ["sshd"],
        "ProtectedPids": [],
        "HandlerDirectory": "",
        "HandlerUser": "",
        "AllowedRunAsUsers": [],
        "HandlerTimeoutSeconds": "60",
        "AllowRunCommand": False,
        "RunCommandExecutables": [],
        "OperationTimeoutSeconds": "30",
        "DefaultGracePeriodSeconds": "5",
        "MaxOutputBytes": "1024",
        "SetConfigAllowedKeys": ["Collector/SampleIntervalSeconds", "Collector/DevelopmentSampleIntervalSeconds"],
        "RestartableComponents": ["ggdefender.Defender"],
        "FirewallTable": "ggdefender",
        "ClaimMode": "describe",
    },
    # on-device detect (docs/detect.md); mitigation is off by default
    "Detect": {
        "Enabled": True,
        "Profiles": [],
        "ProfileDirectory": "",
        "CustomMetrics": {},
        "Statistics": {"WarmupDatapoints": "30", "MlWarmupDatapoints": "288", "HistoryDays": "14",
                       "MaxDatapointsPerSeries": "20000"},
        "ThreatLists": [],
        "MaxThreatListEntries": "100000",
        "Mitigation": {"Enabled": False, "MaxActionsPerHour": "6", "CooldownSeconds": "600",
                       "MaxTargetsPerViolation": "5", "Actions": {}},
        "VerificationStates": {},
        "Findings": {"Enabled": True, "AwsAccountId": "000000000000", "Region": "", "Partition": "aws",
                     "SeverityOverrides": {}},
    },
    "Supervisor": {
        "CollectorUser": "",
        "CollectorGroup": "",
        "RestartInitialBackoffSeconds": "1",
        "RestartMaxBackoffSeconds": "60",
        "HealthyAfterSeconds": "300",
        "StopTimeoutSeconds": "10",
        "IpcRetryBudgetSeconds": "300",
        "CollectorMemoryLimitMiB": "40",
        "LogLevel": "INFO",
    },
    # read by the install step (the recipe holds this key too: its install step interpolates it); process A only
    # judges it (supervisor/install_section.py)
    "Install": {"IndexUrl": ""},
}


def merged(base: Any, live: Any) -> Any:
    """`live` over `base` with Greengrass MERGE semantics: objects merge key by key; anything else in `live`
    (lists, scalars, a wrong type the part's validator will name) replaces the default."""
    if isinstance(base, dict) and isinstance(live, dict):
        out = copy.deepcopy(base)
        for key, value in live.items():
            out[key] = merged(out.get(key), value) if key in out else copy.deepcopy(value)
        return out
    return copy.deepcopy(base) if live is None else live


def default_at(key_path: Sequence[str]) -> Optional[Any]:
    """A copy of the default at key_path, or None when the code has none there."""
    node: Any = DEFAULTS
    for key in key_path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return copy.deepcopy(node)


_said_unknown: frozenset = frozenset()  # the unknown top-level sections last logged (said once, not per read)


def with_defaults(key_path: Sequence[str], live: Any) -> Any:
    """The component's own configuration at key_path (None when absent) with the defaults merged under it.

    Reading the whole configuration is where a misspelled top-level section (`Pluginz:`) shows: it is logged
    with the section it most likely meant, once while it stays."""
    global _said_unknown
    if not key_path and isinstance(live, dict):
        unknown = frozenset(k for k in live if k not in settings.SECTIONS + settings.OTHER_TOP_LEVEL_KEYS)
        if unknown and unknown != _said_unknown:
            for warning in settings.unknown_sections(live):
                logging.getLogger("ggdefender").warning("%s", warning)
        _said_unknown = unknown
    return merged(default_at(key_path), live)
