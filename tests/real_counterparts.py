"""Tests against real counterparts (the real gdk CLI, the real Greengrass nucleus lite) need things a user's
machine may lack. There they skip with a message saying how to get the missing piece; in CI, where
GGDEFENDER_REQUIRE_REAL_COUNTERPARTS=1 (set by .ci/run), a missing counterpart fails the test instead, so
compatibility is never claimed on the strength of a skipped test."""

import os

import pytest

REQUIRE_ENV = "GGDEFENDER_REQUIRE_REAL_COUNTERPARTS"


def required() -> bool:
    return os.environ.get(REQUIRE_ENV, "") == "1"


def unavailable(what: str, how_to_get: str) -> None:
    """Skip (user's machine) or fail (CI) because `what` is missing; `how_to_get` tells the reader the fix."""
    message = f"{what} is not available: {how_to_get}"
    if required():
        pytest.fail(f"{message} ({REQUIRE_ENV}=1: CI must run this test against the real counterpart)")
    pytest.skip(message)
