"""The JSON input of the fleet commands: a file holds one JSON value (a list stands for its items) or JSON lines."""

from __future__ import annotations

import json
from typing import Any, List


def json_values(text: str) -> List[Any]:
    """The values in `text`; ValueError naming the first line that is not JSON."""
    try:
        whole = json.loads(text)
    except ValueError:
        pass
    else:
        return list(whole) if isinstance(whole, list) else [whole]
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError as exc:
                raise ValueError(f"line {n}: not JSON ({exc})") from None
    return out
