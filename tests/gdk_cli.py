"""The real gdk CLI for the tests: its own validators and schemas, or a skip (a user's machine) / failure (CI)
naming how to get it."""

import shutil
import sys
from pathlib import Path

import real_counterparts

HOW_TO_GET = ("gdk is not on PyPI: pip install git+https://github.com/aws-greengrass/aws-greengrass-gdk-cli.git@v1.6.2 "
              "into this venv (or `pip install <wheel>` of that tag; CI's bootstrap installs GGDEFENDER_GDK_WHEEL)")


def require():
    """The installed `gdk` package (gdk 1.6.2's validators live in it), else skip/fail with HOW_TO_GET."""
    try:
        import gdk
        import gdk.common.configuration  # noqa: F401  (gdk's config validator)
        import gdk.common.RecipeValidator  # noqa: F401
    except ModuleNotFoundError:
        real_counterparts.unavailable("the gdk CLI", HOW_TO_GET)
    return gdk


def validate_config(config: dict) -> None:
    """gdk-config.json checked as `gdk component build/publish` check it (jsonschema.ValidationError if not)."""
    require()
    from gdk.common.configuration import validate_cli_version, validate_configuration

    validate_cli_version(config)
    validate_configuration(config)


def validate_recipe(recipe: dict) -> None:
    """A recipe checked with gdk's RecipeValidator and the schema shipped inside gdk (what publish runs)."""
    require()
    from gdk.common import consts, utils
    from gdk.common.RecipeValidator import RecipeValidator

    RecipeValidator(utils.get_static_file_path(consts.recipe_schema_file)).validate_recipe(recipe)


def command() -> list:
    """argv prefix that runs the gdk CLI of this interpreter's environment."""
    require()
    exe = Path(sys.executable).with_name("gdk")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("gdk")
    if found is None:
        real_counterparts.unavailable("the gdk command", HOW_TO_GET)
    return [found]
