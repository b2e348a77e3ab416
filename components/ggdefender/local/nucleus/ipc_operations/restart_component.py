"""RestartComponent (the Greengrass CLI's operation): asks the lifecycle to restart a component."""

from __future__ import annotations

from ..core import Core
from .base import NS, OperationError, OperationSpec, cli_authorize, str_field


def restart_component(core: Core, principal: str, req: dict) -> dict:
    name = str_field(req, "componentName")
    cli_authorize(core, principal, "RestartComponent", name)
    try:
        ok = core.request_restart(name)
    except KeyError:
        raise OperationError("ComponentNotFoundError", f"Component with name {name} not found") from None
    if ok:
        return {"restartStatus": "SUCCEEDED", "message": f"Component {name} restart requested"}
    return {"restartStatus": "FAILED", "message": f"Component {name} could not be restarted"}


DECLARATION = OperationSpec(NS + "RestartComponent", NS + "RestartComponentResponse", restart_component, blocking=True)
