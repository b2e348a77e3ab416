"""SubscribeToConfigurationUpdate: a component is told which keys of a configuration changed, as a stream."""

from __future__ import annotations

from typing import Any, Callable, Tuple

from ..core import Core
from .base import NS, OperationError, OperationSpec, Stream, key_path, str_field


def subscribe_to_configuration_update(core: Core, principal: str, req: dict, stream: Stream) -> Tuple[dict, Callable[[], Any]]:
    name = str_field(req, "componentName", required=False) or principal
    path = key_path(req)
    try:
        core.get_config(name, path)  # the nucleus subscribes to an existing node only
    except KeyError:
        raise OperationError("ResourceNotFoundError", "Key not found", resourceType="configuration",
                             resourceName=name) from None
    shape = NS + "ConfigurationUpdateEvents"

    def deliver(component: str, changed: list) -> None:
        stream.send_event(shape, {"configurationUpdateEvent": {"componentName": component, "keyPath": changed}})

    return {}, lambda: core.subscribe_config(name, path, deliver)


DECLARATION = OperationSpec(NS + "SubscribeToConfigurationUpdate", NS + "SubscribeToConfigurationUpdateResponse",
                            subscribe_to_configuration_update, streaming=True)
