"""A copy of the project's build inputs, laid out as in the repository, for tests that build or run gdk (building
wipes <root>/greengrass-build, so never in the working tree)."""

import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def copy_project(root: Path) -> Path:
    """gdk-config.json, pyproject.toml, recipes/, recipe.yaml (a link, as here) and the code, copied into `root`."""
    from ggdefender.devtools import build as b

    root.mkdir(parents=True, exist_ok=True)
    for f in ("gdk-config.json", "pyproject.toml"):
        shutil.copy(ROOT / f, root)
    shutil.copytree(ROOT / "recipes", root / "recipes")
    for _, extra_source in b.EXTRA_COMPONENTS:
        shutil.copytree(ROOT / extra_source, root / extra_source, ignore=shutil.ignore_patterns("__pycache__"))
    os.symlink(os.readlink(ROOT / "recipe.yaml"), root / "recipe.yaml")
    shutil.copytree(ROOT / "components" / "ggdefender", root / "components" / "ggdefender",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return root
