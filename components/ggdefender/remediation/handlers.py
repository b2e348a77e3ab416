"""Device Client compatible `runHandler` and `runCommand` steps, without the Device Client's safety gaps.

- Handlers come only from `Remediation.HandlerDirectory`: a plain file name (checked in documents.py),
  resolved without following symlinks; the directory and the file must be owned by root or by this
  process's user and writable by their owner only (the Device Client asks for mode 700 but checks it only
  for path "default"); no setuid/setgid; the file must be executable by the user it runs as.
- The step runs as a user we resolve and check: the document's `runAsUser` only if it is in
  `AllowedRunAsUsers` (or equals `HandlerUser`), else `HandlerUser`; never root unless "root" is listed
  explicitly. When we are not root we can only run as ourselves, and say so instead of falling back.
- argv is `[handler, runAsUser, args...]` exactly like the Device Client (its sample handlers expect it),
  executed without a shell, with a timeout, both pipes drained, output capped (bounded_process).
- `runCommand` only when `AllowRunCommand` is true and the program resolves to a path in
  `RunCommandExecutables`.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
from typing import TYPE_CHECKING

from .bounded_process import SAFE_PATH, run_argv
from .operations.base import Context, Failed, Outcome, Rejected

if TYPE_CHECKING:
    from .config import RemediationSettings
    from .documents import Step


def resolve_user(step: Step, settings: RemediationSettings) -> pwd.struct_passwd:
    """The account a handler/command runs as; Rejected when the document or configuration does not allow it."""
    euid = os.geteuid()
    wanted = step.run_as_user or settings.handler_user
    if wanted and wanted != settings.handler_user and wanted not in settings.allowed_run_as_users:
        raise Rejected(f"runAsUser {wanted!r} is not in Remediation.AllowedRunAsUsers")
    if not wanted:
        if euid == 0:
            raise Rejected("Remediation.HandlerUser is not configured; refusing to run a handler as root")
        return pwd.getpwuid(euid)
    try:
        account = pwd.getpwnam(wanted)
    except KeyError:
        raise Rejected(f"runAsUser {wanted!r} does not exist on this device") from None
    if account.pw_uid == 0 and "root" not in settings.allowed_run_as_users:
        raise Rejected("running a handler as root needs \"root\" in Remediation.AllowedRunAsUsers")
    if euid != 0 and account.pw_uid != euid:
        raise Rejected(f"cannot run as {wanted!r}: this listener is not root (uid {euid})")
    return account


def _owner_ok(st: os.stat_result) -> bool:
    return st.st_uid in (0, os.geteuid())


def check_handler(handler: str, settings: RemediationSettings) -> str:
    """Absolute path of a vetted handler file; Rejected (never FAILED: fixing it needs an operator) otherwise."""
    directory = settings.handler_directory
    try:
        dst = os.stat(directory)
    except OSError as exc:
        raise Rejected(f"handler directory {directory} is not usable: {exc.strerror}") from None
    if not stat.S_ISDIR(dst.st_mode):
        raise Rejected(f"handler directory {directory} is not a directory")
    if not _owner_ok(dst) or dst.st_mode & 0o022:
        raise Rejected(f"handler directory {directory} must be owned by root or uid {os.geteuid()} and "
                       f"writable only by its owner (mode {stat.S_IMODE(dst.st_mode):o})")
    path = os.path.join(directory, handler)
    try:
        fst = os.lstat(path)
    except OSError:
        raise Rejected(f"handler {handler!r} does not exist in {directory}") from None
    if stat.S_ISLNK(fst.st_mode) or not stat.S_ISREG(fst.st_mode):
        raise Rejected(f"handler {handler!r} must be a regular file, not a symlink or special file")
    mode = stat.S_IMODE(fst.st_mode)
    if not _owner_ok(fst):
        raise Rejected(f"handler {handler!r} is owned by uid {fst.st_uid}; it must be owned by root or "
                       f"uid {os.geteuid()}")
    if mode & 0o022 or mode & 0o6000 or not mode & 0o100:
        raise Rejected(f"handler {handler!r} has mode {mode:o}; only its owner may write it, it must not be "
                       "setuid/setgid, and it must be executable (e.g. chmod 700, or 755 for another run user)")
    return path


def check_executable_by(path: str, account: pwd.struct_passwd) -> None:
    """The run user must be able to execute the handler (it is not run through root)."""
    st = os.stat(path)
    mode = stat.S_IMODE(st.st_mode)
    if account.pw_uid == 0 or account.pw_uid == st.st_uid:
        return
    if mode & 0o001 or (mode & 0o010 and st.st_gid == account.pw_gid):
        return
    raise Rejected(f"handler {os.path.basename(path)!r} (mode {mode:o}, owner uid {st.st_uid}) is not executable "
                   f"by run user {account.pw_name!r}")


def check_reachable_by(path: str, account: pwd.struct_passwd) -> None:
    """Every directory above the program must be searchable by the run user, or exec fails."""
    if account.pw_uid == 0:
        return
    directory = os.path.dirname(path)
    while True:
        st = os.stat(directory)
        mode = stat.S_IMODE(st.st_mode)
        if not (st.st_uid == account.pw_uid or mode & 0o001 or (mode & 0o010 and st.st_gid == account.pw_gid)):
            raise Rejected(f"directory {directory} (mode {mode:o}) is not searchable by run user "
                           f"{account.pw_name!r}")
        parent = os.path.dirname(directory)
        if parent == directory:
            return
        directory = parent


def check_command(argv: list, settings: RemediationSettings) -> str:
    """Absolute path of an allow-listed runCommand program."""
    program = argv[0]
    path = program if program.startswith("/") else shutil.which(program, path=SAFE_PATH)
    if not path:
        raise Rejected(f"runCommand program {program!r} was not found")
    path = os.path.normpath(path)
    if path not in settings.run_command_executables:
        raise Rejected(f"runCommand program {path!r} is not in Remediation.RunCommandExecutables")
    return path


def preflight(step: Step, settings: RemediationSettings) -> None:
    """Everything that would make the step impossible, checked before any step of the job runs."""
    account = resolve_user(step, settings)
    if step.operation == "runHandler":
        path = check_handler(step.arguments["handler"], settings)
    else:
        path = check_command(step.arguments["argv"], settings)
    check_reachable_by(path, account)
    check_executable_by(path, account)


def run_step(step: Step, ctx: Context, include_stdout: bool) -> Outcome:
    settings = ctx.settings
    account = resolve_user(step, settings)
    if step.operation == "runHandler":
        exe = check_handler(step.arguments["handler"], settings)
        argv = [exe, step.run_as_user] + list(step.arguments["args"])
        cwd = settings.handler_directory
    else:
        exe = check_command(step.arguments["argv"], settings)
        argv = [exe] + list(step.arguments["argv"][1:])
        cwd = account.pw_dir if os.path.isdir(account.pw_dir) else "/"
    if ctx.dry_run:
        return Outcome(f"dry run: would run {os.path.basename(exe)} as {account.pw_name}",
                       {"program": os.path.basename(exe), "user": account.pw_name})
    env = {"PATH": SAFE_PATH, "LANG": "C.UTF-8", "HOME": account.pw_dir or "/", "USER": account.pw_name,
           "LOGNAME": account.pw_name}
    switch = account.pw_uid != os.geteuid()
    timeout = settings.handler_timeout_seconds
    try:
        res = run_argv(argv, timeout=timeout, max_bytes=settings.max_output_bytes, cwd=cwd, env=env,
                       user=account.pw_uid if switch else None, group=account.pw_gid if switch else None,
                       kill_grace=settings.default_grace_period_seconds, cancel=ctx.cancel)
    except OSError as exc:
        raise Failed(f"could not start {os.path.basename(exe)}: {exc.strerror or exc}") from None
    facts = {"program": os.path.basename(exe), "user": account.pw_name}
    if include_stdout and res.stdout.strip():
        facts["stdout"] = res.stdout
    if res.stderr.strip():
        facts["stderr"] = res.stderr
    if res.cancelled:
        raise Failed(f"{os.path.basename(exe)} was stopped (with its process group): the job was cancelled", facts)
    if res.timed_out:
        raise Failed(f"{os.path.basename(exe)} timed out after {timeout:g}s and was stopped", facts)
    assert res.returncode is not None  # None only after a timeout or a cancel, both raised above
    facts["exitCode"] = str(res.returncode)
    if res.returncode < 0:
        raise Failed(f"{os.path.basename(exe)} was killed by signal {-res.returncode}", facts)
    if res.returncode != 0:
        raise Failed(f"{os.path.basename(exe)} exited with status {res.returncode}", facts)
    if step.allow_stderr is not None and res.stderr_lines > step.allow_stderr:
        # the documented Device Client meaning (its code differs): exit 0 AND at most N stderr lines
        raise Failed(f"{os.path.basename(exe)} wrote {res.stderr_lines} stderr lines; allowStdErr is "
                     f"{step.allow_stderr}", facts)
    return Outcome(f"{os.path.basename(exe)} exited with status 0", facts)
