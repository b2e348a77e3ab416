"""Fixtures of the nucleus lite tests: one lite instance for the whole session (lite_session.py)."""

import pytest

import lite_session


@pytest.fixture(scope="session")
def lite_bin():
    return lite_session.built_lite()


@pytest.fixture(scope="session")
def lite(lite_bin, tmp_path_factory):
    yield from lite_session.running_lite(lite_bin, tmp_path_factory)
