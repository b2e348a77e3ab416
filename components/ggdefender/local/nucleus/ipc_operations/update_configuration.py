"""UpdateConfiguration: a component merges a value into its own configuration, with a timestamp condition."""

from __future__ import annotations

from ..core import Core, FailedUpdateCondition
from .base import NS, OperationError, OperationSpec, invalid, key_path


def update_configuration(core: Core, principal: str, req: dict) -> dict:
    path = key_path(req)
    ts = req.get("timestamp")
    if ts is None:
        raise invalid("Timestamp is required")
    if isinstance(ts, bool) or not isinstance(ts, (int, float)):
        raise invalid("timestamp must be a number (epoch seconds)")
    if "valueToMerge" not in req or req["valueToMerge"] is None:
        raise invalid("ValueToMerge is required")
    try:
        core.update_configuration(principal, path, req["valueToMerge"], float(ts))
    except FailedUpdateCondition as exc:
        raise OperationError("FailedUpdateConditionCheckError", str(exc)) from None
    except KeyError:
        raise OperationError("ResourceNotFoundError", "Component not found", resourceType="component",
                             resourceName=principal) from None
    except ValueError as exc:
        raise invalid(str(exc)) from None
    return {}


DECLARATION = OperationSpec(NS + "UpdateConfiguration", NS + "UpdateConfigurationResponse", update_configuration)
