"""One process A per work folder: an exclusive lock held for the process's lifetime."""

from __future__ import annotations

import errno
import fcntl
import os
from typing import IO, Optional

LOCK_FILE = "ggdefender.lock"  # in A's private state folder, held by process A for its lifetime


class WorkFolderBusy(RuntimeError):
    """Another process A holds the work folder."""


def lock_work_folder(state_dir: str, work: Optional[str] = None) -> IO[str]:
    """Take the work folder's exclusive lock for this process's lifetime (keep the returned file open).

    Two supervisors on one work folder (e.g. an orphan of a dead core beside the new core's instance) would
    share report ids, journals and state; the second refuses instead. flock dies with its holder, so a killed
    A never leaves a stale lock. The lock file lives in `state_dir` (A's private folder, so the work folder's
    user cannot hold it to keep A from starting); `work` names the folder in messages.
    """
    path = os.path.join(state_dir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    f = os.fdopen(fd, "r+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
            f.close()
            raise
        holder = f.read(32).strip()
        f.close()
        raise WorkFolderBusy(f"the work folder {work or state_dir} is in use by another ggdefender supervisor "
                             f"(pid {holder or 'unknown'}, holding {path}); refusing to share it") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f

