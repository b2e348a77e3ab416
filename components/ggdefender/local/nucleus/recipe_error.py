"""The one error type of recipe handling.

It lives alone so each recipe module (parsing, semver, variables, configuration updates, dependency order)
can raise it without importing another; callers catch one type for every recipe, lookup or
--update-config problem.
"""


class RecipeError(ValueError):
    """A recipe, its lookup or an --update-config document is invalid; the message says what and where."""
