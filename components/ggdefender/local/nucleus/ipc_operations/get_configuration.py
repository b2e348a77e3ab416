"""GetConfiguration: a component reads its own (or another component's) configuration."""

from __future__ import annotations

from ..core import Core
from .base import NS, OperationError, OperationSpec, key_path, str_field


def get_configuration(core: Core, principal: str, req: dict) -> dict:
    name = str_field(req, "componentName", required=False) or principal
    path = key_path(req)
    try:
        value = core.get_config(name, path)
    except KeyError:
        raise OperationError("ResourceNotFoundError", "Key not found", resourceType="configuration",
                             resourceName=name) from None
    if path and not isinstance(value, dict):
        value = {path[-1]: value}  # a leaf comes back as {key: value}, as the nucleus does
    return {"componentName": name, "value": value}


DECLARATION = OperationSpec(NS + "GetConfiguration", NS + "GetConfigurationResponse", get_configuration)
