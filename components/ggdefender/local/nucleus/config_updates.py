"""greengrass-cli --update-config: read and check the {MERGE, RESET} document, apply it to a configuration
(RESET to the recipe default, then MERGE), and list what an update changed."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Optional

from .recipe import MAX_RECIPE_BYTES, check_component_name
from .recipe_error import RecipeError
from .recipe_variables import resolve_pointer


def load_update_config(value: str) -> dict:
    """--update-config as greengrass-cli takes it: a JSON string, or the path of a JSON file."""
    text = value.strip()
    if not text.startswith("{"):
        path = Path(value)
        if not path.is_file():
            raise RecipeError(f"--update-config {value!r}: neither a JSON object nor an existing file")
        if path.stat().st_size > MAX_RECIPE_BYTES:
            raise RecipeError(f"--update-config {path}: larger than {MAX_RECIPE_BYTES} bytes")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RecipeError(f"--update-config {path}: cannot read it as UTF-8 text: {exc}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecipeError(f"--update-config: not valid JSON: {exc}") from None
    except RecursionError:
        raise RecipeError("--update-config: JSON nested too deeply") from None
    return validate_update_config(doc)


def validate_update_config(doc: Any) -> dict:
    """Check the {"<Component>": {"MERGE": {...}, "RESET": ["/pointer", ...]}} shape."""
    if not isinstance(doc, dict):
        raise RecipeError("--update-config: expected an object of component name -> {MERGE, RESET}")
    out = {}
    for component, update in doc.items():
        where = f"--update-config {component}"
        check_component_name(str(component), where)
        if not isinstance(update, dict):
            raise RecipeError(f"{where}: expected an object with MERGE and/or RESET")
        for key in update:
            if key not in ("MERGE", "RESET"):
                hint = " (MERGE and RESET are upper case)" if key.upper() in ("MERGE", "RESET") else ""
                raise RecipeError(f"{where}: unknown key {key!r}{hint}")
        merge = update.get("MERGE", {})
        if not isinstance(merge, dict):
            raise RecipeError(f"{where}.MERGE: expected an object")
        reset = update.get("RESET", [])
        if not isinstance(reset, list):
            raise RecipeError(f"{where}.RESET: expected a list of JSON pointers such as \"/Collector\"")
        for pointer in reset:
            if not isinstance(pointer, str) or (pointer and not pointer.startswith("/")):
                raise RecipeError(f"{where}.RESET: {pointer!r} is not a JSON pointer (it must start with /)")
        out[str(component)] = {"MERGE": merge, "RESET": list(reset)}
    return out


def deep_merge(base: dict, overlay: dict) -> dict:
    """MERGE semantics: objects merge key by key, anything else (lists included) replaces."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def config_changes(old: Any, new: Any, pointer: str = "") -> list:
    """[(JSON pointer, old value, new value)] for each leaf that differs, in key order; a key present on one
    side only has None on the other (`local config update` shows what an update changed, not everything)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            escaped = str(key).replace("~", "~0").replace("/", "~1")
            out += config_changes(old.get(key), new.get(key), f"{pointer}/{escaped}")
        return out
    return [] if old == new else [(pointer or "/", old, new)]


def _pointer_parts(pointer: str) -> list:
    return [p.replace("~1", "/").replace("~0", "~") for p in pointer[1:].split("/")] if pointer else []


def reset_pointer(current: dict, default: dict, pointer: str) -> dict:
    """RESET semantics: the node goes back to its default value, or away when the default has none."""
    if pointer == "":
        return copy.deepcopy(default)
    parts = _pointer_parts(pointer)
    out = copy.deepcopy(current)
    try:
        default_value = copy.deepcopy(resolve_pointer(default, pointer))
        has_default = True
    except KeyError:
        default_value, has_default = None, False
    node = out
    for part in parts[:-1]:
        if not isinstance(node, dict):
            return out
        if part not in node or not isinstance(node[part], dict):
            if not has_default:
                return out
            node[part] = {}
        node = node[part]
    if not isinstance(node, dict):
        return out
    if has_default:
        node[parts[-1]] = default_value
    else:
        node.pop(parts[-1], None)
    return out


def apply_update(current: dict, default: dict, update: Optional[dict]) -> dict:
    """Apply one component's {MERGE, RESET}: RESET first, then MERGE, as Greengrass does."""
    result = copy.deepcopy(current)
    if not update:
        return result
    for pointer in update.get("RESET", []):
        result = reset_pointer(result, default, pointer)
    return deep_merge(result, update.get("MERGE", {}))
