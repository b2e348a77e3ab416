"""The built-in plugins, one module each; a module is a built-in by declaring itself (`DECLARATION`,
declaration.Declaration), found by ggdefender.declarations like every registry. `BUILTINS` maps plugin name -> class in report order, derived from the declarations;
what must stay a literal elsewhere (defaults.py, docs/plugins.md, docs/configuration.md) is checked against
them by tests/unit/plugins/test_builtin_declarations.py.
"""

from __future__ import annotations

import sys

from ggdefender import declarations


def _declarations() -> tuple:
    # helper modules (cpu_times, declaration) declare nothing and are skipped; a name or a report order
    # declared twice is refused by declarations.collect, naming both modules
    return tuple(decl for _, decl in declarations.collect(sys.modules[__name__], order=lambda d: d.report_order))


DECLARATIONS = _declarations()
BUILTINS = {declaration.name: declaration.plugin for declaration in DECLARATIONS}
