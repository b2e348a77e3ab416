"""The allow-listable remediation operations, one module each; a module is an operation by declaring itself.

Each operation module has `DECLARATION` (base.Declaration: name, arguments schema, what a restart does to it,
default allow-listing), `target(args) -> str` (for the audit line), `run(args, ctx) -> Outcome` (raises
`Rejected`/`Failed`), and optionally `validate(args, settings)` (semantic checks beyond the JSON Schema,
raising ValueError; run before a job is accepted so bad arguments are REJECTED without side effects).
Every list of operations (names, defaults, the job document's schema) is derived here from the declarations;
what must stay a literal elsewhere (defaults.py, the schema file, docs/jobs.md) is checked against them by
tests/unit/remediation/test_remediation_operations_registry.py.

Modules are found by listing this package (ggdefender.declarations, the project's one registration style), so they are imported only when the registry is first asked
(process A); process B never imports them.
"""

from __future__ import annotations

import copy
import functools
import sys

from types import ModuleType
from typing import Any, Dict

from ggdefender import declarations


@functools.lru_cache(maxsize=None)
def _registry() -> dict:
    # helper modules (base, firewall, process_control, socket_owners) declare nothing and are skipped
    return {decl.name: module for module, decl in declarations.collect(sys.modules[__name__])}


def names() -> tuple:
    """Every operation's name, in a stable order."""
    return tuple(_registry())


def default_allowed() -> tuple:
    """The operations in the default `Remediation.AllowedOperations` (before runHandler)."""
    return tuple(name for name, module in _registry().items() if module.DECLARATION.allowed_by_default)


def unavailable() -> dict:
    """{operation: why it cannot run on this device} (psutil missing); a job using one is REJECTED."""
    from ..process_library import missing  # here: process_library imports this package's base

    reason = missing()
    if reason is None:
        return {}
    return {name: f"needs psutil: {reason}" for name, module in _registry().items() if module.DECLARATION.needs_psutil}


def declaration(name: str) -> Any:
    """The Declaration of operation `name`; KeyError for unknown operations."""
    return _registry()[name].DECLARATION


def get(name: str) -> ModuleType:
    """The module implementing operation `name`; KeyError for unknown operations."""
    return _registry()[name]


def job_document_schema(schema: dict) -> dict:
    """`schema` (job_document.schema.json) with its per-operation parts built from the declarations: the step's
    operation enum, one if/then per operation, and one `$defs` entry (named after the operation) each."""
    out = copy.deepcopy(schema)
    defs = out["$defs"]
    step = defs["step"]
    step["properties"]["operation"] = {"enum": list(names())}
    step["allOf"] = []
    for name, module in _registry().items():
        decl = module.DECLARATION
        defs[name] = dict(decl.arguments, description=decl.summary)
        then: Dict[str, Any] = {"properties": {"arguments": {"$ref": f"#/$defs/{name}"}}}
        if decl.arguments_required:
            then = {"required": ["arguments"], **then}
        step["allOf"].append({"if": {"properties": {"operation": {"const": name}}}, "then": then})
    return out
