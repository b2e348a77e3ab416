"""Which user process B runs as when process A is root, and whether that user can read what B needs."""

from __future__ import annotations

import os
import pwd
import sys
from typing import Container, Optional, Tuple

from ggdefender import settings as s
from ggdefender.supervisor.section import SupervisorSettings

# the folder holding the ggdefender package: process B's PYTHONPATH, so its user must be able to read it
CODE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def resolve_collector_user(cfg: SupervisorSettings, workdir: str) -> Optional[Tuple[int, int, str, str]]:
    """(uid, gid, name, home) to run process B as, or None to keep ours (when not root)."""
    if os.geteuid() != 0:
        return None
    if cfg.collector_user:
        name = cfg.collector_user
        try:
            entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
        except (KeyError, ValueError):
            raise s.ConfigError(f"Supervisor.CollectorUser: no such user {name!r}") from None
    else:
        owner = os.stat(workdir).st_uid
        try:
            entry = pwd.getpwuid(owner) if owner != 0 else pwd.getpwnam("nobody")
        except KeyError:
            raise s.ConfigError("Supervisor.CollectorUser: not set and no 'nobody' user exists") from None
    if entry.pw_uid == 0:
        raise s.ConfigError("Supervisor.CollectorUser: refusing to run the collector as root")
    gid = entry.pw_gid
    if cfg.collector_group:
        import grp

        try:
            g = cfg.collector_group
            gid = grp.getgrgid(int(g)).gr_gid if g.isdigit() else grp.getgrnam(g).gr_gid
        except (KeyError, ValueError):
            raise s.ConfigError(f"Supervisor.CollectorGroup: no such group {cfg.collector_group!r}") from None
    return entry.pw_uid, gid, entry.pw_name, entry.pw_dir


def user_can_read(path: str, uid: int, groups: Container[int]) -> bool:
    """Whether uid (with groups) can reach and read path, judged from permission bits on the way there."""
    import stat as st

    real = os.path.realpath(path)
    parts = real.split(os.sep)
    for i in range(1, len(parts) + 1):
        p = os.sep.join(parts[:i]) or os.sep
        try:
            info = os.stat(p)
        except OSError:
            return False
        if i < len(parts):
            need = st.S_IXUSR  # a folder on the way: enter it
        elif st.S_ISDIR(info.st_mode):
            need = st.S_IRUSR | st.S_IXUSR  # an import folder: Python lists it, then opens files in it
        else:
            need = st.S_IRUSR
        if info.st_uid == uid:
            shift = 0
        elif info.st_gid in groups:
            shift = 3
        else:
            shift = 6
        if info.st_mode & (need >> shift) != need >> shift:
            return False
    return True


def collector_paths(argv0: str) -> list:
    """What B's user must be able to read: the interpreter, our code and, for this interpreter, its
    site-packages (a venv's dependencies)."""
    paths = [argv0, CODE_ROOT]
    if os.path.realpath(argv0) == os.path.realpath(sys.executable):
        paths += [p for p in sys.path if p.endswith("site-packages") and os.path.isdir(p)]
    return paths


def whoami() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"

