"""`ggdefender build`: gdk's exact `greengrass-build/` layout, without gdk.

gdk is not installable from PyPI, so this is both gdk-config.json's custom build command (what `gdk component
build` runs) and the way CI and `ggdefender local` get a deployable component:

    greengrass-build/recipes/ggdefender.Defender.yaml      (ComponentName/Version/Publisher from gdk-config.json,
                                                            artifact URIs rewritten)
    greengrass-build/artifacts/<Name>/<Version>/
        ggdefender.zip                  the code: ggdefender/ without local/, devtools/ + requirements.txt (the
                                        pins from pyproject); every platform's manifest names it
        ggdefender-wheels-<arch>.zip    per Platform.architecture (amd64, aarch64, arm): wheels/ and
                                        requirements-cp3XX.txt per Python (wheels.py); only its own manifest
                                        names it, so a device downloads only its own

The built recipe is named as gdk names it: gdk resolves the `recipe.yaml` symlink and `gdk component publish`
then reads `greengrass-build/recipes/<the link target's name>`.

The zips are reproducible (sorted entries, fixed timestamps), so an unchanged tree gives the same digests.
Runs as `python3 components/ggdefender/devtools/build.py` too (what gdk calls) with only PyYAML installed
(and pip, which resolves the wheels; a warm cache needs neither pip's index nor the network).
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import os
import re
import shutil
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

if __package__:
    from . import wheels
else:  # run as gdk's custom build command: python3 components/ggdefender/devtools/build.py
    import wheels  # type: ignore[no-redef]

RECIPE_SIZE_LIMIT = 16000  # bytes, enforced by gdk (gdk.common.consts.MAX_RECIPE_FILE_SIZE_BYTES)
# Greengrass nucleus lite (aws-greengrass-lite 326e992b) refuses recipes beyond these; docs/deploy.md:
LITE_MAX_RECIPE_BYTES = 8196  # modules/ggl-recipe/src/recipe.c: ggl_recipe_get_from_file reads into file_mem[8196]
LITE_MAX_SUBOBJECTS = 255  # gg_sdk include/gg/object.h GG_MAX_OBJECT_SUBOBJECTS, over the whole decoded recipe
LITE_MAX_DEPTH = 15  # gg_sdk include/gg/object.h GG_MAX_OBJECT_DEPTH (`5` is depth 1, `{"a": 5}` depth 2)
LITE_RUNTIMES = ("*", "aws_nucleus_lite")  # recipe.c manifest_selection; a manifest without runtime is skipped
LITE_STEPS = ("bootstrap", "install", "startup", "run", "shutdown")  # recipe2unit looks them up in lower case
# recipe.c get_current_architecture (compared exactly: no regular expressions as on the classic nucleus)
LITE_ARCHITECTURES = ("*", "amd64", "x86", "aarch64", "arm", "riscv64")
# recipe.c lifecycle_selection: a manifest without its own Lifecycle takes the global Lifecycle's entry for
# one of its Selections (default ["all"]), and only these two
LITE_SELECTIONS = ("all", "linux")
# recipe-runner (runner.c handle_escape) reads every `{`...`}` of a script or Setenv value as a recipe variable and
# fails on any other than these (ggl-config-interpolation/src/interpolation.c ggl_substitute_escape)
_LITE_VARIABLE = re.compile(r"\{(?:[A-Za-z0-9._-]+:)?(?:kernel:rootPath|iot:thingName|work:path|artifacts:path|"
                            r"artifacts:decompressedPath|configuration:/[^{}]*)\}")
# this component's own configuration in a step (`{configuration:/a/b}`, no `Other.Component:` prefix)
_OWN_CONFIGURATION_VARIABLE = re.compile(r"\{configuration:(/[^{}]*)\}")
ARCHIVE = "ggdefender.zip"
WHEELS_ARCHIVE = "ggdefender-wheels-{}.zip"  # .format(Platform.architecture)
PACKAGE = "ggdefender"
# never shipped to devices: local/ is the offline core, devtools/ the developer tools (this build among them)
EXCLUDED_DIRS = {"local", "devtools", "fleet", "__pycache__"}
EXCLUDED_SUFFIXES = (".pyc", ".pyo")
S3_PREFIX = "s3://"
_COMPONENT_NAME = re.compile(r"^[a-zA-Z0-9-_.]+$")
_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
# Example components built beside the main one (recipe, folder holding its artifacts); they keep their own
# name, version and publisher and are written as recipes/<Name>-<Version>.yaml (docs/plugins.md).
EXTRA_COMPONENTS = [("recipes/ggdefender.ExamplePlugin.yaml", "components/example_plugin")]


class BuildError(Exception):
    pass


@dataclass(frozen=True)
class Project:
    root: Path
    name: str
    version: str
    author: str
    recipe_file: Path  # recipe.yaml / recipe.json beside gdk-config.json (may be a symlink)

    @property
    def built_recipe_name(self) -> str:
        """gdk's GDKProject takes the recipe file `.resolve()`d, so its publish reads the link target's name."""
        return self.recipe_file.resolve().name


@dataclass(frozen=True)
class BuildResult:
    recipe: Path
    artifact: Path  # the code zip
    name: str
    version: str
    wheel_artifacts: Dict[str, Path]  # Platform.architecture -> its wheels zip


def find_root(start: Optional[Path] = None) -> Path:
    """The folder holding gdk-config.json: start or a parent of it, else the source checkout of this file."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "gdk-config.json").is_file():
            return folder
    checkout = Path(__file__).resolve().parents[3]
    if (checkout / "gdk-config.json").is_file():
        return checkout
    raise BuildError(f"no gdk-config.json in {here} or its parents")


def load_project(root: Path) -> Project:
    path = root / "gdk-config.json"
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BuildError(f"{path}: {exc}") from None
    comp = cfg.get("component") if isinstance(cfg, dict) else None
    if not isinstance(comp, dict) or len(comp) != 1:
        raise BuildError(f"{path}: 'component' must hold exactly one component")
    if not isinstance(cfg.get("gdk_version"), str) or not _SEMVER.match(cfg["gdk_version"]):
        raise BuildError(f"{path}: 'gdk_version' must be a semantic version")
    (name, body), = comp.items()
    if not _COMPONENT_NAME.match(name):
        raise BuildError(f"{path}: component name {name!r} must match [a-zA-Z0-9-_.]+")
    for key in ("author", "version", "build", "publish"):
        if key not in body:
            raise BuildError(f"{path}: component {name}: '{key}' is required")
    version = body["version"]
    if version != "NEXT_PATCH" and not _SEMVER.match(str(version)):
        raise BuildError(f"{path}: version {version!r} is neither a semantic version nor NEXT_PATCH")
    recipes = [root / n for n in ("recipe.yaml", "recipe.json") if (root / n).exists()]
    if len(recipes) != 1:
        raise BuildError(f"{root}: need exactly one recipe.yaml or recipe.json beside gdk-config.json, "
                         f"found {len(recipes)}")
    return Project(root, name, str(version), str(body["author"]), recipes[0])


def pinned_requirements(root: Path) -> str:
    """requirements.txt text from pyproject's [project] dependencies; every one must be pinned with ==."""
    text = (root / "pyproject.toml").read_text()
    try:
        import tomllib

        deps = tomllib.loads(text)["project"]["dependencies"]
    except ImportError:  # Python < 3.11: the array is plain strings, a literal parse is enough
        m = re.search(r"^dependencies\s*=\s*(\[.*?\])", text, re.S | re.M)
        if not m:
            raise BuildError("pyproject.toml: no [project] dependencies")
        body = re.sub(r"#[^\n]*", "", m.group(1))
        deps = ast.literal_eval(body)
    lines = []
    for dep in deps:
        if not re.match(r"^[A-Za-z0-9._-]+==[A-Za-z0-9.+!-]+$", dep.strip()):
            raise BuildError(f"pyproject.toml: dependency {dep!r} is not pinned as name==version")
        lines.append(dep.strip())
    return "# generated by `ggdefender build` from pyproject.toml: pinned runtime dependencies\n" + \
        "\n".join(lines) + "\n"


def _package_files(package_dir: Path) -> List[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(package_dir):
        rel = Path(dirpath).relative_to(package_dir)
        dirnames[:] = sorted(d for d in dirnames
                             if d not in EXCLUDED_DIRS and not d.endswith(".egg-info") and not d.startswith("."))
        if rel.parts and rel.parts[0] in EXCLUDED_DIRS:
            continue
        for f in sorted(filenames):
            if f.endswith(EXCLUDED_SUFFIXES) or f.startswith("."):
                continue
            out.append(Path(dirpath) / f)
    return out


def _write_zip(target: Path, entries: List[tuple]) -> None:
    """A reproducible zip: sorted entries, fixed timestamps; wheels (zips already) stored, the rest deflated."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in sorted(entries):
            info = zipfile.ZipInfo(name, _FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_STORED if name.endswith(".whl") else zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    target.write_bytes(buf.getvalue())


def make_archive(root: Path, target: Path) -> None:
    package_dir = root / "components" / PACKAGE
    entries = [(f"{PACKAGE}/{p.relative_to(package_dir).as_posix()}", p.read_bytes())
               for p in _package_files(package_dir)]
    entries.append(("requirements.txt", pinned_requirements(root).encode()))
    _write_zip(target, entries)


def make_wheels_archive(resolved: Sequence[tuple], target: Path) -> None:
    """One platform's wheels zip: wheels/ (each file once) and requirements-cp3XX.txt per Python."""
    entries: Dict[str, bytes] = {}
    for found, folder in resolved:
        entries[f"requirements-{found.tag}.txt"] = found.requirements().encode()
        for wheel in found.wheels:
            entries.setdefault(f"wheels/{wheel}", (folder / wheel).read_bytes())
    _write_zip(target, list(entries.items()))


def pins(root: Path) -> List[str]:
    return [line for line in pinned_requirements(root).splitlines() if line and not line.startswith("#")]


def _ci_key(d: dict, key: str) -> Optional[str]:
    """The key of d matching key case-insensitively (gdk reads recipes that way)."""
    for k in d:
        if isinstance(k, str) and k.lower() == key.lower():
            return k
    return None


def _set(d: dict, key: str, value) -> None:
    d[_ci_key(d, key) or key] = value


def transform_recipe(recipe: dict, project: Project, built_files: List[str]) -> dict:
    """What gdk does to the recipe: name/version/publisher from the config, local artifact URIs rewritten."""
    for key in ("RecipeFormatVersion", "ComponentName", "ComponentVersion", "Manifests"):
        if _ci_key(recipe, key) is None:
            raise BuildError(f"recipe: '{key}' is required")
    _set(recipe, "ComponentName", project.name)
    _set(recipe, "ComponentVersion", project.version)
    _set(recipe, "ComponentPublisher", project.author)
    for manifest in recipe[_ci_key(recipe, "Manifests")] or []:
        arts_key = _ci_key(manifest, "Artifacts") if isinstance(manifest, dict) else None
        for art in (manifest.get(arts_key) or []) if arts_key else []:
            uri_key = _ci_key(art, "URI")
            uri = art.get(uri_key) if uri_key else None
            if not isinstance(uri, str) or not uri.startswith(S3_PREFIX):
                continue
            base = uri.rsplit("/", 1)[-1]
            if base not in built_files:
                raise BuildError(f"recipe artifact {uri!r}: no built file named {base!r} "
                                 f"(an artifact already on S3 needs `gdk component build`)")
            art[uri_key] = f"{S3_PREFIX}BUCKET_NAME/COMPONENT_NAME/COMPONENT_VERSION/{base}"
    return recipe


def lite_subobjects(obj) -> int:
    """gg_sdk's count (object.h): a list counts its length, a map twice its length, plus their contents."""
    if isinstance(obj, list):
        return len(obj) + sum(lite_subobjects(v) for v in obj)
    if isinstance(obj, dict):
        return 2 * len(obj) + sum(lite_subobjects(v) for v in obj.values())
    return 0


def _depth(obj) -> int:
    children = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, list) else None
    return 1 + max((_depth(v) for v in children), default=0) if children is not None else 1


def _lite_lifecycle(manifest: dict, recipe: dict) -> Optional[dict]:
    """The steps lite runs for this manifest (recipe.c manifest_selection), None when it finds none."""
    own = manifest.get("Lifecycle")
    if isinstance(own, dict) and own:
        return own
    chosen = None
    glob = recipe.get("Lifecycle")
    for selection in manifest.get("Selections") or ["all"]:  # the last one found wins, as in lite
        if selection in LITE_SELECTIONS and isinstance(glob, dict) and isinstance(glob.get(selection), dict):
            chosen = glob[selection]
    return chosen


def check_platform_manifests(recipe: dict, platforms: Sequence[wheels.Platform]) -> None:
    """One manifest per platform built, selected by Platform.architecture, naming the code zip and its own
    wheels zip only (a device then downloads only its platform's wheels)."""
    by_arch: Dict[str, list] = {}
    for index, manifest in enumerate(recipe[_ci_key(recipe, "Manifests")] or []):
        platform = manifest.get("Platform") if isinstance(manifest, dict) else None
        arch = platform.get("architecture") if isinstance(platform, dict) else None
        if arch not in [p.greengrass for p in platforms]:
            raise BuildError(f"recipe: Manifests[{index}] has Platform.architecture {arch!r}; the build makes "
                             f"wheels for {', '.join(p.greengrass for p in platforms)} only")
        if arch in by_arch:
            raise BuildError(f"recipe: two manifests for architecture {arch!r}")
        arts = manifest.get(_ci_key(manifest, "Artifacts") or "Artifacts") or []
        by_arch[arch] = sorted(str(a.get(_ci_key(a, "URI") or "URI", "")).rsplit("/", 1)[-1] for a in arts)
        want = sorted([ARCHIVE, WHEELS_ARCHIVE.format(arch)])
        if by_arch[arch] != want:
            raise BuildError(f"recipe: the {arch} manifest names artifacts {by_arch[arch]}, it must name exactly "
                             f"{want}")
    missing = [p.greengrass for p in platforms if p.greengrass not in by_arch]
    if missing:
        raise BuildError(f"recipe: no manifest for architecture {', '.join(missing)}")


def lite_problems(recipe: dict, size: int) -> List[str]:
    """Why nucleus lite would refuse or mis-run this recipe (a file of `size` bytes); empty when it would not."""
    problems = []
    if size > LITE_MAX_RECIPE_BYTES:
        problems.append(f"{size} bytes, over nucleus lite's {LITE_MAX_RECIPE_BYTES}")
    count = lite_subobjects(recipe)
    if count > LITE_MAX_SUBOBJECTS:
        problems.append(f"{count} sub-objects, over nucleus lite's {LITE_MAX_SUBOBJECTS}")
    if _depth(recipe) > LITE_MAX_DEPTH:
        problems.append(f"nested {_depth(recipe)} deep, over nucleus lite's {LITE_MAX_DEPTH}")
    manifests = [m for m in recipe.get(_ci_key(recipe, "Manifests") or "", None) or [] if isinstance(m, dict)]
    lite = [m for m in manifests if isinstance(m.get("Platform"), dict) and m["Platform"].get("runtime") in LITE_RUNTIMES]
    if not lite:
        problems.append(f"no manifest with Platform.runtime {' or '.join(map(repr, LITE_RUNTIMES))}: lite skips it")
    for index, manifest in enumerate(lite):
        arch = manifest["Platform"].get("architecture")
        if arch is not None and arch not in LITE_ARCHITECTURES:
            problems.append(f"manifest {index}: architecture {arch!r} is none lite reports "
                            f"({', '.join(LITE_ARCHITECTURES)}), compared exactly")
        steps = _lite_lifecycle(manifest, recipe)
        if steps is None:
            problems.append(f"manifest {index}: no Lifecycle of its own and none of its Selections in the global "
                            f"Lifecycle among {', '.join(LITE_SELECTIONS)}: lite selects no lifecycle")
            continue
        for key, step in steps.items():
            if key not in LITE_STEPS and key.lower() in LITE_STEPS:
                problems.append(f"lifecycle step {key!r}: nucleus lite runs only {key.lower()!r}")
            texts = [step] if isinstance(step, str) else []
            if isinstance(step, dict):
                texts = [step.get("Script", "")] + [str(v) for v in (step.get("Setenv") or {}).values()]
            for text in texts:
                stray = _LITE_VARIABLE.sub("", str(text))
                if "{" in stray or "}" in stray:
                    problems.append(f"lifecycle step {key!r}: a brace that is not a recipe variable (lite's "
                                    "recipe-runner reads every {...} as one)")
                for pointer in _OWN_CONFIGURATION_VARIABLE.findall(str(text)):
                    if not _has_pointer(_default_configuration(recipe), pointer):
                        problems.append(f"lifecycle step {key!r}: {{configuration:{pointer}}} names no key of "
                                        "DefaultConfiguration (lite fails the step; the classic nucleus leaves "
                                        "the text as it is)")
    return list(dict.fromkeys(problems))


def _default_configuration(recipe: dict) -> Any:
    configuration = recipe.get(_ci_key(recipe, "ComponentConfiguration") or "", None)
    if not isinstance(configuration, dict):
        return {}
    return configuration.get(_ci_key(configuration, "DefaultConfiguration") or "", None) or {}


def _has_pointer(document: Any, pointer: str) -> bool:
    """Whether the JSON pointer `pointer` (`/a/b`, as recipe variables write it) names a value in `document`."""
    node = document
    for part in pointer.lstrip("/").split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True  # manifests sharing the global Lifecycle name its problems once


def build(root: Optional[Path] = None) -> BuildResult:
    try:
        import yaml
    except ModuleNotFoundError:
        # gdk runs this with the `python3` on PATH, which may not be gdk's own interpreter
        raise BuildError(f"PyYAML is needed to build (gdk depends on it too): {sys.executable} -m pip install "
                         "PyYAML, or run `ggdefender build` from the project's venv") from None

    root = find_root(root)
    project = load_project(root)
    raw = project.recipe_file.read_bytes()
    if len(raw) > RECIPE_SIZE_LIMIT:
        raise BuildError(f"{project.recipe_file}: {len(raw)} bytes, over gdk's {RECIPE_SIZE_LIMIT}-byte limit")
    is_json = project.recipe_file.suffix == ".json"
    recipe = json.loads(raw) if is_json else yaml.safe_load(raw)
    if not isinstance(recipe, dict):
        raise BuildError(f"{project.recipe_file}: not a recipe object")

    out = root / "greengrass-build"
    if out.exists():
        shutil.rmtree(out)
    recipes_dir = out / "recipes"
    artifacts_dir = out / "artifacts" / project.name / project.version
    recipes_dir.mkdir(parents=True)
    artifacts_dir.mkdir(parents=True)
    check_platform_manifests(recipe, wheels.PLATFORMS)
    archive = artifacts_dir / ARCHIVE
    make_archive(root, archive)
    try:
        resolved = wheels.resolve_all(pins(root))
    except wheels.WheelError as exc:
        raise BuildError(str(exc)) from None
    wheel_archives = {}
    for arch, found in resolved.items():
        wheel_archives[arch] = artifacts_dir / WHEELS_ARCHIVE.format(arch)
        make_wheels_archive(found, wheel_archives[arch])

    recipe = transform_recipe(recipe, project, [ARCHIVE, *(p.name for p in wheel_archives.values())])
    text = json.dumps(recipe, indent=2) if is_json else yaml.safe_dump(recipe, sort_keys=False, width=120)
    if len(text.encode()) > RECIPE_SIZE_LIMIT:
        raise BuildError(f"built recipe is {len(text.encode())} bytes, over gdk's {RECIPE_SIZE_LIMIT}-byte limit")
    recipe_out = recipes_dir / project.built_recipe_name
    recipe_out.write_text(text)
    for problem in lite_problems(recipe, len(text.encode())):
        print(f"ggdefender build: warning: {recipe_out.name} will not run on Greengrass nucleus lite: {problem}",
              file=sys.stderr)
    for recipe_rel, source_rel in EXTRA_COMPONENTS:
        build_extra(root / recipe_rel, root / source_rel, out)
    return BuildResult(recipe_out, archive, project.name, project.version, wheel_archives)


def build_extra(recipe_path: Path, source: Path, out: Path) -> Path:
    """Copy an example component's artifacts from `source` and write its recipe into greengrass-build/."""
    import yaml

    recipe = yaml.safe_load(recipe_path.read_text())
    name, version = recipe.get("ComponentName"), str(recipe.get("ComponentVersion"))
    if not isinstance(name, str) or not _COMPONENT_NAME.match(name) or not _SEMVER.match(version):
        raise BuildError(f"{recipe_path}: ComponentName/ComponentVersion missing or invalid")
    files = sorted(p.name for p in source.iterdir() if p.is_file() and not p.name.startswith("."))
    project = Project(out.parent, name, version, str(recipe.get("ComponentPublisher", "")), recipe_path)
    recipe = transform_recipe(recipe, project, files)
    artifacts = out / "artifacts" / name / version
    artifacts.mkdir(parents=True, exist_ok=True)
    for manifest in recipe.get("Manifests") or []:
        for art in manifest.get("Artifacts") or []:
            shutil.copyfile(source / art["URI"].rsplit("/", 1)[-1], artifacts / art["URI"].rsplit("/", 1)[-1])
    target = out / "recipes" / f"{name}-{version}.yaml"
    target.write_text(yaml.safe_dump(recipe, sort_keys=False, width=120))
    return target


def register(subparsers) -> None:
    p = subparsers.add_parser("build", help="build the component into greengrass-build/ (gdk's layout)",
                              description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, help="project folder with gdk-config.json (default: found from cwd)")
    p.add_argument("--print-merge", action="store_true",
                   help="only print Name=Version for `--merge` (no build)")
    p.set_defaults(func=main)


def main(args) -> int:
    try:
        if args.print_merge:
            project = load_project(find_root(args.root))
            print(f"{project.name}={project.version}")
            return 0
        result = build(args.root)
    except BuildError as exc:
        print(f"ggdefender build: {exc}", file=sys.stderr)
        return 1
    files = [result.recipe, result.artifact, *result.wheel_artifacts.values()]
    print(f"built {result.name} {result.version}:\n" + "".join(f"  {f}\n" for f in files), end="", file=sys.stderr)
    return 0


if __name__ == "__main__":  # gdk's custom build command: python3 components/ggdefender/devtools/build.py
    parser = argparse.ArgumentParser(prog="build.py")
    sub = parser.add_subparsers()
    register(sub)
    sys.exit(main(parser.parse_args(["build", *sys.argv[1:]])))
