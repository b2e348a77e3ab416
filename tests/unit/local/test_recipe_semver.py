"""Versions and version requirements of recipe dependencies."""

import pytest

from ggdefender.local.nucleus import semver as s
from ggdefender.local.nucleus.recipe_error import RecipeError


def test_versions_and_requirements():
    assert s.satisfies("1.2.3", ">=1.0.0 <2.0.0")
    assert not s.satisfies("2.0.0", ">=1.0.0 <2.0.0")
    assert s.satisfies("1.9.0", "^1.2.0") and not s.satisfies("2.0.0", "^1.2.0")
    assert s.satisfies("1.2.9", "~1.2.0") and not s.satisfies("1.3.0", "~1.2.0")
    assert s.satisfies("3.0.0", "<1.0.0 || >=3.0.0")
    assert s.satisfies("2.9.1", "2.x") and not s.satisfies("3.0.0", "2.x")
    assert s.satisfies("1.2.7", "1.2.*") and not s.satisfies("1.3.0", "1.2.*")
    assert s.satisfies("0.0.1", "*")
    with pytest.raises(RecipeError, match="cannot read version requirement"):
        s.parse_requirement(">=banana", "here")
    assert s.version_key("1.0.0-rc1") < s.version_key("1.0.0") < s.version_key("1.0.10")
