"""The order components start in: each after the dependencies deployed with it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Iterable

from .recipe_error import RecipeError

if TYPE_CHECKING:
    from .recipe import Recipe


def dependency_order(recipes: Iterable[Recipe]) -> list:
    """Recipes sorted so each comes after the dependencies among them; raises on a cycle."""
    by_name = {r.name: r for r in recipes}
    ordered: list = []
    state: Dict[str, str] = {}

    def visit(name: str, chain: list) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise RecipeError(f"dependency cycle: {' -> '.join(chain + [name])}")
        state[name] = "visiting"
        for dep in by_name[name].dependencies:
            if dep in by_name:
                visit(dep, chain + [name])
        state[name] = "done"
        ordered.append(by_name[name])

    for name in by_name:
        visit(name, [])
    return ordered
