"""The `Remediation` configuration section, validated as a whole into an immutable settings object.

A bad value raises `ConfigError` naming the key; the listener then keeps its last good settings.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Optional

from ggdefender import topics
from ggdefender import settings as s

COMPONENT_NAME = "ggdefender.Defender"

ALL_OPERATIONS = (
    "stop-listener", "kill-process", "block-ip", "unblock-ip", "set-config", "restart-component", "collect-now",
)
# Device Client step types are gated separately (HandlerDirectory, AllowRunCommand) but also allow-listed here.
DEVICE_CLIENT_OPERATIONS = ("runHandler", "runCommand")
# Operations that may be allow-listed but never are by default (the AWS-Reboot template maps to "reboot").
OPT_IN_OPERATIONS = ("reboot",)

# Informational: process A publishes the outcome of each of Detect's mitigation requests here for observers.
# The requests themselves never travel over local pub/sub (it carries no sender identity); process B asks
# over its private relay and A checks each request (remediation/mitigation_gate.py, docs/security.md).
RESULTS_TOPIC = topics.REMEDIATION_RESULTS

# Operations Detect's mitigation may ask for: each takes exactly one target that process A can observe for
# itself (a listening port, an established peer address). kill-process (a pid), set-config (keys) and the rest
# take arguments A cannot check against what it sees, so they stay jobs-only (authenticated by AWS IoT Jobs).
MITIGATION_OPERATIONS = ("stop-listener", "block-ip")

# A local request id (Detect's requestId); one rule for process B's requests and A's gate.
REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")

LOCAL_REQUESTS_REMOVED = ("Remediation.AcceptLocalRequests: true is not supported (removed: local pub/sub carries "
                          "no sender identity; third parties use IoT Jobs, which AWS authenticates)")

# set-config may never touch these sections: a job must not widen its own permissions or the supervisor's.
FORBIDDEN_SET_CONFIG_SECTIONS = ("Remediation", "Supervisor")

_KEY_PATH = re.compile(r"^[A-Z][A-Za-z0-9]{0,63}/[A-Za-z][A-Za-z0-9]{0,63}$")
_USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
_PROCESS_NAME = re.compile(r"^[^/\x00]{1,64}$")


@dataclasses.dataclass(frozen=True)
class RemediationSettings:
    enabled: bool = True
    allowed_operations: tuple = ALL_OPERATIONS + ("runHandler",)
    protected_process_names: tuple = ("sshd",)
    protected_pids: tuple = ()
    handler_directory: str = ""
    handler_user: str = ""
    allowed_run_as_users: tuple = ()
    handler_timeout_seconds: float = 60.0
    allow_run_command: bool = False
    run_command_executables: tuple = ()
    operation_timeout_seconds: float = 30.0
    default_grace_period_seconds: float = 5.0
    max_output_bytes: int = 1024
    set_config_allowed_keys: tuple = ("Collector/SampleIntervalSeconds", "Collector/DevelopmentSampleIntervalSeconds")
    restartable_components: tuple = (COMPONENT_NAME,)
    firewall_table: str = "ggdefender"
    max_pending_local_requests: int = 8
    claim_mode: str = "describe"
    reply_timeout_seconds: float = 10.0
    retry_initial_seconds: float = 2.0
    retry_max_seconds: float = 300.0
    reboot_command: tuple = ("/sbin/reboot",)
    reboot_timeout_seconds: float = 600.0


def parse(section: Optional[dict]) -> RemediationSettings:
    """Validate the whole `Remediation` section (unknown keys are errors: a typo must not silently weaken safety)."""
    section = s.as_section(section, "Remediation")
    known = {
        "Enabled", "AllowedOperations", "ProtectedProcessNames", "ProtectedPids", "HandlerDirectory", "HandlerUser",
        "AllowedRunAsUsers", "HandlerTimeoutSeconds", "AllowRunCommand", "RunCommandExecutables",
        "OperationTimeoutSeconds", "DefaultGracePeriodSeconds", "MaxOutputBytes", "SetConfigAllowedKeys",
        "RestartableComponents", "FirewallTable", "AcceptLocalRequests", "MaxPendingLocalRequests", "ClaimMode",
        "ReplyTimeoutSeconds", "RetryInitialSeconds", "RetryMaxSeconds", "RebootCommand", "RebootTimeoutSeconds",
    }
    unknown = sorted(set(section) - known)
    if unknown:
        raise s.ConfigError(f"Remediation: unknown key(s) {', '.join(unknown)}")
    d = RemediationSettings()
    g = lambda key, default: s.get(section, key, default)  # noqa: E731

    ops = tuple(s.as_str_list(g("AllowedOperations", list(d.allowed_operations)), "Remediation.AllowedOperations"))
    for op in ops:
        if op not in ALL_OPERATIONS + DEVICE_CLIENT_OPERATIONS + OPT_IN_OPERATIONS:
            raise s.ConfigError(f"Remediation.AllowedOperations: unknown operation {op!r}")

    names = tuple(s.as_str_list(g("ProtectedProcessNames", list(d.protected_process_names)),
                                "Remediation.ProtectedProcessNames"))
    for n in names:
        if not _PROCESS_NAME.match(n):
            raise s.ConfigError(f"Remediation.ProtectedProcessNames: invalid process name {n!r}")
    pids_raw = g("ProtectedPids", [])
    if isinstance(pids_raw, str):
        pids_raw = [p for p in pids_raw.split(",") if p.strip()]
    if not isinstance(pids_raw, (list, tuple)):
        raise s.ConfigError("Remediation.ProtectedPids: expected a list of process ids")
    pids = tuple(s.as_int(p, "Remediation.ProtectedPids", minimum=1) for p in pids_raw)

    handler_dir = s.as_str(g("HandlerDirectory", ""), "Remediation.HandlerDirectory", allow_empty=True)
    if handler_dir and not handler_dir.startswith("/"):
        raise s.ConfigError("Remediation.HandlerDirectory: must be an absolute path")
    handler_user = s.as_str(g("HandlerUser", ""), "Remediation.HandlerUser", max_length=32, allow_empty=True)
    if handler_user and not _USER.match(handler_user):
        raise s.ConfigError(f"Remediation.HandlerUser: invalid user name {handler_user!r}")
    run_as = tuple(s.as_str_list(g("AllowedRunAsUsers", []), "Remediation.AllowedRunAsUsers"))
    for u in run_as:
        if not _USER.match(u):
            raise s.ConfigError(f"Remediation.AllowedRunAsUsers: invalid user name {u!r}")

    executables = tuple(s.as_str_list(g("RunCommandExecutables", []), "Remediation.RunCommandExecutables"))
    for exe in executables:
        if not exe.startswith("/") or "/../" in exe or exe.endswith("/.."):
            raise s.ConfigError(f"Remediation.RunCommandExecutables: {exe!r} must be a normalised absolute path")
    allow_run_command = s.as_bool(g("AllowRunCommand", False), "Remediation.AllowRunCommand")
    if allow_run_command and not executables:
        raise s.ConfigError("Remediation.AllowRunCommand: needs a non-empty RunCommandExecutables allow-list")

    keys = tuple(s.as_str_list(g("SetConfigAllowedKeys", list(d.set_config_allowed_keys)),
                               "Remediation.SetConfigAllowedKeys"))
    for k in keys:
        if not _KEY_PATH.match(k):
            raise s.ConfigError(f"Remediation.SetConfigAllowedKeys: {k!r} is not of the form Section/Key")
        if k.split("/")[0] in FORBIDDEN_SET_CONFIG_SECTIONS:
            raise s.ConfigError(f"Remediation.SetConfigAllowedKeys: {k!r}: the {k.split('/')[0]} section "
                                "can never be changed by a job")

    # still a known key so `false` (the old way to turn the public door off) stays valid
    if s.as_bool(g("AcceptLocalRequests", False), "Remediation.AcceptLocalRequests"):
        raise s.ConfigError(LOCAL_REQUESTS_REMOVED)

    reboot = tuple(s.as_str_list(g("RebootCommand", list(d.reboot_command)), "Remediation.RebootCommand",
                                 max_items=16))
    if not reboot or not reboot[0].startswith("/") or "/../" in reboot[0]:
        raise s.ConfigError("Remediation.RebootCommand: an argv list whose program is a normalised absolute path")

    table = s.as_str(g("FirewallTable", d.firewall_table), "Remediation.FirewallTable", max_length=32)
    if not re.match(r"^[a-z][a-z0-9_]{0,31}$", table):
        raise s.ConfigError(f"Remediation.FirewallTable: invalid table name {table!r}")

    return RemediationSettings(
        enabled=s.as_bool(g("Enabled", True), "Remediation.Enabled"),
        allowed_operations=ops,
        protected_process_names=names,
        protected_pids=pids,
        handler_directory=handler_dir.rstrip("/") or ("/" if handler_dir else ""),
        handler_user=handler_user,
        allowed_run_as_users=run_as,
        handler_timeout_seconds=s.as_float(g("HandlerTimeoutSeconds", d.handler_timeout_seconds),
                                           "Remediation.HandlerTimeoutSeconds", minimum=1, maximum=3600),
        allow_run_command=allow_run_command,
        run_command_executables=executables,
        operation_timeout_seconds=s.as_float(g("OperationTimeoutSeconds", d.operation_timeout_seconds),
                                             "Remediation.OperationTimeoutSeconds", minimum=1, maximum=600),
        default_grace_period_seconds=s.as_float(g("DefaultGracePeriodSeconds", d.default_grace_period_seconds),
                                                "Remediation.DefaultGracePeriodSeconds", minimum=0, maximum=60),
        max_output_bytes=s.as_int(g("MaxOutputBytes", d.max_output_bytes), "Remediation.MaxOutputBytes",
                                  minimum=64, maximum=1024),
        set_config_allowed_keys=keys,
        restartable_components=tuple(s.as_str_list(g("RestartableComponents", list(d.restartable_components)),
                                                   "Remediation.RestartableComponents")),
        firewall_table=table,
        max_pending_local_requests=s.as_int(g("MaxPendingLocalRequests", d.max_pending_local_requests),
                                            "Remediation.MaxPendingLocalRequests", minimum=1, maximum=100),
        claim_mode=s.as_choice(g("ClaimMode", d.claim_mode), "Remediation.ClaimMode", ("describe", "start-next")),
        reply_timeout_seconds=s.as_float(g("ReplyTimeoutSeconds", d.reply_timeout_seconds),
                                         "Remediation.ReplyTimeoutSeconds", minimum=0.5, maximum=120),
        retry_initial_seconds=s.as_float(g("RetryInitialSeconds", d.retry_initial_seconds),
                                         "Remediation.RetryInitialSeconds", minimum=0.1, maximum=600),
        retry_max_seconds=s.as_float(g("RetryMaxSeconds", d.retry_max_seconds), "Remediation.RetryMaxSeconds",
                                     minimum=1, maximum=3600),
        reboot_command=reboot,
        reboot_timeout_seconds=s.as_float(g("RebootTimeoutSeconds", d.reboot_timeout_seconds),
                                          "Remediation.RebootTimeoutSeconds", minimum=5, maximum=86400),
    )

