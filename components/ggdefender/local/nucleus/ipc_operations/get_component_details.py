"""GetComponentDetails (the Greengrass CLI's operation): one component's version, state and configuration."""

from __future__ import annotations

from ..core import Core
from .base import NS, OperationError, OperationSpec, cli_authorize, component_details, str_field


def get_component_details(core: Core, principal: str, req: dict) -> dict:
    name = str_field(req, "componentName")
    cli_authorize(core, principal, "GetComponentDetails", name)
    try:
        return {"componentDetails": component_details(core, name)}
    except KeyError:
        raise OperationError("ResourceNotFoundError", f"Component {name} not found", resourceType="component",
                             resourceName=name) from None


DECLARATION = OperationSpec(NS + "GetComponentDetails", NS + "GetComponentDetailsResponse", get_component_details)
