"""The JSON input of the fleet commands: a file holds one JSON value (a list stands for its items) or JSON lines,
read up to a size limit."""

from __future__ import annotations

import json
import sys
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


def read_json_values(path: str, limit: int) -> List[Any]:
    """The values in a file ('-': stdin) of at most `limit` bytes; OSError, or ValueError naming the problem."""
    if path == "-":
        data = sys.stdin.buffer.read(limit + 1)
    else:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than {limit} bytes")
    return json_values(data.decode("utf-8"))  # UnicodeDecodeError is a ValueError
