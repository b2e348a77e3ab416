"""UpdateState: a component reports RUNNING or ERRORED to the lifecycle."""

from __future__ import annotations

from ..core import Core
from .base import NS, OperationError, OperationSpec, invalid


def update_state(core: Core, principal: str, req: dict) -> dict:
    state = req.get("state")
    if state not in ("RUNNING", "ERRORED"):
        raise invalid(f"state must be RUNNING or ERRORED, got {state!r}")
    try:
        core.set_state(principal, state)
    except KeyError:
        raise OperationError("ResourceNotFoundError", f"Component {principal} not found",
                             resourceType="component", resourceName=principal) from None
    return {}


DECLARATION = OperationSpec(NS + "UpdateState", NS + "UpdateStateResponse", update_state)
