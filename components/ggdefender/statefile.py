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
from typing import Any, Callable, Optional, Tuple, TypeVar, Union

T = TypeVar("T")


def state_dir() -> str:
    """The component's work folder: the cwd under Greengrass, or GGDEFENDER_STATE_DIR when set."""
    return os.environ.get("GGDEFENDER_STATE_DIR") or os.getcwd()


# Process A's own state (job journal, last good Remediation/Supervisor sections, the work-folder lock) lives in
# this subfolder of the work folder. Why: the work folder belongs to the component's posix user, which process
# B (by default) and every other component running as that user share; A may be root and acts on this state.
PRIVATE_SUBDIR = "supervisor"
# the states a previous version kept in the work folder itself: moved in once, when they are provably A's
LEGACY_PRIVATE_FILES = ("remediation-journal.json", "last-good-Remediation.json", "last-good-Supervisor.json")
_private_fds: dict = {}  # work folder -> fd of its verified private folder, held for the process's lifetime


def private_dir(work: str) -> str:
    """Process A's private state folder `<work>/supervisor`, as a path through a held directory fd.

    The folder must be a real directory (no symlink) owned by this process's user with no group/other
    write; anything else there (e.g. planted by a process of the work folder's user while A is root) is
    renamed to `supervisor.untrusted-<time>` with an error and a fresh folder is made. The returned path is
    `/proc/self/fd/N/`-based, so renaming or replacing the folder after the check cannot redirect A's reads or
    writes (no check-then-use race). Raises OSError when no trustworthy folder can be made.
    """
    import errno
    import stat

    work = os.path.abspath(work)
    if work in _private_fds:
        return f"/proc/self/fd/{_private_fds[work]}"
    path = os.path.join(work, PRIVATE_SUBDIR)
    for _ in range(3):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            fd = None
        if fd is not None:
            info = os.fstat(fd)
            if info.st_uid == os.geteuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                os.fchmod(fd, 0o700)
                _private_fds[work] = fd
                held = f"/proc/self/fd/{fd}"
                _adopt_legacy(work, held)
                return held
            os.close(fd)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = f"{path}.untrusted-{stamp}"
        _log.error("%s is not a folder owned by uid %d without group/other write access (someone else made or "
                   "changed it); moved to %s, starting a new one", path, os.geteuid(), aside)
        try:
            os.replace(path, aside)
        except OSError as exc:
            raise OSError(f"cannot move the untrusted {path} aside: {exc}") from None
    raise OSError(f"cannot make a private state folder at {path}: it keeps being replaced")


def shown(path: str) -> str:
    """`path` as an operator finds it on disk (a private_dir path goes through /proc/self/fd)."""
    return os.path.realpath(path) if path.startswith("/proc/self/fd/") else path


def _adopt_legacy(work: str, private: str) -> None:
    """Move an earlier version's state of A from the work folder in, only when A's own user wrote it."""
    import stat

    for name in LEGACY_PRIVATE_FILES:
        old = os.path.join(work, name)
        try:
            info = os.lstat(old)
        except OSError:
            continue
        if (stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid() and info.st_nlink == 1
                and not os.path.lexists(os.path.join(private, name))):
            try:
                os.rename(old, os.path.join(private, name))
                _log.info("moved %s into process A's private state folder", old)
            except OSError as exc:
                _log.warning("cannot move %s into the private state folder: %s", old, exc)
        else:
            _log.warning("ignoring %s: not a file written by uid %d (process A's state lives in %s/%s)",
                         old, os.geteuid(), work, PRIVATE_SUBDIR)


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
        logger.warning("%s %s cannot be read (%s); starting from the default", what, shown(path), exc)
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
    where = f"moved to {shown(aside)}" if aside else "could not be moved aside"
    logger.warning("%s %s is unusable (%s); %s; starting from the default", what, shown(path), problem, where)
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
        _log.error("cannot move %s aside: %s", shown(path), exc)
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


def need(value: Any, kind: Union[type, Tuple[type, ...]], where: str) -> Any:
    """`value` when it is an instance of `kind` (a type or tuple; bool never counts as a number), else
    ValueError naming `where`."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds):
        return value
    names = ["a number" if k is float and int in kinds else _KIND_NAMES.get(k, k.__name__)
             for k in kinds if not (k is int and float in kinds)]
    raise ValueError(f"{where} must be {' or '.join(names)}, not {type(value).__name__}")
