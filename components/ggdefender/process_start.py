"""What both processes' entry points share: logging set-up, signal handling, and the variable by which process A
tells process B its pid (B dies with A: collector/process.py's die_with_supervisor)."""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Callable

SUPERVISOR_PID_ENV = "GGDEFENDER_SUPERVISOR_PID"  # B checks it still has this parent (see die_with_supervisor)


def setup_logging(level: str = "INFO") -> None:
    level = os.environ.get("GGDEFENDER_LOG_LEVEL", level).upper()
    logging.basicConfig(level=getattr(logging, level, logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s")


def on_signals(handler: Callable[[], None]) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: handler())
