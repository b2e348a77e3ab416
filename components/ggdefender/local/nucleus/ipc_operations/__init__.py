"""The Greengrass IPC operations served by the local core, one module each; a module is an operation by declaring
its `DECLARATION` (base.OperationSpec), found by ggdefender.declarations like every registry. `base.py` holds
what they share: the modeled error, request-field readers and limits, request parsing.

Each handler receives the `Core`, the caller (principal) and the parsed request object, and returns the
response object; streaming handlers also get a `Stream` and return a `start` callable that the server runs
right after the initial response is queued (so no event can precede it) and that returns the unsubscribe
function.
"""

from __future__ import annotations

import sys

from ggdefender import declarations

# operation name (aws.greengrass#...) -> OperationSpec; base.py declares nothing and is skipped
OPERATIONS = {spec.name: spec for _, spec in declarations.collect(sys.modules[__name__])}
