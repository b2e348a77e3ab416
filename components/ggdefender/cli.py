"""The `ggdefender` command: one entry point, one subcommand module per part.

Each part owns its subcommand in its own package and exposes ``register(subparsers)``;
modules are imported lazily so `ggdefender collect` never pays for the local core's imports.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

# subcommand -> module exposing register(subparsers) that sets `func` on its parser
SUBCOMMANDS = {
    "collect": "ggdefender.collector.cli",
    "run": "ggdefender.supervisor.run",  # process A
    "part": "ggdefender.collector.process",  # process B
    "local": "ggdefender.local.ui.cli",
    "detect": "ggdefender.detect.cli",
    "build": "ggdefender.devtools.build",
    "fleet": "ggdefender.fleet.cli",  # the fleet tier: runs in the customer's AWS account
}


# commands whose package the device artifact leaves out (build.EXCLUDED_DIRS; a test keeps the two equal): they
# are developer tools, so on a device asking for one is a clear error and --help lists the others. Every other
# part always ships and is imported normally, so a missing one fails loudly.
NOT_IN_ARTIFACT = {
    "local": "ggdefender.local",
    "build": "ggdefender.devtools",
    "detect replay": "ggdefender.devtools",  # `detect validate` ships; replay and its plot do not
    "fleet": "ggdefender.fleet",
}


class NotInstalled(RuntimeError):
    """The command's package is not in this installation (the device artifact)."""


def import_part(command: str, module_name: str) -> ModuleType:
    """Import `module_name` for `ggdefender <command>`: NotInstalled when the artifact leaves its package out."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        package = NOT_IN_ARTIFACT.get(command)
        if package and exc.name and (exc.name == package or package.startswith(exc.name + ".")):
            raise NotInstalled(f"`ggdefender {command}` is not in this installation: it is a developer tool the "
                               f"device artifact does not ship ({package}); run it from the source tree "
                               f"(README.md)") from None
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
        try:
            module = import_part(name, module_name)
        except NotInstalled:
            if wanted is not None:
                raise
            continue  # --help on a device: list what is installed
        module.register(subparsers)
        registered.add(module_name)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(argv)
    except NotInstalled as exc:
        print(f"ggdefender: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    result = args.func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
