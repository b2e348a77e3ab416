"""The `Install` configuration section (read by the recipe's install step, not by a running process): the part of
process A that judges it when it changes, so a typo or a bad index URL shows in the health document and the log
at once instead of only as a failed install at the next deployment (docs/configuration.md, Install)."""

from __future__ import annotations

from typing import Any

from ggdefender.supervisor import index_url
from ggdefender import settings as s

INSTALL_NOTE = "Install settings take effect at the component's next install (a deployment that changes them)"
KEYS = ("IndexUrl",)


class InstallSection:
    section = "Install"

    def __init__(self) -> None:
        self.index_url = ""  # the last accepted one (informational: install.sh reads the configuration itself)

    def reconfigure(self, section: Any) -> None:
        section = s.as_section(section, "Install")
        # strict: a misspelt IndexUrl would silently install from the artifact instead of the intended index
        problems = s.Problems()
        problems.keys(section, KEYS, "Install", strict=True)
        value = section.get("IndexUrl", "")
        why = index_url.problem(value)
        if why:
            problems.errors.append(f"{why}; the next install would refuse it")
        problems.raise_if_any()
        self.index_url = value

    def start(self) -> None:
        """Nothing to begin: the install step reads the section."""

    def close(self) -> None:
        """Nothing to end."""
