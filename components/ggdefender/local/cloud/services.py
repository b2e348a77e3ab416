"""The offline AWS side of `ggdefender local`: a registry of cloud services.

`local run` (and the test harness) instantiates every class named in `CLOUD_SERVICES` as
`Service(core, root_dir, view)`. A service subscribes to IoT Core topics on the core (`core.subscribe_iot`),
answers like the AWS service would, and keeps what it received under `<root>/cloud/`. Optional methods:
`control_commands() -> {name: fn(args: dict) -> dict}` (reachable with `ggdefender local ...` through the
control socket) and `close()`. Entries whose module is not part of this build are skipped.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Callable, Iterable

log = logging.getLogger("ggdefender.local.cloud.services")

CLOUD_SERVICES = (
    "ggdefender.local.cloud.defender_service:DefenderService",
    "ggdefender.local.cloud.jobs_service:JobsService",
    "ggdefender.local.cloud.metrics_service:CloudMetricsService",
)


def load_service_class(spec: str):
    """'module:Class' -> the class, or None when the module is not present in this build."""
    module_name, sep, class_name = spec.partition(":")
    if not sep or not class_name:
        raise ValueError(f"cloud service {spec!r}: expected 'module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            return None
        raise
    try:
        return getattr(module, class_name)
    except AttributeError:
        raise ValueError(f"cloud service {spec!r}: {module_name} has no {class_name}") from None


def start_services(core, root_dir: Path, view, specs: Iterable[str] = CLOUD_SERVICES) -> list:
    """Instantiate the available services; a service that fails to start is reported and skipped."""
    services = []
    for spec in specs:
        cls = load_service_class(spec)
        if cls is None:
            continue
        try:
            services.append(cls(core, Path(root_dir), view))
        except Exception as exc:  # one broken service must not take the whole core down
            log.exception("cloud service %s failed to start", spec)
            if view is not None:
                view.note("cloud", f"service {spec} failed to start: {exc}", level="error")
    return services


def service_commands(services: Iterable) -> dict:
    """Union of the services' control commands; a name offered twice is an error in the build."""
    commands: dict[str, Callable[[dict], dict]] = {}
    for service in services:
        offered = getattr(service, "control_commands", None)
        if offered is None:
            continue
        for name, fn in offered().items():
            if name in commands:
                raise ValueError(f"control command {name!r} is offered by two cloud services")
            commands[name] = fn
    return commands


def close_services(services: Iterable) -> None:
    for service in services:
        close = getattr(service, "close", None)
        if close is not None:
            try:
                close()
            except Exception:
                log.exception("closing cloud service %s failed", type(service).__name__)
