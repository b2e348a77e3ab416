"""`ggdefender fleet package`: the fleet tier's two deployable zips, reproducibly (docs/fleet.md, "Deploy").

1. The Managed Service for Apache Flink zip (one for both applications): a main file per job at the top (each
   runs `python -m ggdefender.fleet.<job>`), the security profile (checked by detect's parser), the
   `ggdefender` modules the jobs import and the pure-Python distributions they need that the MSF runtime
   lacks under `python/` (the `pyFiles` run option), and the Kinesis connector jar under `lib/` (the
   `jarfile` run option). cloudformation.yaml names these paths; tests/unit/fleet/test_cloudformation.py
   keeps the two equal.
2. The AWS Lambda zip of the Act handler (`ggdefender.fleet.act.lambda_handler`): the `ggdefender` modules it
   imports at the zip's root; boto3 is in the Lambda runtime.

What goes in is read from the code itself. `ggdefender` modules: those the entry modules' imports reach,
transitively (module level or in a function, not under `if TYPE_CHECKING:`), so nothing of the device runtime
that the jobs do not import is shipped. Third-party modules: those importing the entries runs (module-level
imports not guarded by `except ImportError`), plus those in FLINK_LAZY / LAMBDA_LAZY, which the code imports
inside functions and uses; each as its installed distribution plus its requirements, minus what the runtime
provides (apache-flink and all it requires on MSF; boto3 and its requirements on Lambda). The device
runtime's lazily imported ones (awsiot, psutil, cbor2) are left out and named in the command's output.

Reproducible: entries sorted, one fixed timestamp and mode, no byte code, so the same sources give the same
bytes (and the same S3 object, which is what makes CloudFormation update only what changed).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.metadata as md
import json
import os
import stat
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Dict, Iterable, List, NamedTuple, Optional, Set, Tuple, Union

import ggdefender

CONNECTOR_MAVEN = "org.apache.flink:flink-sql-connector-kinesis:5.0.0-1.20"
CONNECTOR_URL = ("https://repo1.maven.org/maven2/org/apache/flink/flink-sql-connector-kinesis/5.0.0-1.20/"
                 "flink-sql-connector-kinesis-5.0.0-1.20.jar")
# packages of the connector's classes: the new KinesisStreamsSource/Sink and the legacy FlinkKinesisConsumer
CONNECTOR_PACKAGES = ("org/apache/flink/connector/kinesis/", "org/apache/flink/streaming/connectors/kinesis/")

FLINK_ZIP = "ggdefender-fleet-flink.zip"
LAMBDA_ZIP = "ggdefender-fleet-act.zip"
# kinesis.analytics.flink.run.options of the two applications (cloudformation.yaml); paths inside FLINK_ZIP
STREAM_MAIN = "fleet_stream.py"
BASELINES_MAIN = "fleet_baselines.py"
PY_FILES = "python/"
JARFILE = "lib/flink-sql-connector-kinesis-5.0.0-1.20.jar"
PROFILE = "profile.json"  # the baselines job's Profile property: a path relative to the zip's top
JOBS = {STREAM_MAIN: "ggdefender.fleet.stream_job", BASELINES_MAIN: "ggdefender.fleet.baselines_job"}
LAMBDA_ENTRY = "ggdefender.fleet.act"
FLINK_PROVIDED = "apache-flink"  # MSF's FLINK-1_20 runtime has PyFlink and what it requires installed
LAMBDA_PROVIDED = "boto3"  # the python3.11 Lambda runtime has boto3 and what it requires
# Third-party modules imported inside functions are vendored only when the zip's code uses them; the others
# are the device runtime's (awsiot, psutil: IPC and collection) and are left out, and named in the summary.
# cbor2 (CBOR reports) is binary-only: the fleet tier on MSF reads JSON reports (the rule selects .../json).
FLINK_LAZY = ("ddsketch", "boto3")  # sketches; the stream job reads ProfileS3 with boto3, which MSF does not promise
LAMBDA_LAZY = ("jsonschema",)  # the remediation document's schema check before CreateJob
# The Lambda function (cloudformation.yaml: python3.11, x86_64, Amazon Linux 2 with glibc 2.26) can load a
# binary wheel built for CPython 3.11 on x86_64 with glibc up to 2.26 (jsonschema's rpds-py is one). The Flink
# zip takes pure Python only (MSF does not document its workers' platform).
LAMBDA_PYTHON = "cp311"
LAMBDA_GLIBC_MAX = 26

ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can hold: the same for every build
FILE_MODE = (stat.S_IFREG | 0o644) << 16
MAX_JAR_BYTES = 512 * 1024 * 1024
BINARY_SUFFIXES = (".so", ".pyd", ".dylib", ".dll")

MAIN_TEMPLATE = '''"""Managed Service for Apache Flink runs this file (run option `python`): {module} as __main__."""
import os
import runpy
import sys

# the client side builds the job graph here; PyFlink's workers get python/ from the pyFiles run option
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "python"))
os.chdir(HERE)  # relative paths in the application properties (profile.json) name files of this zip
runpy.run_module("{module}", run_name="__main__", alter_sys=True)
'''


class PackageError(Exception):
    """A zip cannot be made; the message names the problem."""


# -- which modules --------------------------------------------------------------------------------------------
def _source_root() -> Path:
    return Path(ggdefender.__file__).resolve().parent.parent


def module_file(name: str, root: Optional[Path] = None) -> Optional[Path]:
    """The source file of `ggdefender...` module `name` (a package's __init__.py), None when there is none."""
    base = (root or _source_root()).joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    if handler.type is None:
        return True
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError", "Exception",
                                                    "BaseException") for n in names)


ImportNode = Union[ast.Import, ast.ImportFrom]


def _imports(tree: ast.AST, module_level_only: bool) -> Iterable[Tuple[ImportNode, bool]]:
    """(import statement, optional) for every import that can run: not under `if TYPE_CHECKING:`; optional
    when a `try` around it catches ImportError; with `module_level_only`, not in a function (what importing
    the module runs)."""
    def walk(node: ast.AST, optional: bool) -> Iterable[Tuple[ImportNode, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                yield from walk(ast.Module(body=child.orelse, type_ignores=[]), optional)
                continue
            if module_level_only and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, optional
            elif isinstance(child, ast.Try):
                guarded = optional or any(_catches_import_error(h) for h in child.handlers)
                yield from walk(ast.Module(body=child.body, type_ignores=[]), guarded)
                for handler in child.handlers:
                    yield from walk(handler, optional)
                yield from walk(ast.Module(body=child.orelse + child.finalbody, type_ignores=[]), optional)
            else:
                yield from walk(child, optional)
    yield from walk(tree, False)


def module_closure(entries: Iterable[str], root: Optional[Path] = None, module_level_only: bool = False,
                   with_optional: bool = False) -> Tuple[List[str], Dict[str, str]]:
    """(the ggdefender modules `entries` import, transitively, sorted; {third-party top-level name: first
    importer}, without the optional ones unless `with_optional`). PackageError when an entry or an imported
    ggdefender module does not exist."""
    root = root or _source_root()
    seen: Set[str] = set()
    third: Dict[str, str] = {}
    todo = list(entries)
    for entry in todo:
        if module_file(entry, root) is None:
            raise PackageError(f"{entry} does not exist in {root}: this build cannot package it")
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = module_file(name, root)
        if path is None:
            raise PackageError(f"{name} is imported but there is no {name.replace('.', '/')}.py in {root}")
        seen.add(name)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # importing a.b.c runs a and a.b
        package = name if path.name == "__init__.py" else ".".join(parts[:-1])
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node, optional in _imports(tree, module_level_only):
            targets: List[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    base_parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(base_parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                targets = [base] + [f"{base}.{a.name}" for a in node.names if a.name != "*"]
            for target in targets:
                top = target.split(".")[0]
                if top == "ggdefender":
                    if module_file(target, root) is not None:
                        todo.append(target)
                    elif target == targets[0]:  # the module itself must exist; `from m import attr` need not
                        raise PackageError(f"{name} imports {target}, which does not exist")
                elif top and top not in sys.stdlib_module_names and top != "__future__" and (with_optional or not optional):
                    third.setdefault(top, name)
    return sorted(seen), third


# -- which distributions --------------------------------------------------------------------------------------
def _requirements(dist: md.Distribution) -> List[str]:
    from packaging.requirements import Requirement

    out = []
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            out.append(req.name)
    return out


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def distribution_closure(names: Iterable[str]) -> Set[str]:
    """The normalised names of distributions `names` and everything they require (installed ones)."""
    seen: Set[str] = set()
    todo = [_norm(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue  # a requirement not installed here is not ours to vendor either
        seen.add(name)
        todo.extend(_norm(r) for r in _requirements(dist))
    return seen


def distributions_for(third: Dict[str, str], provided: str) -> List[str]:
    """The distributions to vendor for third-party imports `third`, with their requirements, minus the
    runtime's (`provided` and what it requires). PackageError for an import nothing installed provides."""
    by_top = md.packages_distributions()
    have = distribution_closure([provided])
    wanted: List[str] = []
    for top, importer in sorted(third.items()):
        dists = by_top.get(top)
        if not dists:
            raise PackageError(f"{importer} imports {top}, which is not installed (pip install -e '.[fleet]')")
        wanted.extend(dists)
    return sorted(d for d in distribution_closure(wanted) if d not in have)


def lambda_loads(tag: str) -> bool:
    """Whether the Lambda function's runtime loads a wheel with this tag (`cp311-cp311-manylinux_2_17_x86_64`)."""
    parts = tag.split("-")
    if len(parts) != 3:
        return False
    python, abi, platform = parts
    if python != LAMBDA_PYTHON and not (abi == "abi3" and python.startswith("cp3")):
        return False
    for plat in platform.split("."):
        if plat in ("manylinux1_x86_64", "manylinux2010_x86_64", "manylinux2014_x86_64"):
            return True
        if plat.startswith("manylinux_2_") and plat.endswith("_x86_64"):
            minor = plat[len("manylinux_2_"):-len("_x86_64")]
            if minor.isdigit() and int(minor) <= LAMBDA_GLIBC_MAX:
                return True
    return False


def _binary_fits(dist: md.Distribution, lambda_target: bool) -> bool:
    if not lambda_target:
        return False
    wheel = dist.read_text("WHEEL") or ""
    return any(lambda_loads(line.split(":", 1)[1].strip()) for line in wheel.splitlines() if line.startswith("Tag:"))


def _dist_files(name: str, lambda_target: bool = False) -> List[Tuple[str, Path]]:
    """(path in a site directory, file) of one distribution's importable files and licence/metadata."""
    dist = md.distribution(name)
    binary_ok = _binary_fits(dist, lambda_target)
    out = []
    for f in dist.files or []:
        rel = f.as_posix()
        if rel.startswith("..") or "__pycache__" in f.parts or rel.endswith((".pyc", ".pyo")):
            continue
        info = f.parts[0].endswith(".dist-info")
        if info and not (f.name == "METADATA" or "LICEN" in f.name.upper() or "NOTICE" in f.name.upper()
                         or "licenses" in f.parts):
            continue
        if rel.endswith(BINARY_SUFFIXES) and not binary_ok:
            where = (f"a wheel for CPython 3.11 on x86_64 with glibc <= 2.{LAMBDA_GLIBC_MAX} (the function's "
                     f"runtime): run the command with such an installation" if lambda_target else
                     "the Flink zip takes pure Python only: use a pure-Python alternative")
            raise PackageError(f"{dist.metadata['Name']} has a binary extension ({rel}) that is not {where}")
        out.append((rel, Path(str(dist.locate_file(f)))))
    return out


class Plan(NamedTuple):
    modules: List[str]  # ggdefender modules (every import, transitively: small, and a lazy path never fails)
    distributions: List[str]  # third-party distributions to vendor
    left_out: Dict[str, str]  # third-party module imported only lazily by device code -> its importer


def plan(entries: Iterable[str], lazy: Iterable[str], provided: str) -> Plan:
    """What a zip for `entries` holds: third-party modules that importing the entries runs, plus those in
    `lazy` that the code imports inside functions; `provided`'s distributions come with the runtime."""
    entries = list(entries)
    root = _source_root()
    modules, every = module_closure(entries, root)
    _, eager = module_closure(entries, root, module_level_only=True)
    _, anywhere = module_closure(entries, root, with_optional=True)  # `lazy` ones may be guarded imports
    wanted = {top: who for top, who in anywhere.items() if top in eager or top in lazy}
    have = distribution_closure([provided])
    by_top = md.packages_distributions()
    left_out = {top: who for top, who in every.items()
                if top not in wanted and not any(_norm(d) in have for d in by_top.get(top, []))}
    return Plan(modules, distributions_for(wanted, provided), left_out)


# -- writing --------------------------------------------------------------------------------------------------
def _package_files(modules: Iterable[str], root: Path) -> List[Tuple[str, Path]]:
    """(arcname, file) for `modules` plus the data files (json, yaml) of their packages' directories."""
    out: Dict[str, Path] = {}
    for name in modules:
        path = module_file(name, root)
        assert path is not None
        out[path.relative_to(root).as_posix()] = path
        if path.name == "__init__.py":
            for data in sorted(path.parent.iterdir()):
                if data.is_file() and data.suffix in (".json", ".yaml"):
                    out[data.relative_to(root).as_posix()] = data
    return sorted(out.items())


def write_zip(path: Path, entries: Iterable[Tuple[str, bytes]]) -> None:
    """A reproducible zip: sorted names, one timestamp and mode; written beside `path`, then renamed."""
    items = sorted(entries)
    names = [n for n, _ in items]
    if len(set(names)) != len(names):
        raise PackageError(f"{path.name}: a name occurs twice")
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w") as zf:
            for name, data in items:
                info = zipfile.ZipInfo(name, ZIP_TIME)
                info.external_attr = FILE_MODE
                info.create_system = 3  # unix, whatever builds it
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, data, compresslevel=9)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def check_connector_jar(jar: Path) -> None:
    """The jar must be the Kinesis connector: PackageError naming its Maven coordinates otherwise."""
    where = f"get {CONNECTOR_MAVEN} ({CONNECTOR_URL})"
    if not jar.is_file():
        raise PackageError(f"--kinesis-connector-jar {jar}: no such file; {where}")
    if jar.stat().st_size > MAX_JAR_BYTES or not zipfile.is_zipfile(jar):
        raise PackageError(f"--kinesis-connector-jar {jar}: not a jar file; {where}")
    with zipfile.ZipFile(jar) as zf:
        if not any(n.startswith(CONNECTOR_PACKAGES) for n in zf.namelist()):
            raise PackageError(f"--kinesis-connector-jar {jar}: has no Kinesis connector classes "
                               f"({', '.join(CONNECTOR_PACKAGES)}); {where}")


def check_profile(profile: Path) -> bytes:
    """The profile's bytes once detect's parser (the one the jobs use) accepts it; PackageError otherwise."""
    from ggdefender.detect.profile import ProfileError, read_profile_file

    try:
        read_profile_file(str(profile))
    except (ProfileError, OSError, ValueError) as exc:
        raise PackageError(f"--profile {profile}: {exc}") from None
    return profile.read_bytes()


def flink_entries(jar: Path, profile: Path, jobs: Optional[Dict[str, str]] = None
                  ) -> Tuple[List[Tuple[str, bytes]], Plan]:
    jobs = JOBS if jobs is None else jobs
    check_connector_jar(jar)
    profile_bytes = check_profile(profile)
    root = _source_root()
    made = plan(jobs.values(), FLINK_LAZY, FLINK_PROVIDED)
    entries = [(main, MAIN_TEMPLATE.format(module=module).encode()) for main, module in jobs.items()]
    entries += [(PY_FILES + arc, f.read_bytes()) for arc, f in _package_files(made.modules, root)]
    for dist in made.distributions:
        entries += [(PY_FILES + arc, f.read_bytes()) for arc, f in _dist_files(dist)]
    entries.append((JARFILE, jar.read_bytes()))
    entries.append((PROFILE, profile_bytes))
    return entries, made


def lambda_entries() -> Tuple[List[Tuple[str, bytes]], Plan]:
    root = _source_root()
    made = plan([LAMBDA_ENTRY], LAMBDA_LAZY, LAMBDA_PROVIDED)
    entries = [(arc, f.read_bytes()) for arc, f in _package_files(made.modules, root)]
    for dist in made.distributions:
        entries += [(arc, f.read_bytes()) for arc, f in _dist_files(dist, lambda_target=True)]
    return entries, made


def build(jar: Path, profile: Path, out: Path, jobs: Optional[Dict[str, str]] = None) -> Dict[str, dict]:
    """Write both zips into `out`; {zip name: {path, bytes, sha256, files}}."""
    out.mkdir(parents=True, exist_ok=True)
    made: Dict[str, dict] = {}
    for name, (entries, what) in ((FLINK_ZIP, flink_entries(jar, profile, jobs)), (LAMBDA_ZIP, lambda_entries())):
        path = out / name
        write_zip(path, entries)
        data = path.read_bytes()
        made[name] = {"path": str(path), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                      "files": len(entries), "distributions": what.distributions,
                      "leftOut": {top: f"imported by {who}, reached only through imports inside functions: device "
                                       f"code the fleet does not run" for top, who in what.left_out.items()}}
    return made


# -- the command ----------------------------------------------------------------------------------------------
def register(fleet: argparse._SubParsersAction) -> None:
    p = fleet.add_parser("package", help="the Managed Service for Apache Flink zip and the Act Lambda zip")
    p.add_argument("--kinesis-connector-jar", required=True, type=Path,
                   help=f"the Flink Kinesis connector jar ({CONNECTOR_MAVEN}, from Maven Central)")
    p.add_argument("--profile", required=True, type=Path,
                   help="the CreateSecurityProfile JSON the jobs evaluate (the same one you upload as ProfileKey)")
    p.add_argument("--out", required=True, type=Path, help="the directory to write the two zips into")
    p.set_defaults(func=run_package)


def run_package(args: argparse.Namespace) -> int:
    try:
        made = build(args.kinesis_connector_jar, args.profile, args.out)
    except (PackageError, OSError) as exc:
        print(f"ggdefender fleet package: {exc}", file=sys.stderr)
        return 2
    json.dump(made, sys.stdout, indent=1)
    print()
    return 0
