"""Where the component keeps its state, and how it writes it without ever leaving a torn file.

Every part persists something small (report id counter, alarm state, statistics history, job journal);
a crash or power loss must leave either the old or the new content, so all of them write through here.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any


def state_dir() -> str:
    """The component's work folder: the cwd under Greengrass, or GGDEFENDER_STATE_DIR when set."""
    return os.environ.get("GGDEFENDER_STATE_DIR") or os.getcwd()


def atomic_write(path: str, data: bytes, mode: int = 0o600) -> None:
    """Replace path with data atomically (temp file in the same folder, fsync, rename, fsync folder)."""
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename itself is atomic


def atomic_write_json(path: str, obj: Any, *, indent: int | None = None) -> None:
    separators = None if indent else (",", ":")
    atomic_write(path, json.dumps(obj, indent=indent, separators=separators).encode())
