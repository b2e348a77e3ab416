"""ListComponents (the Greengrass CLI's operation): every component's version, state and configuration."""

from __future__ import annotations

from ..core import Core
from .base import NS, OperationSpec, cli_authorize, component_details


def list_components(core: Core, principal: str, req: dict) -> dict:
    cli_authorize(core, principal, "ListComponents", "*")
    out = []
    for name in sorted(core.components()):
        try:
            out.append(component_details(core, name))
        except KeyError:  # unregistered meanwhile
            continue
    return {"components": out}


DECLARATION = OperationSpec(NS + "ListComponents", NS + "ListComponentsResponse", list_components)
