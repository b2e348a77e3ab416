"""`ggdefender local ...`: run an offline Greengrass core in the foreground and talk to a running one.

    ggdefender local run --recipeDir D --artifactDir D --merge NAME=VERSION [--merge ...]
                         [--update-config JSON|FILE] [--thing NAME] [--broker URL] [--root DIR]
                         [--duration SECONDS] [--no-interpolate-config]
    ggdefender local status [--root DIR] [--json]
    ggdefender local config update [--root DIR] --update-config JSON|FILE
    ggdefender local logs NAME [--root DIR] [--lines N] [--follow]

Deployment flags mirror greengrass-cli's `deployment create`. Other parts add sub-subcommands through an
optional `ggdefender.local.jobs_cli.register(local_subparsers)`.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import signal
import sys
import time
from pathlib import Path

DEFAULT_ROOT = ".ggdefender-local"
OPTIONAL_SUBCOMMANDS = ("ggdefender.local.jobs_cli",)


def register(subparsers) -> None:
    local = subparsers.add_parser("local", help="offline Greengrass core speaking the real IPC protocol",
                                  description=__doc__.split("\n\n")[0])
    sub = local.add_subparsers(dest="local_command", metavar="COMMAND")
    local.set_defaults(func=lambda args: (local.print_help(), 2)[1])

    run = sub.add_parser("run", help="run the core and the merged components in the foreground")
    run.add_argument("--recipeDir", "-r", required=True, help="folder with <Name>-<Version>.yaml|json recipes")
    run.add_argument("--artifactDir", "-a", help="folder laid out as <Name>/<Version>/<artifacts>")
    run.add_argument("--merge", "-m", action="append", required=True, metavar="NAME=VERSION",
                     help="component to deploy (repeat for several)")
    run.add_argument("--update-config", "-c", dest="update_config", metavar="JSON|FILE",
                     help='{"<Name>": {"MERGE": {...}, "RESET": ["/pointer"]}}')
    run.add_argument("--thing", default=None, help="thing name of this core (default: ggdefender-local)")
    run.add_argument("--region", default="us-east-1", help="AWS_REGION given to components")
    run.add_argument("--broker", metavar="URL", help="bridge IoT Core traffic to an MQTT broker, e.g. "
                                                     "mqtt://127.0.0.1:1883 (mosquitto)")
    run.add_argument("--root", default=DEFAULT_ROOT, help=f"root folder (default {DEFAULT_ROOT}); kept across "
                                                          f"runs so Install steps are fast the second time")
    run.add_argument("--duration", type=float, metavar="SECONDS", help="stop cleanly after this long (0 = until Ctrl-C, the default)")
    run.add_argument("--no-interpolate-config", dest="interpolate", action="store_false",
                     help="leave recipe variables in configuration literal, like a default nucleus")
    run.add_argument("--grace", type=float, default=5.0, metavar="SECONDS",
                     help="time between SIGTERM and SIGKILL at shutdown (default 5)")
    run.add_argument("--quiet", "-q", action="store_true", help="no live view, only the final summary")
    run.set_defaults(func=cmd_run)

    status = sub.add_parser("status", help="components and states of a running core")
    status.add_argument("--root", default=DEFAULT_ROOT)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)

    config = sub.add_parser("config", help="configuration of components on a running core")
    config_sub = config.add_subparsers(dest="config_command", metavar="COMMAND")
    config.set_defaults(func=lambda args: (config.print_help(), 2)[1])
    update = config_sub.add_parser("update", help="MERGE/RESET configuration like greengrass-cli --update-config")
    update.add_argument("--root", default=DEFAULT_ROOT)
    update.add_argument("--update-config", "-c", dest="update_config", required=True, metavar="JSON|FILE")
    update.set_defaults(func=cmd_config_update)

    logs = sub.add_parser("logs", help="a component's log (<root>/logs/<Name>.log)")
    logs.add_argument("name")
    logs.add_argument("--root", default=DEFAULT_ROOT)
    logs.add_argument("--lines", "-n", type=int, default=100, help="last N lines (default 100, 0 = all)")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing new lines (Ctrl-C to stop)")
    logs.set_defaults(func=cmd_logs)

    for module_name in OPTIONAL_SUBCOMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue
            raise
        module.register(sub)


def _fail(message: str) -> int:
    print(f"ggdefender local: {message}", file=sys.stderr)
    return 2


# -- run ---------------------------------------------------------------------------------------------------

def cmd_run(args) -> int:
    from .bridge import BridgeError
    from .control import ControlError
    from .recipe import RecipeError, load_update_config, parse_merge
    from .runtime import DEFAULT_THING, Runtime
    from .view import View

    try:
        merges = dict(parse_merge(m) for m in args.merge)
        updates = load_update_config(args.update_config) if args.update_config else {}
    except RecipeError as exc:
        return _fail(str(exc))
    if args.duration is not None and not args.duration >= 0:
        return _fail("--duration must be a number of seconds ≥ 0 (0 = until Ctrl-C)")
    args.duration = args.duration or None
    if not Path(args.recipeDir).is_dir():
        return _fail(f"--recipeDir {args.recipeDir}: not a directory")
    if args.artifactDir and not Path(args.artifactDir).is_dir():
        return _fail(f"--artifactDir {args.artifactDir}: not a directory")
    view = View(None if args.quiet else sys.stdout)
    try:
        runtime = Runtime(args.root, thing=DEFAULT_THING if args.thing is None else args.thing, region=args.region, view=view,
                          interpolate_config=args.interpolate, broker=args.broker, grace_seconds=args.grace)
    except ValueError as exc:
        return _fail(str(exc))

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await runtime.start()
        except (BridgeError, ControlError, OSError, ValueError) as exc:
            return _fail(str(exc))
        code = 0
        try:
            await runtime.deploy(args.recipeDir, args.artifactDir, merges, updates)
            view.note("core", "running" + (f" for {args.duration:g} s" if args.duration else "; Ctrl-C to stop"))
            try:
                await asyncio.wait_for(stop.wait(), args.duration)
            except asyncio.TimeoutError:
                pass
            view.note("core", "stopping components")
        except RecipeError as exc:
            code = _fail(str(exc))
        finally:
            await runtime.stop()
        components = runtime.core.components()
        view.out = sys.stdout
        view.print("\n" + view.table(components))
        view.print(view.totals())
        for name, rec in components.items():
            dep = runtime.lifecycle.deployed.get(name)
            if dep is not None and dep.errors and dep.reason:
                view.print(f"{name}: {dep.reason} (see {dep.log_path})")
        if code == 0 and any(rec.state == "BROKEN" for rec in components.values()):
            code = 1
        return code

    return asyncio.run(main())


# -- commands for a running core ------------------------------------------------------------------------

def cmd_status(args) -> int:
    from .control import ControlError, control_request

    try:
        status = control_request(args.root, "status")
    except ControlError as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    print(f"thing {status['thing']}  root {status['root']}" + (f"  broker {status['broker']}"
                                                                if status.get("broker") else ""))
    rows = [("COMPONENT", "VERSION", "STATE", "NOTE")]
    for name, info in sorted(status["components"].items()):
        rows.append((name, info["version"], info["state"], info.get("reason") or ""))
    widths = [max(len(str(r[i])) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    print(status["totals"])
    return 0


def cmd_config_update(args) -> int:
    from .control import ControlError, control_request
    from .recipe import RecipeError, load_update_config

    try:
        updates = load_update_config(args.update_config)
        result = control_request(args.root, "config-update", {"update": updates})
    except (RecipeError, ControlError) as exc:
        return _fail(str(exc))
    print(json.dumps(result, indent=2))
    return 0


def cmd_logs(args) -> int:
    from .recipe import RecipeError, check_component_name

    try:
        check_component_name(args.name, "local logs")  # a name, never a path out of <root>/logs
    except RecipeError as exc:
        return _fail(str(exc))
    path = Path(args.root) / "logs" / f"{args.name}.log"
    if not path.is_file():
        known = sorted(p.stem for p in (Path(args.root) / "logs").glob("*.log"))
        return _fail(f"no log for {args.name} in {path.parent} (logs: {', '.join(known) or 'none'})")
    with open(path, encoding="utf-8", errors="replace") as fh:
        lines = fh.readlines()
        sys.stdout.writelines(lines[-args.lines:] if args.lines > 0 else lines)
        sys.stdout.flush()
        if not args.follow:
            return 0
        try:
            while True:
                line = fh.readline()
                if line:
                    sys.stdout.write(line)
                    sys.stdout.flush()
                else:
                    time.sleep(0.3)
        except KeyboardInterrupt:
            return 0
