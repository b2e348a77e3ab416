"""The start order of components that depend on each other."""

import pytest

from ggdefender.local.nucleus import recipe as r
from ggdefender.local.nucleus.dependency_order import dependency_order
from ggdefender.local.nucleus.recipe_error import RecipeError
from test_recipe import LINUX, _doc  # the same recipe the parsing tests use


def test_dependency_order_and_cycles():
    a = r.parse_recipe(_doc(ComponentName="a", ComponentDependencies={"b": {}}), platform=LINUX)
    b = r.parse_recipe(_doc(ComponentName="b", ComponentDependencies={"aws.greengrass.Nucleus": {}}),
                       platform=LINUX)
    assert [x.name for x in dependency_order([a, b])] == ["b", "a"]
    c = r.parse_recipe(_doc(ComponentName="b", ComponentDependencies={"a": {}}), platform=LINUX)
    with pytest.raises(RecipeError, match="dependency cycle"):
        dependency_order([a, c])
