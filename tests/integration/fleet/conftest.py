"""Every test here runs a real local Flink mini-cluster: it needs Java and PyFlink (skipped on a user's machine
without them, a failure in CI)."""

import shutil

import pytest

from tests import real_counterparts


@pytest.fixture(scope="module", autouse=True)
def flink():
    if shutil.which("java") is None:
        real_counterparts.unavailable("Java (for the local Flink mini-cluster)",
                                      "apt-get install openjdk-17-jre-headless")
    try:
        import pyflink  # noqa: F401
    except ImportError:
        real_counterparts.unavailable("PyFlink", "pip install 'ggdefender[fleet]' (apache-flink 1.20.3)")
