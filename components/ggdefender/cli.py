"""The `ggdefender` command: one entry point, one subcommand module per part.

Each part owns its subcommand in its own package and exposes ``register(subparsers)``;
modules are imported lazily so `ggdefender collect` never pays for the local core's imports.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module exposing register(subparsers) that sets `func` on its parser
SUBCOMMANDS = {
    "collect": "ggdefender.collector.cli",
    "run": "ggdefender.supervisor",
    "part": "ggdefender.supervisor",
    "local": "ggdefender.local.cli",
    "detect": "ggdefender.detect.cli",
    "build": "ggdefender.build",
}


def optional_module(name: str):
    """Import a part that may not be in this build (e.g. `local` is not shipped in the artifact); None when
    that part is absent. A module missing *inside* a present part is a real error and is raised."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name == name or name.startswith(exc.name + ".")):
            return None
        raise


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ggdefender", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = argv[0] if argv and not argv[0].startswith("-") else None
    registered = set()
    for name, module_name in SUBCOMMANDS.items():
        # import only the module the user asked for (or all of them for --help)
        if wanted is not None and wanted != name:
            continue
        if module_name in registered:
            continue
        module = optional_module(module_name)
        if module is None:
            continue
        module.register(subparsers)
        registered.add(module_name)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    result = args.func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
