"""reboot: restart the device, and count the step done only once the device really came back from a reboot.

A reboot ends this process, so the step is two halves around it. Before: the executor records a boot marker
(`marker()`: the kernel's boot id and the time) in the journal and reports IN_PROGRESS with it in
statusDetails, then `run()` requests the reboot with the configured `RebootCommand` (an argv, no shell) and
waits. After the next start (`after_restart()`): a different boot id means the device rebooted (the step is
done); the same boot id means it did not, and once `RebootTimeoutSeconds` have passed since the request
the step FAILS. Never in the default allow-list; the AWS-Reboot managed template maps to it.
"""

from __future__ import annotations

import os
import time
from typing import Optional

from ..bounded_process import run_argv
from .base import Context, Declaration, Failed, Outcome, Rejected

NAME = "reboot"
DECLARATION = Declaration(
    name=NAME,
    summary="Reboot the device; the step completes once the device came back (a new boot id).",
    arguments={"type": "object", "additionalProperties": False},
    arguments_required=False, on_interrupt="check", allowed_by_default=False)
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
COMMAND_TIMEOUT = 60.0


def target(args: dict) -> str:
    return "device"


def current_boot_id() -> str:
    with open(BOOT_ID_PATH) as f:
        return f.read().strip()


def marker() -> dict:
    """What identifies this boot, recorded before the reboot is requested."""
    return {"bootId": current_boot_id(), "requestedAt": time.time()}


def _wait(ctx: Context, seconds: float) -> bool:
    """Sleep up to `seconds` (a reboot ends us meanwhile); True when the job was cancelled."""
    if ctx.cancel is not None:
        return ctx.cancel.wait(max(0.0, seconds))
    time.sleep(max(0.0, seconds))
    return False


def run(args: dict, ctx: Context) -> Outcome:
    settings = ctx.settings
    command = list(settings.reboot_command)
    if not os.access(command[0], os.X_OK):
        raise Rejected(f"the reboot command {command[0]} is not an executable file (Remediation.RebootCommand)")
    if ctx.dry_run:
        return Outcome(f"dry run: would reboot the device ({' '.join(command)})", {"command": command[0]})
    try:
        res = run_argv(command, timeout=COMMAND_TIMEOUT, max_bytes=settings.max_output_bytes,
                       kill_grace=settings.default_grace_period_seconds, cancel=ctx.cancel)
    except OSError as exc:
        raise Failed(f"could not start the reboot command {command[0]}: {exc.strerror or exc}") from None
    facts = {"command": command[0], "bootId": current_boot_id()}
    if res.returncode != 0:
        if res.stderr.strip():
            facts["stderr"] = res.stderr
        raise Failed(f"the reboot command {command[0]} exited with status {res.returncode}", facts)
    # the reboot ends this process; still being here after RebootTimeoutSeconds means it did not happen
    if _wait(ctx, settings.reboot_timeout_seconds):
        raise Failed("cancelled while waiting for the reboot", facts)
    raise Failed(f"the reboot was requested but the device did not reboot within "
                 f"{settings.reboot_timeout_seconds:g}s", facts)


def after_restart(recorded: Optional[dict], ctx: Context) -> Outcome:
    """The step had started before this process (re)started: did the device reboot since?"""
    if not isinstance(recorded, dict) or not recorded.get("bootId"):
        raise Failed("interrupted before the reboot was requested; re-run the job if it is still needed")
    now_id = current_boot_id()
    if now_id != recorded["bootId"]:
        return Outcome(f"rebooted (boot id {recorded['bootId'][:8]}... -> {now_id[:8]}...)",
                       {"bootId": now_id, "previousBootId": recorded["bootId"]})
    # same boot: the component restarted but the device has not (yet); wait out the rest of the expected time
    left = float(recorded.get("requestedAt", 0)) + ctx.settings.reboot_timeout_seconds - time.time()
    if left > 0 and _wait(ctx, left):
        raise Failed("cancelled while waiting for the reboot", {"bootId": now_id})
    raise Failed(f"the device did not reboot within {ctx.settings.reboot_timeout_seconds:g}s of the request "
                 "(boot id unchanged)", {"bootId": now_id})
