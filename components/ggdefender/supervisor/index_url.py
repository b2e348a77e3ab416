"""The one rule for Install.IndexUrl, the package index the install step may use instead of the wheels artifact.

Standard library only and runnable as a file: install.sh runs it with the device's Python before it creates the
venv (`python index_url.py <value>`: exit 0 printing the index as it may be logged, or exit 2 naming the
problem), and process A imports it to judge the Install section when a deployment changes it.
"""

from __future__ import annotations

import re
import sys
from typing import Optional
from urllib.parse import urlsplit, urlunsplit

MAX_LENGTH = 2048
# what a URL needs, and nothing a shell or pip's requirement-file syntax would read specially: the value only
# ever reaches pip as one argv element, but refusing `$`, quotes, spaces, `;` etc. keeps it so on any nucleus
_ALLOWED = re.compile(r"[A-Za-z0-9._~:/?#\[\]@!%+=,-]+")


def problem(value: object) -> Optional[str]:
    """Why `value` is no usable Install.IndexUrl, or None when it is one ("" = offline, from the artifact)."""
    if not isinstance(value, str):
        return f"Install.IndexUrl: expected a string (an http(s) URL, or \"\" for the wheels artifact), " \
               f"got {type(value).__name__}"
    if value == "":
        return None
    # named in the error (and so in the health document): without a password that may be in it
    quoted = ascii(re.sub(r"//[^/@]*@", "//***@", value)[:200])
    if len(value) > MAX_LENGTH:
        return f"Install.IndexUrl: longer than {MAX_LENGTH} characters"
    if not _ALLOWED.fullmatch(value):
        bad = sorted({c for c in value if not _ALLOWED.fullmatch(c)})
        return (f"Install.IndexUrl {quoted}: character(s) {' '.join(map(ascii, bad))} not allowed "
                "(whitespace, quotes and shell characters never belong in an index URL; percent-encode them)")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is no number
    except ValueError as exc:
        return f"Install.IndexUrl {quoted}: not a URL ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return (f"Install.IndexUrl {quoted}: expected an http:// or https:// URL with a host, "
                "e.g. https://pypi.org/simple")
    return None


def shown(value: str) -> str:
    """The index as it may be logged: without a user name or password."""
    parts = urlsplit(value)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def main(argv: list) -> int:
    if len(argv) != 1:
        print("usage: python index_url.py <Install.IndexUrl value>", file=sys.stderr)
        return 2
    why = problem(argv[0])
    if why:
        print(why, file=sys.stderr)
        return 2
    print(shown(argv[0]) if argv[0] else "")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
