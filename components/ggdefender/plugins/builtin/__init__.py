"""The built-in plugins, one module each; a module is a built-in by declaring itself (`DECLARATION`,
declaration.Declaration), found by ggdefender.declarations like every registry. `BUILTINS` maps plugin name -> class in report order, derived from the declarations;
what must stay a literal elsewhere (defaults.py, docs/plugins.md, docs/configuration.md) is checked against
them by tests/unit/plugins/test_builtin_declarations.py.
"""

from __future__ import annotations

import sys

from ggdefender import declarations


def _declarations() -> tuple:
    # helper modules (cpu_times, declaration) declare nothing and are skipped; a name declared twice is
    # refused by declarations.collect, naming both modules
    found = sorted((decl for _, decl in declarations.collect(sys.modules[__name__])), key=lambda d: d.report_order)
    orders = [d.report_order for d in found]
    twice = sorted({str(v) for v in orders if orders.count(v) > 1})
    if twice:
        raise RuntimeError(f"built-in plugins declare the same report_order twice: {', '.join(twice)}")
    return tuple(found)


DECLARATIONS = _declarations()
BUILTINS = {declaration.name: declaration.plugin for declaration in DECLARATIONS}
