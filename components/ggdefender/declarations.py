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
from typing import Any, Callable, Dict, Tuple


class DeclarationError(RuntimeError):
    """Two modules of one package declare the same name (a build error, never silence)."""


def collect(package: ModuleType, name: Callable[[Any], str] = lambda d: d.name) -> Tuple[Tuple[ModuleType, Any], ...]:
    """(module, DECLARATION) of every module in `package` that declares one, sorted by module name.

    Modules without `DECLARATION` are helpers and are skipped. Importing is not guarded: a module that
    fails to import raises here, so a broken or missing part is an error. Two modules declaring the same
    `name(declaration)` raise DeclarationError naming both modules.
    """
    found = []
    owner: Dict[str, str] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        declaration = getattr(module, "DECLARATION", None)
        if declaration is None:
            continue
        key = name(declaration)
        if key in owner:
            raise DeclarationError(f"{package.__name__}: {key!r} is declared twice, by {owner[key]} and "
                                   f"{module.__name__}")
        owner[key] = module.__name__
        found.append((module, declaration))
    return tuple(found)
