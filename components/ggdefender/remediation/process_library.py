"""psutil, the process-information library remediation relies on, imported on first use.

Signalling a process safely needs its facts (name, command line, owner, parents and children) and pid-reuse
protection (its start time), which psutil keeps right on every platform; remediation does not keep its own
copy of that. psutil may be missing on Linux (no wheel for armv7l, no compiler on the device): the component
still installs and runs, and the operations that need it (their Declaration's `needs_psutil`) are
unavailable: a job using one is REJECTED before anything runs, naming psutil and the platform, and the
health document lists them (`remediation.unavailableOperations`).
"""

from __future__ import annotations

import functools
import os
import sys
from types import ModuleType
from typing import Optional, Tuple

from .operations.base import Rejected


@functools.lru_cache(maxsize=None)
def _load() -> Tuple[Optional[ModuleType], Optional[str]]:
    try:
        import psutil
    except ImportError as exc:  # not installed, or a wheel for another platform
        where = f"{sys.platform} {os.uname().machine}, Python {sys.version_info[0]}.{sys.version_info[1]}"
        return None, f"psutil is not available on this device ({where}: {exc})"
    return psutil, None


def missing() -> Optional[str]:
    """Why psutil cannot be used here, or None when it can."""
    return _load()[1]


def require() -> ModuleType:
    """The psutil module; Rejected naming psutil and the platform when it cannot be imported."""
    module, reason = _load()
    if module is None:
        raise Rejected(f"{reason}; this operation needs it to vet and signal processes safely")
    return module
