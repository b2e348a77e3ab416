"""The project's one registration style: a module declares itself with a module-level `DECLARATION`.

Five registries use it, each by listing its own package with `collect()`: remediation operations
(remediation/operations/), built-in plugins (plugins/builtin/), metric sources (collector/sources/), the
offline cloud services of `ggdefender local` (local/cloud/) and the IPC operations of its nucleus
(local/nucleus/ipc_operations/). Adding one is adding one module; what must stay a literal elsewhere (defaults, the job schema file, docs
tables) is checked against the declarations by tests, never a second list to keep in step by hand.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType
from typing import Any, Callable, Dict, Optional, Tuple


class DeclarationError(RuntimeError):
    """Two modules of one package declare the same name (a build error, never silence)."""


def collect(package: ModuleType, name: Callable[[Any], str] = lambda d: d.name,
            order: Optional[Callable[[Any], Any]] = None) -> Tuple[Tuple[ModuleType, Any], ...]:
    """(module, DECLARATION) of every module in `package` that declares one, sorted by module name, or by
    `order(declaration)` when given (a registry whose order means something: report order, preference).

    Modules without `DECLARATION` are helpers and are skipped. Importing is not guarded: a module that
    fails to import raises here, so a broken or missing part is an error. Two modules declaring the same
    `name(declaration)`, or the same `order(declaration)`, raise DeclarationError naming both modules.
    """
    found = []
    keys = [("name", name)] + ([("order", order)] if order is not None else [])
    owners: Dict[str, Dict[Any, str]] = {what: {} for what, _ in keys}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        declaration = getattr(module, "DECLARATION", None)
        if declaration is None:
            continue
        for what, key_of in keys:
            key, owner = key_of(declaration), owners[what]
            if key in owner:
                label = f"{key!r}" if what == "name" else f"{what} {key!r}"
                raise DeclarationError(f"{package.__name__}: {label} is declared twice, by {owner[key]} and "
                                       f"{module.__name__}")
            owner[key] = module.__name__
        found.append((module, declaration))
    if order is not None:
        found.sort(key=lambda item: order(item[1]))
    return tuple(found)
