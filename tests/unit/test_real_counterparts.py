"""The switch that turns a missing real counterpart from a skip into a failure in CI."""

import pytest

import real_counterparts


def test_missing_counterpart_skips_on_a_users_machine(monkeypatch):
    monkeypatch.delenv(real_counterparts.REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="gdk is not available: pip install it"):
        real_counterparts.unavailable("gdk", "pip install it")


def test_missing_counterpart_fails_in_ci(monkeypatch):
    monkeypatch.setenv(real_counterparts.REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="CI must run this test"):
        real_counterparts.unavailable("gdk", "pip install it")
