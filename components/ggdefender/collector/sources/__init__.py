"""The metric sources, one module each; a module is a source by declaring itself (`DECLARATION`,
declaration.Declaration), found by ggdefender.declarations like every registry. `data.py` holds the plain data
they return. `pick_source()` chooses the preferred one available: procfs on Linux, psutil elsewhere.
"""

from __future__ import annotations

import functools
import sys
from typing import Any, Dict, List

from ggdefender import declarations


@functools.lru_cache(maxsize=None)
def _registry() -> dict:
    # helper modules (data, declaration) declare nothing and are skipped
    found = declarations.collect(sys.modules[__name__], order=lambda d: d.preference)
    return {decl.name: decl for _, decl in found}


def names() -> List[str]:
    """Every source's name, in preference order."""
    return list(_registry())


def summaries() -> Dict[str, str]:
    """Each source's declared summary, by name, in preference order."""
    return {name: decl.summary for name, decl in _registry().items()}


def available(name: str) -> bool:
    """Whether source `name` can run on this host (psutil's needs psutil installed, procfs needs /proc/net)."""
    return bool(_registry()[name].available())


def create(name: str, **options: Any) -> Any:
    registry = _registry()
    if name not in registry:
        raise ValueError(f"unknown metric source {name!r}; known: {', '.join(registry)}")
    return registry[name].source(**options)


def pick_source(preferred: str = "auto", **options: Any) -> Any:
    """The preferred source, or for "auto" the first available one in preference order."""
    if preferred != "auto":
        return create(preferred, **options)
    for decl in _registry().values():
        if decl.available():
            return decl.source(**options)
    raise RuntimeError("no metric source is available on this system")
