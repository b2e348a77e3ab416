"""`ggdefender local ...`: run an offline Greengrass core in the foreground and talk to a running one.

    ggdefender local run --recipeDir D --artifactDir D --merge NAME=VERSION [--merge ...]
                         [--update-config JSON|FILE] [--thing NAME] [--broker URL] [--root DIR]
                         [--duration SECONDS] [--no-interpolate-config]
    ggdefender local status [--root DIR] [--json]
    ggdefender local config update [--root DIR] --update-config JSON|FILE [--wait SECONDS] [--json]
    ggdefender local logs NAME [--root DIR] [--lines N] [--follow]

Deployment flags mirror greengrass-cli's `deployment create`. Other parts add sub-subcommands through an
optional `ggdefender.local.ui.jobs_cli.register(local_subparsers)`.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_ROOT = ".ggdefender-local"
DEFAULT_CONFIG_WAIT = 15.0
OPTIONAL_SUBCOMMANDS = ("ggdefender.local.ui.jobs_cli",)


def register(subparsers: argparse._SubParsersAction) -> None:
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
    update.add_argument("--wait", type=float, default=DEFAULT_CONFIG_WAIT, metavar="SECONDS",
                        help=f"wait up to this long for each component's verdict on the sections it changed "
                             f"(from its health document; default {DEFAULT_CONFIG_WAIT:g}, 0 = do not wait)")
    update.add_argument("--json", action="store_true", help="print the whole answer (each component's "
                        "configuration before and after, its verdicts) as JSON instead of what changed")
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

def cmd_run(args: argparse.Namespace) -> int:
    from ..cloud.bridge import BridgeError
    from .control import ControlError
    from ..nucleus.config_updates import load_update_config
    from ..nucleus.recipe import parse_merge
    from ..nucleus.recipe_error import RecipeError
    from ..nucleus.runtime import DEFAULT_THING, Runtime
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

def cmd_status(args: argparse.Namespace) -> int:
    from .control import ControlError, control_request
    from .view import totals_text

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
    print(totals_text(status["totals"]))
    for name, doc in sorted((status.get("health") or {}).items()):
        print()
        print(health_text(name, doc))
    return 0


def health_text(name: str, doc: dict) -> str:
    """A component's health document for people: status, each problem, each configuration verdict."""
    from ggdefender.health import problems

    lines = [f"health of {name}: {str(doc.get('status', 'unknown')).upper()}  (updated {doc.get('updatedAt', '?')})"]
    lines += [f"  ! {p}" for p in problems(doc)]
    for section, verdict in sorted((doc.get("configuration") or {}).items()):
        if isinstance(verdict, dict):
            lines.append(f"  configuration {section}: {verdict_text(verdict)}")
    privsep = doc.get("privilegeSeparation")
    if isinstance(privsep, dict):
        lines.append(f"  privilege separation: {'on' if privsep.get('on') else 'OFF'}"
                     + (f" (collector user {privsep['collectorUser']})" if privsep.get("collectorUser") else "")
                     + (f": {privsep['reason']}" if privsep.get("reason") else ""))
    for part, info in sorted((doc.get("parts") or {}).items()):
        if isinstance(info, dict) and "state" in info:
            lines.append(f"  part {part}: {info.get('state')}, restarts {info.get('restarts', 0)}"
                         + (f", last exit {info['lastExit']}" if info.get("lastExit") else ""))
    outbox = doc.get("outbox")
    if isinstance(outbox, dict):
        lines.append(f"  outbox: {outbox.get('pending', 0)} pending, {outbox.get('dropped', 0)} dropped")
    last = doc.get("lastReport")
    if isinstance(last, dict):
        lines.append(f"  last report: {last.get('status')}" + (f" (id {last['reportId']})" if "reportId" in last
                                                              else "") + (f": {last['reason']}" if last.get("reason") else ""))
    return "\n".join(lines)


def verdict_text(verdict: dict) -> str:
    if verdict.get("accepted"):
        return "accepted" + (f" ({verdict['reason']})" if verdict.get("reason") else "")
    fallback = "running on the last good configuration" if verdict.get("usingLastGood") else \
        "no last good configuration: running on the built-in fallback"
    return f"REJECTED: {verdict.get('reason') or 'no reason given'} ({fallback})"


def cmd_config_update(args: argparse.Namespace) -> int:
    from .control import ControlError, control_request
    from ..nucleus.config_updates import load_update_config
    from ..nucleus.recipe_error import RecipeError

    from ..nucleus.runtime import MAX_CONFIG_WAIT

    if not 0 <= args.wait <= MAX_CONFIG_WAIT:
        return _fail(f"--wait must be a number of seconds from 0 to {MAX_CONFIG_WAIT:g}")
    try:
        updates = load_update_config(args.update_config)
        result = control_request(args.root, "config-update", {"update": updates, "wait": args.wait})
    except (RecipeError, ControlError) as exc:
        return _fail(str(exc))
    def out(*text: Any, **kwargs: Any) -> None:
        if not args.json:  # --json: the answer alone on stdout
            print(*text, **kwargs)

    if args.json:
        print(json.dumps(result, indent=2))
    rejected = missing = False
    for name, entry in sorted(result["verdicts"].items()):
        if not entry["changed"]:
            out(f"{name}: nothing changed", file=sys.stderr)
            continue
        for line in changes_text(name, (result.get("before") or {}).get(name), result["configuration"].get(name)):
            out(line)
        if not entry["health"]:
            out(f"{name} publishes no health document: not waiting for a verdict", file=sys.stderr)
            continue
        for section in entry.get("notJudged", []):
            out(f"{name} {section}: changed (the component gives no verdict on this section)", file=sys.stderr)
        for section, verdict in sorted((entry.get("verdicts") or {}).items()):
            if verdict is None:
                out(f"{name} {section}: no verdict within {args.wait:g} s")
                missing = True
            else:
                out(f"{name} {section}: {verdict_text(verdict)}")
                rejected = rejected or not verdict.get("accepted")
    return 1 if rejected else 3 if missing else 0


MAX_CHANGE_LINES = 50  # a RESET of a whole section can change hundreds of keys: the rest is counted
MAX_VALUE_TEXT = 120


def changes_text(name: str, before: Any, after: Any) -> list:
    """`Name: /pointer: old -> new` for each leaf an update changed (values as JSON, `(absent)` when missing)."""
    from ..nucleus.config_updates import config_changes

    def show(value: Any) -> str:
        if value is None:
            return "(absent)"
        text = json.dumps(value, sort_keys=True)
        return text if len(text) <= MAX_VALUE_TEXT else text[:MAX_VALUE_TEXT - 3] + "..."

    changes = config_changes(before if before is not None else {}, after if after is not None else {})
    lines = [f"{name}: {pointer}: {show(old)} -> {show(new)}" for pointer, old, new in changes[:MAX_CHANGE_LINES]]
    if len(changes) > MAX_CHANGE_LINES:
        lines.append(f"{name}: ... and {len(changes) - MAX_CHANGE_LINES} more changed keys (--json shows all)")
    return lines


def cmd_logs(args: argparse.Namespace) -> int:
    from ..nucleus.recipe import check_component_name
    from ..nucleus.recipe_error import RecipeError

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
