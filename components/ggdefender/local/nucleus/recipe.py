"""Greengrass recipes for `ggdefender local`: find, parse, pick the manifest.

Pure logic (files in, plain data out) so it is unit-tested without processes. The rules follow the recipe
reference (format 2020-01-25) and greengrass-cli's `deployment create` layout: `--recipeDir` holds recipe files
named `<Name>-<Version>.yaml|yml|json` (or any name, matched on ComponentName/ComponentVersion).
Versions are in semver.py, recipe variables in recipe_variables.py, --update-config in config_updates.py and
the start order in dependency_order.py.
"""

from __future__ import annotations

import json
import platform as _platform
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

import yaml

from ggdefender.settings import closest

from .recipe_error import RecipeError
from .recipe_variables import scalar_text
from .semver import check_version, parse_requirement, version_key

MAX_RECIPE_BYTES = 1024 * 1024  # gdk enforces 16,000 bytes for publishing; we only bound what we read
RECIPE_SUFFIXES = (".yaml", ".yml", ".json")
LIFECYCLE_STEPS = ("Setenv", "Bootstrap", "Install", "Run", "Startup", "Shutdown", "Recover")
STEP_KEYS = {"Script", "RequiresPrivilege", "Skipif", "Timeout", "Setenv"}
# The recipe reference's keys. Unknown ones are errors, as on the classic nucleus (its recipe reader, Jackson in
# aws-greengrass-component-common, fails on unknown properties; gdk's schema refuses unknown top-level keys):
# a misspelled `Lifecyle:` would otherwise deploy a component with nothing to run.
RECIPE_KEYS = ("RecipeFormatVersion", "ComponentName", "ComponentVersion", "ComponentDescription",
               "ComponentPublisher", "ComponentConfiguration", "ComponentDependencies", "ComponentType",
               "ComponentSource", "Manifests", "Lifecycle")
MANIFEST_KEYS = ("Name", "Platform", "Lifecycle", "Selections", "Artifacts")
DEFAULT_TIMEOUTS = {"Bootstrap": 120.0, "Install": 120.0, "Startup": 120.0, "Shutdown": 15.0, "Recover": 60.0,
                    "Run": None}
_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


@dataclass(frozen=True)
class Step:
    """One lifecycle step, normalized from the string or object form."""

    name: str
    script: str
    requires_privilege: bool = False
    skipif: Optional[tuple] = None  # ("onpath"|"exists", argument)
    timeout: Optional[float] = None
    setenv: dict = field(default_factory=dict)


@dataclass
class Recipe:
    name: str
    version: str
    path: Path
    description: str = ""
    publisher: str = ""
    default_configuration: dict = field(default_factory=dict)
    dependencies: dict = field(default_factory=dict)  # name -> {"VersionRequirement": str, "DependencyType": str}
    lifecycle: dict = field(default_factory=dict)  # step name -> Step; "Setenv" -> dict
    artifacts: list = field(default_factory=list)  # [{"URI", "Unarchive", "Permission"}]
    raw: dict = field(default_factory=dict)

    @property
    def setenv(self) -> dict:
        return self.lifecycle.get("Setenv", {})

    def step(self, name: str) -> Optional[Step]:
        return self.lifecycle.get(name)


# -- locating and parsing -----------------------------------------------------------------------------

def parse_merge(spec: str) -> tuple:
    """`Name=Version` from --merge into (name, version)."""
    name, sep, version = spec.partition("=")
    name, version = name.strip(), version.strip()
    if not sep or not name or not version:
        raise RecipeError(f"--merge {spec!r}: expected NAME=VERSION, e.g. ggdefender.Defender=1.0.0")
    check_component_name(name, f"--merge {spec!r}")
    check_version(version, f"--merge {spec!r}")
    return name, version


def _read_document(path: Path) -> dict:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read: {exc.strerror}") from None
    if size > MAX_RECIPE_BYTES:
        raise RecipeError(f"{path}: {size} bytes is larger than the {MAX_RECIPE_BYTES}-byte limit for a recipe")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        if path.suffix.lower() == ".json":
            doc = json.loads(text)
        else:
            doc = yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise RecipeError(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: {exc}") from None
    if not isinstance(doc, dict):
        raise RecipeError(f"{path}: a recipe must be an object, got {type(doc).__name__}")
    return doc


def find_recipe(recipe_dir: Path | str, name: str, version: str) -> Path:
    """The recipe file for name=version in a greengrass-cli --recipeDir."""
    recipe_dir = Path(recipe_dir)
    if not recipe_dir.is_dir():
        raise RecipeError(f"--recipeDir {recipe_dir}: not a directory")
    for suffix in RECIPE_SUFFIXES:
        candidate = recipe_dir / f"{name}-{version}{suffix}"
        if candidate.is_file():
            return candidate
    seen = []
    for candidate in sorted(recipe_dir.iterdir()):
        if not candidate.is_file() or candidate.suffix.lower() not in RECIPE_SUFFIXES:
            continue
        try:
            doc = _read_document(candidate)
        except RecipeError:
            continue  # a broken unrelated file must not hide the one we want
        cname, cversion = _ci_get(doc, "ComponentName"), _ci_get(doc, "ComponentVersion")
        seen.append(f"{cname}={cversion}")
        if cname == name and str(cversion) == version:
            return candidate
    found = ", ".join(seen) if seen else "no recipes"
    raise RecipeError(f"no recipe for {name}={version} in {recipe_dir} (found: {found})")


def available_versions(recipe_dir: Path | str, name: str) -> list:
    """Versions of `name` present in recipe_dir, for dependency resolution."""
    versions = []
    for candidate in sorted(Path(recipe_dir).iterdir()):
        if candidate.is_file() and candidate.suffix.lower() in RECIPE_SUFFIXES:
            try:
                doc = _read_document(candidate)
            except RecipeError:
                continue
            if _ci_get(doc, "ComponentName") == name and isinstance(_ci_get(doc, "ComponentVersion"), str):
                versions.append(_ci_get(doc, "ComponentVersion"))
    return sorted(set(versions), key=version_key)


def load_recipe(path: Path | str, *, platform: Optional[dict] = None) -> Recipe:
    """Parse and validate a recipe file; picks the first manifest matching this platform."""
    path = Path(path)
    doc = _read_document(path)
    return parse_recipe(doc, path, platform=platform)


def parse_recipe(doc: dict, path: Path | str = "<recipe>", *, platform: Optional[dict] = None) -> Recipe:
    where = str(path)
    _check_keys(doc, RECIPE_KEYS, where)
    fmt = _ci_get(doc, "RecipeFormatVersion")
    if fmt is None:
        raise RecipeError(f"{where}: RecipeFormatVersion is required (2020-01-25)")
    if str(fmt) != "2020-01-25":
        raise RecipeError(f"{where}: RecipeFormatVersion {fmt!r} is not supported (expected 2020-01-25)")
    name = _ci_get(doc, "ComponentName")
    version = _ci_get(doc, "ComponentVersion")
    if not isinstance(name, str):
        raise RecipeError(f"{where}: ComponentName is required and must be a string")
    check_component_name(name, where)
    if not isinstance(version, str):
        raise RecipeError(f"{where}: ComponentVersion is required and must be a string like 1.0.0 (quote it in YAML)")
    check_version(version, where)

    config_section = _ci_get(doc, "ComponentConfiguration") or {}
    if not isinstance(config_section, dict):
        raise RecipeError(f"{where}: ComponentConfiguration must be an object")
    default_config = _ci_get(config_section, "DefaultConfiguration")
    if default_config is None:
        default_config = {}
    if not isinstance(default_config, dict):
        raise RecipeError(f"{where}: ComponentConfiguration.DefaultConfiguration must be an object")

    deps = {}
    raw_deps = _ci_get(doc, "ComponentDependencies") or {}
    if not isinstance(raw_deps, dict):
        raise RecipeError(f"{where}: ComponentDependencies must be an object of component name -> requirement")
    for dep_name, spec in raw_deps.items():
        spec = spec or {}
        if not isinstance(spec, dict):
            raise RecipeError(f"{where}: ComponentDependencies.{dep_name} must be an object")
        requirement = str(_ci_get(spec, "VersionRequirement") or ">=0.0.0")
        dep_type = str(_ci_get(spec, "DependencyType") or "HARD").upper()
        if dep_type not in ("HARD", "SOFT"):
            raise RecipeError(f"{where}: ComponentDependencies.{dep_name}.DependencyType must be HARD or SOFT")
        parse_requirement(requirement, f"{where}: ComponentDependencies.{dep_name}.VersionRequirement")
        deps[str(dep_name)] = {"VersionRequirement": requirement, "DependencyType": dep_type}

    manifests = _ci_get(doc, "Manifests")
    if not isinstance(manifests, list) or not manifests:
        raise RecipeError(f"{where}: Manifests is required and must be a non-empty list")
    platform = platform or current_platform()
    manifest = select_manifest(manifests, platform, where)
    _check_keys(manifest, MANIFEST_KEYS, f"{where}: Manifests[{manifests.index(manifest)}]")
    global_lifecycle = _ci_get(doc, "Lifecycle")
    lifecycle_raw = _ci_get(manifest, "Lifecycle")
    if lifecycle_raw is None and global_lifecycle is not None:
        selections = _ci_get(manifest, "Selections") or ["all"]
        if not isinstance(selections, list) or not all(isinstance(s, str) for s in selections):
            raise RecipeError(f"{where}: manifest Selections must be a list of strings")
        lifecycle_raw = apply_selections(global_lifecycle, selections)
    lifecycle = parse_lifecycle(lifecycle_raw or {}, where)
    artifacts = parse_artifacts(_ci_get(manifest, "Artifacts") or [], where)
    return Recipe(
        name=name, version=version, path=Path(path),
        description=str(_ci_get(doc, "ComponentDescription") or ""),
        publisher=str(_ci_get(doc, "ComponentPublisher") or ""),
        default_configuration=default_config, dependencies=deps, lifecycle=lifecycle,
        artifacts=artifacts, raw=doc,
    )


def current_platform() -> dict:
    machine = _platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "aarch64", "arm64": "aarch64",
            "i386": "x86", "i686": "x86", "x86": "x86"}.get(machine, "arm" if machine.startswith("arm") else machine)
    system = _platform.system().lower()
    return {"os": system, "architecture": arch}


def _platform_value_matches(pattern: Any, actual: Optional[str]) -> bool:
    """As the classic nucleus matches (aws-greengrass-component-common PlatformHelper.isAttributeSatisfied):
    `*` matches anything, even an attribute this platform lacks (so `runtime: "*"`, which nucleus lite requires,
    selects the manifest here too); any other value needs the attribute, so a manifest only for
    `runtime: aws_nucleus_lite` is skipped, as on the classic nucleus."""
    pattern = str(pattern)
    if pattern == "*":
        return True
    if actual is None:
        return False
    if len(pattern) >= 2 and pattern.startswith("/") and pattern.endswith("/"):
        try:
            return re.fullmatch(pattern[1:-1], actual) is not None
        except re.error:
            return False
    return pattern == actual


def select_manifest(manifests: list, platform: dict, where: str = "<recipe>") -> dict:
    """The first manifest whose Platform matches (a manifest without Platform matches everything)."""
    offered = []
    for index, manifest in enumerate(manifests):
        if not isinstance(manifest, dict):
            raise RecipeError(f"{where}: Manifests[{index}] must be an object")
        plat = _ci_get(manifest, "Platform")
        if plat is None:
            return manifest
        if not isinstance(plat, dict):
            raise RecipeError(f"{where}: Manifests[{index}].Platform must be an object")
        offered.append(json.dumps(plat, sort_keys=True))
        if all(_platform_value_matches(v, platform.get(str(k).lower() if str(k).lower() in ("os", "architecture")
                                                                  else str(k))) for k, v in plat.items()):
            return manifest
    raise RecipeError(f"{where}: no manifest matches this platform {json.dumps(platform, sort_keys=True)} "
                      f"(manifests offer: {'; '.join(offered)})")


def apply_selections(node: Any, selections: list) -> Any:
    """Resolve lower-case selection keys (e.g. `all`, `linux`) in a global Lifecycle at any level."""
    if not isinstance(node, dict):
        return node
    for key in selections:
        if key in node:
            return apply_selections(node[key], selections)
    return {k: apply_selections(v, selections) for k, v in node.items()}


def _parse_setenv(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RecipeError(f"{where}: Setenv must be an object of NAME: value")
    out = {}
    for key, val in value.items():
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise RecipeError(f"{where}: Setenv name {key!r} is not a valid environment variable name")
        out[key] = "" if val is None else (json.dumps(val) if isinstance(val, (dict, list)) else scalar_text(val))
    return out


def parse_lifecycle(raw: Any, where: str = "<recipe>") -> dict:
    if not isinstance(raw, dict):
        raise RecipeError(f"{where}: Lifecycle must be an object")
    out: dict = {}
    for key, value in raw.items():
        step_name = next((s for s in LIFECYCLE_STEPS if s.lower() == str(key).lower()), None)
        if step_name is None:
            close = closest(key, LIFECYCLE_STEPS)
            hint = f"did you mean {close}? " if close else ""
            raise RecipeError(f"{where}: unknown lifecycle step {key!r} ({hint}expected one of "
                              f"{', '.join(LIFECYCLE_STEPS)})")
        if step_name == "Setenv":
            out["Setenv"] = _parse_setenv(value, f"{where}: Lifecycle.Setenv")
            continue
        out[step_name] = parse_step(step_name, value, f"{where}: Lifecycle.{step_name}")
    if "Run" in out and "Startup" in out:
        raise RecipeError(f"{where}: Lifecycle has both Run and Startup; they are mutually exclusive")
    return out


def parse_step(name: str, value: Any, where: str) -> Step:
    if isinstance(value, str):
        return Step(name=name, script=value, timeout=DEFAULT_TIMEOUTS.get(name))
    if not isinstance(value, dict):
        raise RecipeError(f"{where}: must be a script string or an object with Script")
    _check_keys(value, sorted(STEP_KEYS), where)
    script = _ci_get(value, "Script")
    if not isinstance(script, str) or not script.strip():
        raise RecipeError(f"{where}.Script: required and must be a non-empty string")
    privilege = _ci_get(value, "RequiresPrivilege", False)
    if isinstance(privilege, str) and privilege.lower() in ("true", "false"):
        privilege = privilege.lower() == "true"
    if not isinstance(privilege, bool):
        raise RecipeError(f"{where}.RequiresPrivilege: expected true or false, got {privilege!r}")
    skipif = _ci_get(value, "Skipif")
    parsed_skip = None
    if skipif is not None:
        kind, _, arg = str(skipif).strip().partition(" ")
        if kind.lower() not in ("onpath", "exists") or not arg.strip():
            raise RecipeError(f"{where}.Skipif: expected 'onpath <runnable>' or 'exists <file>', got {skipif!r}")
        parsed_skip = (kind.lower(), arg.strip())
    timeout = _ci_get(value, "Timeout")
    if timeout is None:
        timeout = DEFAULT_TIMEOUTS.get(name)
    else:
        try:
            timeout = float(timeout)
        except (TypeError, ValueError):
            raise RecipeError(f"{where}.Timeout: expected seconds, got {timeout!r}") from None
        if not timeout > 0:
            raise RecipeError(f"{where}.Timeout: must be positive, got {timeout!r}")
    return Step(name=name, script=script, requires_privilege=privilege, skipif=parsed_skip, timeout=timeout,
                setenv=_parse_setenv(_ci_get(value, "Setenv"), f"{where}.Setenv"))


def parse_artifacts(raw: Any, where: str) -> list:
    if not isinstance(raw, list):
        raise RecipeError(f"{where}: Artifacts must be a list")
    out, names = [], set()
    for index, art in enumerate(raw):
        if not isinstance(art, dict) or not isinstance(_ci_get(art, "URI"), str):
            raise RecipeError(f"{where}: Artifacts[{index}] must be an object with a URI string")
        uri = _ci_get(art, "URI")
        filename = artifact_filename(uri)
        if not filename:
            raise RecipeError(f"{where}: Artifacts[{index}].URI {uri!r} has no file name")
        if filename in names:
            raise RecipeError(f"{where}: artifact file name {filename!r} appears twice in one manifest")
        names.add(filename)
        unarchive = str(_ci_get(art, "Unarchive") or "NONE").upper()
        if unarchive not in ("NONE", "ZIP"):
            raise RecipeError(f"{where}: Artifacts[{index}].Unarchive must be NONE or ZIP, got {unarchive!r}")
        permission = _ci_get(art, "Permission") or {}
        if not isinstance(permission, dict):
            raise RecipeError(f"{where}: Artifacts[{index}].Permission must be an object")
        perm = {}
        for key, default in (("Read", "OWNER"), ("Execute", "NONE")):
            val = str(_ci_get(permission, key) or default).upper()
            if val not in ("NONE", "OWNER", "ALL"):
                raise RecipeError(f"{where}: Artifacts[{index}].Permission.{key} must be NONE, OWNER or ALL")
            perm[key] = val
        out.append({"URI": uri, "filename": filename, "Unarchive": unarchive, "Permission": perm})
    return out


def artifact_filename(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1] if "/" in uri else uri.split(":", 1)[-1]


# -- helpers ------------------------------------------------------------------------------------------

def _ci_get(mapping: Any, key: str, default: Any = None) -> Any:
    """Recipe keys are matched case-insensitively, as gdk's validator and the nucleus do."""
    if not isinstance(mapping, dict):
        return default
    if key in mapping:
        return mapping[key]
    lowered = key.lower()
    for k, v in mapping.items():
        if isinstance(k, str) and k.lower() == lowered:
            return v
    return default


def _check_keys(mapping: dict, known: Iterable[str], where: str) -> None:
    """RecipeError naming each key not in `known` (matched case-insensitively, as `_ci_get` reads them) with
    the closest known key."""
    known = tuple(known)
    lowered = {k.lower() for k in known}
    unknown = [k for k in mapping if str(k).lower() not in lowered]
    if unknown:
        named = []
        for key in unknown:
            close = closest(key, known)
            named.append(f"{key}" + (f" (did you mean {close}?)" if close else ""))
        raise RecipeError(f"{where}: unknown key(s) {', '.join(named)} (expected {', '.join(known)})")


def check_component_name(name: str, where: str) -> None:
    """RecipeError unless name is a usable component name (it becomes a folder and a file name)."""
    if not _NAME_RE.fullmatch(name):
        raise RecipeError(f"{where}: component name {name!r} may use only letters, digits, '.', '_' and '-'")
    if not name.strip("."):  # "." and ".." would make <root>/work/<Name> and logs/<Name>.log point elsewhere
        raise RecipeError(f"{where}: component name {name!r} must not consist of dots only")
