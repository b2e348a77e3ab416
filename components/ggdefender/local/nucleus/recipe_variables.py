"""Recipe variables: what {iot:thingName}, {work:path}, {configuration:/a/b}, {Dep:artifacts:path}, ... resolve
to for one component, in scripts, Setenv and (interpolateComponentConfiguration) its configuration."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

# {iot:thingName}, {kernel:rootPath}, {work:path}, {artifacts:path}, {configuration:/a/b}, {Dep:work:path}, ...
_VAR_RE = re.compile(r"\{(?:([A-Za-z0-9._-]+):)?(iot|kernel|work|artifacts|configuration):([^{}]*)\}")


@dataclass
class VariableContext:
    """What the recipe variables of one component resolve to."""

    name: str
    configuration: dict
    artifacts_path: str
    decompressed_path: str
    work_path: str
    root_path: str
    thing_name: str
    dependencies: dict = field(default_factory=dict)  # direct dependency name -> VariableContext


def resolve_pointer(document: Any, pointer: str) -> Any:
    """RFC 6901 JSON pointer; raises KeyError when there is no such node."""
    if pointer == "":
        return document
    if not pointer.startswith("/"):
        raise KeyError(pointer)
    node = document
    for part in pointer[1:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise KeyError(pointer)
    return node


def scalar_text(value: Any) -> str:
    """A configuration value as the text a script or environment variable gets (JSON for objects)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def interpolate(text: str, ctx: VariableContext) -> str:
    """Replace recipe variables in text; unknown or unresolvable variables stay as they are (like the nucleus)."""

    def replace(match: re.Match) -> str:
        owner, namespace, key = match.group(1), match.group(2), match.group(3)
        target = ctx
        if owner is not None:
            if namespace in ("iot", "kernel"):
                return match.group(0)
            found = ctx.dependencies.get(owner) if owner != ctx.name else ctx
            if found is None:
                return match.group(0)
            target = found
        if namespace == "iot":
            return ctx.thing_name if key == "thingName" else match.group(0)
        if namespace == "kernel":
            return ctx.root_path if key == "rootPath" else match.group(0)
        if namespace == "work":
            return target.work_path if key == "path" else match.group(0)
        if namespace == "artifacts":
            if key == "path":
                return target.artifacts_path
            if key == "decompressedPath":
                return target.decompressed_path
            return match.group(0)
        try:
            return scalar_text(resolve_pointer(target.configuration, key))
        except KeyError:
            return match.group(0)

    return _VAR_RE.sub(replace, text)


def interpolate_configuration(config: Any, ctx: VariableContext) -> Any:
    """Interpolate every string value of a configuration (interpolateComponentConfiguration: true)."""
    if isinstance(config, dict):
        return {k: interpolate_configuration(v, ctx) for k, v in config.items()}
    if isinstance(config, list):
        return [interpolate_configuration(v, ctx) for v in config]
    if isinstance(config, str):
        return interpolate(config, ctx)
    return config
