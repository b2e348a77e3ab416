"""The offline AWS side of `ggdefender local`: the registry of cloud services.

A service is a module of this package declaring `DECLARATION` (`Declaration`: name, class, one-line summary);
the registry is derived by listing the package (ggdefender.declarations), so adding a service is adding one
module. `local run` (and the test harness) instantiates every declared class as `Service(core, root_dir, view)`.
A service subscribes to IoT Core topics on the core (`core.subscribe_iot`), answers like the AWS service would,
and keeps what it received under `<root>/cloud/`. Optional methods: `control_commands() -> {name: fn(args: dict)
-> dict}` (reachable with `ggdefender local ...` through the control socket) and `close()`. Every service ships:
a service module that is missing or fails to import is an error, not silence.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

log = logging.getLogger("ggdefender.local.cloud.services")


@dataclasses.dataclass(frozen=True)
class Declaration:
    """What a cloud service module says about itself (its `DECLARATION`)."""

    name: str  # short, for logs and the view ("defender", "jobs", ...)
    service: type  # instantiated as service(core, root_dir, view)
    summary: str  # one line: what AWS service it stands in for


@functools.lru_cache(maxsize=None)
def declared() -> tuple:
    """Every cloud service's Declaration, in module-name order."""
    from ggdefender import declarations
    from ggdefender.local import cloud

    return tuple(decl for _, decl in declarations.collect(cloud))


def start_services(core: Any, root_dir: Path, view: Any, services: Optional[Iterable[Declaration]] = None) -> list:
    """Instantiate `services` (default: every declared one); a service that fails to start is reported and
    skipped, the others run."""
    started = []
    for decl in declared() if services is None else services:
        try:
            started.append(decl.service(core, Path(root_dir), view))
        except Exception as exc:  # one broken service must not take the whole core down
            log.exception("cloud service %s failed to start", decl.name)
            if view is not None:
                view.note("cloud", f"service {decl.name} failed to start: {exc}", level="error")
    return started


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
