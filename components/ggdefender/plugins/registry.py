"""Which in-process plugins exist: the built-ins plus those pip-installed packages declare as entry points.

A package adds a plugin without touching our code by declaring, in its pyproject.toml:

    [project.entry-points."ggdefender.plugins"]
    open_fds = "mypkg.plugin:OpenFds"

The entry point's name must equal the plugin's `name`. Broken entry points (import errors, objects that
are not Plugin subclasses, invalid names) and name clashes are reported, never fatal: built-ins always win
a clash, and between two packages the first distribution by name wins.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Dict, List, Optional, Type

from .builtin import BUILTINS
from .contract import HOST_KEYS, Plugin, SampleError, ValueType, check_metric_name

log = logging.getLogger("ggdefender.plugins")

GROUP = "ggdefender.plugins"


@dataclass
class Registry:
    builtins: Dict[str, Type[Plugin]] = field(default_factory=dict)
    installed: Dict[str, Type[Plugin]] = field(default_factory=dict)
    # where each installed plugin came from ("dist 1.2 (mypkg.plugin:OpenFds)"), for logs and docs
    origins: Dict[str, str] = field(default_factory=dict)
    problems: List[str] = field(default_factory=list)


def check_plugin_class(obj: Any, expected_name: Optional[str] = None) -> Type[Plugin]:
    """The class itself when it honours the contract's declarations, else SampleError saying what is off."""
    if not (isinstance(obj, type) and issubclass(obj, Plugin)):
        raise SampleError(f"{obj!r} is not a subclass of ggdefender.plugins.contract.Plugin")
    check_metric_name(obj.name)
    if expected_name is not None and obj.name != expected_name:
        raise SampleError(f"entry point name {expected_name!r} differs from the plugin's name {obj.name!r}")
    ValueType.parse(obj.value_type)
    if obj.sample is Plugin.sample and obj.collect is Plugin.collect:
        raise SampleError(f"plugin {obj.name!r} implements neither sample() nor collect()")
    try:
        interval = float(obj.default_interval)
    except (TypeError, ValueError):
        raise SampleError(f"plugin {obj.name!r}: default_interval {obj.default_interval!r} is not a number") from None
    if not interval >= 0:
        raise SampleError(f"plugin {obj.name!r}: default_interval must be >= 0")
    if not isinstance(obj.options, dict) or not all(isinstance(k, str) for k in obj.options):
        raise SampleError(f"plugin {obj.name!r}: options must be a dict of option name -> default")
    reserved = sorted(set(obj.options) & HOST_KEYS)
    if reserved:
        raise SampleError(f"plugin {obj.name!r}: option name(s) {', '.join(reserved)} are reserved by the host")
    return obj


def _entry_points(group: str) -> list:
    eps = metadata.entry_points()
    if hasattr(eps, "select"):
        return list(eps.select(group=group))
    return list(eps.get(group, []))  # Python 3.9


def _origin(ep: Any) -> str:
    dist = getattr(ep, "dist", None)
    where = f"{dist.metadata['Name']} {dist.version}" if dist is not None else "unknown distribution"
    return f"{where} ({ep.value})"


def discover(group: str = GROUP) -> Registry:
    """Built-ins plus every loadable entry point of `group`; problems are logged and kept in `.problems`."""
    registry = Registry(builtins=dict(BUILTINS))

    def problem(text: str) -> None:
        registry.problems.append(text)
        log.error("plugin discovery: %s", text)

    eps = sorted(_entry_points(group), key=lambda e: (_origin(e), e.name))
    for ep in eps:
        origin = _origin(ep)
        if ep.name in registry.builtins:
            problem(f"entry point {ep.name!r} from {origin} clashes with the built-in plugin of that name; ignored")
            continue
        if ep.name in registry.installed:
            problem(f"entry point {ep.name!r} from {origin} clashes with the one from "
                    f"{registry.origins[ep.name]}; ignored")
            continue
        try:
            obj = ep.load()
        except Exception as exc:  # any import-time failure of third-party code
            problem(f"entry point {ep.name!r} from {origin} cannot be loaded: {type(exc).__name__}: {exc}")
            continue
        try:
            registry.installed[ep.name] = check_plugin_class(obj, ep.name)
        except SampleError as exc:
            problem(f"entry point {ep.name!r} from {origin} is not a valid plugin: {exc}")
            continue
        registry.origins[ep.name] = origin
        log.info("plugin discovery: %r from %s", ep.name, origin)
    return registry
