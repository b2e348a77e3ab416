"""Where the component keeps its state, and how it writes it without ever leaving a torn file.

Every part persists something small (report id counter, alarm state, statistics history, job journal);
a crash or power loss must leave either the old or the new content, so all of them write through here. And
every one of them reads through `read_json`: state of the right syntax but the wrong shape (a hand edit, an
older version, a bug) must not crash-loop a part, so each reader passes a shape check and bad state is moved
aside with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from typing import Any, Callable, Optional, TypeVar

T = TypeVar("T")


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


# -- reading ------------------------------------------------------------------------------------------------
# Bad state is kept for a post-mortem, but only this many copies per file: a part that writes bad state on
# every start must not fill the disk.
MAX_BAD_COPIES = 3
_log = logging.getLogger("ggdefender.statefile")


def read_json(path: str, check: Callable[[Any], T], default: Callable[[], T], *,
              what: str = "state", log: Optional[logging.Logger] = None) -> T:
    """The state in `path`, or `default()` when there is none or it is unusable.

    `check(parsed_json)` returns the object to use, or raises ValueError saying what is wrong (TypeError,
    KeyError, AttributeError and IndexError count as a wrong shape too). A file that is not JSON or fails the
    check is moved aside to `<path>.bad-<UTC time>` with a warning naming both files, so the part goes on from
    its default instead of crash-looping on the same bytes; the newest MAX_BAD_COPIES copies are kept.
    """
    logger = log or _log
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        return default()
    except OSError as exc:  # e.g. a permission problem: nothing to move aside, the next save may fix it
        logger.warning("%s %s cannot be read (%s); starting from the default", what, path, exc)
        return default()
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        problem = f"not JSON: {exc or 'nested too deeply'}"
    else:
        try:
            return check(obj)
        except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
            problem = f"wrong shape: {exc}"
    aside = move_aside(path)
    where = f"moved to {aside}" if aside else "could not be moved aside"
    logger.warning("%s %s is unusable (%s); %s; starting from the default", what, path, problem, where)
    return default()


def move_aside(path: str) -> Optional[str]:
    """Rename `path` to `<path>.bad-<UTC time>` and prune older copies; the new name, or None on failure."""
    now = time.time()
    # microseconds: copies sort by name in the order they were made
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
    aside = f"{path}.bad-{stamp}"
    n = 1
    while os.path.lexists(aside):
        n += 1
        aside = f"{path}.bad-{stamp}-{n}"
    try:
        os.replace(path, aside)
    except OSError as exc:
        _log.error("cannot move %s aside: %s", path, exc)
        return None
    folder, base = os.path.split(os.path.abspath(path))
    prefix = base + ".bad-"
    try:
        copies = sorted(f for f in os.listdir(folder) if f.startswith(prefix))
    except OSError:
        return aside
    for old in copies[:-MAX_BAD_COPIES]:
        try:
            os.unlink(os.path.join(folder, old))
        except OSError:
            pass
    return aside


# -- shape checks shared by the readers ------------------------------------------------------------------------
_KIND_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number",
               bool: "a boolean", type(None): "null"}


def need(value: Any, kind, where: str):
    """`value` when it is an instance of `kind` (a type or tuple; bool never counts as a number), else
    ValueError naming `where`."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds):
        return value
    names = ["a number" if k is float and int in kinds else _KIND_NAMES.get(k, k.__name__)
             for k in kinds if not (k is int and float in kinds)]
    raise ValueError(f"{where} must be {' or '.join(names)}, not {type(value).__name__}")
