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

# Our operations declare themselves (operations/__init__.py; imported on first use: process B reads this
# module's constants without loading them). Device Client step types are gated separately
# (HandlerDirectory, AllowRunCommand) but also allow-listed here.
DEVICE_CLIENT_OPERATIONS = ("runHandler", "runCommand")


def _default_allowed() -> tuple:
    from . import operations

    return operations.default_allowed() + ("runHandler",)

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
FORBIDDEN_SET_CONFIG_SECTIONS = ("Remediation", "Supervisor", "Install")
# ... nor these keys: Collector.Export redirects the device's telemetry to another rule (docs/fleet.md)
FORBIDDEN_SET_CONFIG_KEYS = ("Collector/Export",)

_KEY_PATH = re.compile(r"^[A-Z][A-Za-z0-9]{0,63}/[A-Za-z][A-Za-z0-9]{0,63}$")
_USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
_PROCESS_NAME = re.compile(r"^[^/\x00]{1,64}$")


@dataclasses.dataclass(frozen=True)
class RemediationSettings:
    enabled: bool = True
    allowed_operations: tuple = dataclasses.field(default_factory=_default_allowed)
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


KNOWN_KEYS = (
    "Enabled", "AllowedOperations", "ProtectedProcessNames", "ProtectedPids", "HandlerDirectory", "HandlerUser",
    "AllowedRunAsUsers", "HandlerTimeoutSeconds", "AllowRunCommand", "RunCommandExecutables",
    "OperationTimeoutSeconds", "DefaultGracePeriodSeconds", "MaxOutputBytes", "SetConfigAllowedKeys",
    "RestartableComponents", "FirewallTable", "AcceptLocalRequests", "MaxPendingLocalRequests", "ClaimMode",
    "ReplyTimeoutSeconds", "RetryInitialSeconds", "RetryMaxSeconds", "RebootCommand", "RebootTimeoutSeconds",
)


# the numeric keys and the settings attribute each one sets
_NUMBERS = {
    "HandlerTimeoutSeconds": "handler_timeout_seconds", "OperationTimeoutSeconds": "operation_timeout_seconds",
    "DefaultGracePeriodSeconds": "default_grace_period_seconds", "MaxOutputBytes": "max_output_bytes",
    "MaxPendingLocalRequests": "max_pending_local_requests", "ReplyTimeoutSeconds": "reply_timeout_seconds",
    "RetryInitialSeconds": "retry_initial_seconds", "RetryMaxSeconds": "retry_max_seconds",
    "RebootTimeoutSeconds": "reboot_timeout_seconds",
}


def parse(section: Optional[dict]) -> RemediationSettings:
    """Validate the whole `Remediation` section; ConfigError lists every problem. Unknown keys are errors: a typo
    must not silently weaken safety."""
    section = s.as_section(section, "Remediation")
    problems = s.Problems()
    problems.keys(section, KNOWN_KEYS, "Remediation", strict=True)
    d = RemediationSettings()
    g = lambda key, default: s.get(section, key, default)  # noqa: E731
    v = problems.value
    from . import operations  # here, not at the top: process B reads this module's constants without them

    known_operations = operations.names() + DEVICE_CLIENT_OPERATIONS

    def listed(key, default, ok, why):
        """A string list whose every item passes `ok`; `why(item)` says what is wrong with one that does not."""
        items = tuple(s.as_str_list(g(key, default), f"Remediation.{key}"))
        for item in items:
            if not ok(item):
                raise s.ConfigError(f"Remediation.{key}: {why(item)}")
        return items

    def pids_():
        pids_raw = g("ProtectedPids", [])
        if isinstance(pids_raw, str):
            pids_raw = [p for p in pids_raw.split(",") if p.strip()]
        if not isinstance(pids_raw, (list, tuple)):
            raise s.ConfigError("Remediation.ProtectedPids: expected a list of process ids")
        return tuple(s.as_int(p, "Remediation.ProtectedPids", minimum=1) for p in pids_raw)

    def handler_dir_():
        handler_dir = s.as_str(g("HandlerDirectory", ""), "Remediation.HandlerDirectory", allow_empty=True)
        if handler_dir and not handler_dir.startswith("/"):
            raise s.ConfigError("Remediation.HandlerDirectory: must be an absolute path")
        return handler_dir

    def user_(key, max_length=32):
        user = s.as_str(g(key, ""), f"Remediation.{key}", max_length=max_length, allow_empty=True)
        if user and not _USER.match(user):
            raise s.ConfigError(f"Remediation.{key}: invalid user name {user!r}")
        return user

    def allow_run_command_(executables):
        allow = s.as_bool(g("AllowRunCommand", False), "Remediation.AllowRunCommand")
        if allow and not executables:
            raise s.ConfigError("Remediation.AllowRunCommand: needs a non-empty RunCommandExecutables allow-list")
        return allow

    def keys_():
        keys = tuple(s.as_str_list(g("SetConfigAllowedKeys", list(d.set_config_allowed_keys)),
                                   "Remediation.SetConfigAllowedKeys"))
        for k in keys:
            if not _KEY_PATH.match(k):
                raise s.ConfigError(f"Remediation.SetConfigAllowedKeys: {k!r} is not of the form Section/Key")
            if k.split("/")[0] in FORBIDDEN_SET_CONFIG_SECTIONS:
                raise s.ConfigError(f"Remediation.SetConfigAllowedKeys: {k!r}: the {k.split('/')[0]} section "
                                    "can never be changed by a job")
            if k in FORBIDDEN_SET_CONFIG_KEYS:
                raise s.ConfigError(f"Remediation.SetConfigAllowedKeys: {k!r} can never be changed by a job")
        return keys

    def local_requests_():
        # still a known key so `false` (the old way to turn the public door off) stays valid
        if s.as_bool(g("AcceptLocalRequests", False), "Remediation.AcceptLocalRequests"):
            raise s.ConfigError(LOCAL_REQUESTS_REMOVED)

    def reboot_():
        reboot = tuple(s.as_str_list(g("RebootCommand", list(d.reboot_command)), "Remediation.RebootCommand",
                                     max_items=16))
        if not reboot or not reboot[0].startswith("/") or "/../" in reboot[0]:
            raise s.ConfigError("Remediation.RebootCommand: an argv list whose program is a normalised absolute "
                                "path")
        return reboot

    def table_():
        table = s.as_str(g("FirewallTable", d.firewall_table), "Remediation.FirewallTable", max_length=32)
        if not re.match(r"^[a-z][a-z0-9_]{0,31}$", table):
            raise s.ConfigError(f"Remediation.FirewallTable: invalid table name {table!r}")
        return table

    def number(fn, key, minimum, maximum):
        default = getattr(d, _NUMBERS[key])
        return v(fn, g(key, default), f"Remediation.{key}", minimum=minimum, maximum=maximum, default=default)

    executables = v(listed, "RunCommandExecutables", [],
                    lambda exe: exe.startswith("/") and "/../" not in exe and not exe.endswith("/.."),
                    lambda exe: f"{exe!r} must be a normalised absolute path", default=())
    handler_dir = v(handler_dir_, default="")
    v(local_requests_)
    out = RemediationSettings(
        enabled=v(s.as_bool, g("Enabled", True), "Remediation.Enabled", default=True),
        allowed_operations=v(listed, "AllowedOperations", list(d.allowed_operations), known_operations.__contains__,
                             lambda op: f"unknown operation {op!r}", default=()),
        protected_process_names=v(listed, "ProtectedProcessNames", list(d.protected_process_names),
                                  _PROCESS_NAME.match, lambda n: f"invalid process name {n!r}", default=()),
        protected_pids=v(pids_, default=()),
        handler_directory=handler_dir.rstrip("/") or ("/" if handler_dir else ""),
        handler_user=v(user_, "HandlerUser", default=""),
        allowed_run_as_users=v(listed, "AllowedRunAsUsers", [], _USER.match, lambda u: f"invalid user name {u!r}",
                               default=()),
        handler_timeout_seconds=number(s.as_float, "HandlerTimeoutSeconds", 1, 3600),
        allow_run_command=v(allow_run_command_, executables, default=False),
        run_command_executables=executables,
        operation_timeout_seconds=number(s.as_float, "OperationTimeoutSeconds", 1, 600),
        default_grace_period_seconds=number(s.as_float, "DefaultGracePeriodSeconds", 0, 60),
        max_output_bytes=number(s.as_int, "MaxOutputBytes", 64, 1024),
        set_config_allowed_keys=v(keys_, default=()),
        restartable_components=tuple(v(s.as_str_list, g("RestartableComponents", list(d.restartable_components)),
                                       "Remediation.RestartableComponents", default=())),
        firewall_table=v(table_, default=d.firewall_table),
        max_pending_local_requests=number(s.as_int, "MaxPendingLocalRequests", 1, 100),
        claim_mode=v(s.as_choice, g("ClaimMode", d.claim_mode), "Remediation.ClaimMode", ("describe", "start-next"),
                     default=d.claim_mode),
        reply_timeout_seconds=number(s.as_float, "ReplyTimeoutSeconds", 0.5, 120),
        retry_initial_seconds=number(s.as_float, "RetryInitialSeconds", 0.1, 600),
        retry_max_seconds=number(s.as_float, "RetryMaxSeconds", 1, 3600),
        reboot_command=v(reboot_, default=d.reboot_command),
        reboot_timeout_seconds=number(s.as_float, "RebootTimeoutSeconds", 5, 86400),
    )
    problems.raise_if_any()
    return out
