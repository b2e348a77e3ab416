"""The built-in plugins, one module each; a module is a built-in by declaring itself (`DECLARATION`,
declaration.Declaration). `BUILTINS` maps plugin name -> class in report order, derived from the declarations;
what must stay a literal elsewhere (defaults.py, docs/plugins.md, docs/configuration.md) is checked against
them by tests/unit/plugins/test_builtin_declarations.py.
"""

from __future__ import annotations

import importlib
import pkgutil


def _declarations() -> tuple:
    found = []
    for info in pkgutil.iter_modules(__path__):
        declaration = getattr(importlib.import_module(f"{__name__}.{info.name}"), "DECLARATION", None)
        if declaration is not None:  # else a helper module (cpu_times, declaration)
            found.append(declaration)
    found.sort(key=lambda d: d.report_order)
    for kind, key in (("name", lambda d: d.name), ("report_order", lambda d: d.report_order)):
        values = [key(d) for d in found]
        twice = sorted({str(v) for v in values if values.count(v) > 1})
        if twice:
            raise RuntimeError(f"built-in plugins declare the same {kind} twice: {', '.join(twice)}")
    return tuple(found)


DECLARATIONS = _declarations()
BUILTINS = {declaration.name: declaration.plugin for declaration in DECLARATIONS}
