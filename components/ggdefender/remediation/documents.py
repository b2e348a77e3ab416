"""Parse and validate job documents into a `Plan` of steps, before anything runs.

Three formats are accepted:
- ours, `"schema": "ggdefender.remediation/1"` (job_document.schema.json: one allow-listed operation per
  step, typed arguments, `dryRun`);
- the AWS IoT Device Client schema "1.0" (`runHandler` / `runCommand` steps, as in the AWS managed job
  templates): keys the Device Client does not read (e.g. `_comment`) are ignored as it ignores them, and
  named in the plan's notes (statusDetails); the fields it reads are validated strictly;
- the Device Client's legacy form `{"operation": "x.sh", "args": [...]}` (one runHandler step).

Everything that can make a job impossible is checked here, so a REJECTED job has run nothing: size
(32 KB), structure, operation allow-list, argument semantics (e.g. addresses), handler names, runAsUser,
runCommand gating, unresolved `${aws:iot:...}` placeholders. Checks that need the live system (process
ownership, handler file permissions) run in a pre-flight pass before the first step.
"""

from __future__ import annotations

import dataclasses
import json
import re
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any, Collection, Dict, Iterable, Optional, Union

if TYPE_CHECKING:
    import jsonschema

    from .config import RemediationSettings

from ggdefender.jobs_protocol import MAX_DOCUMENT_CHARS  # the IoT Jobs API limit for a job document

from . import operations

SCHEMA_ID = "ggdefender.remediation/1"

# JSON Schema counts 8888.0 as an integer, and Greengrass stores configured numbers (a mitigation rule's
# Arguments) as floats: these arguments are made real ints before an operation sees them.
_INTEGER_ARGUMENTS = ("port", "pid")
HANDLER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
PLACEHOLDER = "${aws:iot:"

_DC_ACTION = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "type"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 128},
        "type": {"enum": ["runHandler", "runCommand"]},
        "runAsUser": {"type": "string", "maxLength": 256},
        "ignoreStepFailure": {"type": ["string", "boolean"]},
        "allowStdErr": {"type": ["integer", "string"]},
        "input": {"type": "object"},
    },
    "allOf": [
        {"if": {"properties": {"type": {"const": "runHandler"}}},
         "then": {"required": ["input"], "properties": {"input": {
             "type": "object", "additionalProperties": False, "required": ["handler"],
             "properties": {
                 "handler": {"type": "string", "minLength": 1, "maxLength": 128},
                 "args": {"type": "array", "maxItems": 64, "items": {"type": "string", "maxLength": 4096}},
                 "path": {"type": "string", "maxLength": 4096}}}}}},
        {"if": {"properties": {"type": {"const": "runCommand"}}},
         "then": {"required": ["input"], "properties": {"input": {
             "type": "object", "additionalProperties": False, "required": ["command"],
             "properties": {"command": {"type": "string", "minLength": 1, "maxLength": 8192}}}}}},
    ],
}
DEVICE_CLIENT_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["version", "steps"],
    "properties": {
        "version": {"const": "1.0"},
        "includeStdOut": {"type": ["string", "boolean"]},
        "conditions": {"type": "array", "maxItems": 16, "items": {
            "type": "object", "required": ["key", "value"],
            "properties": {"key": {"type": "string"}, "value": {"type": "array"}, "type": {"type": "string"}}}},
        "steps": {"type": "array", "minItems": 1, "maxItems": 10,
                  "items": {"type": "object", "additionalProperties": False, "required": ["action"],
                            "properties": {"action": _DC_ACTION}}},
        "finalStep": {"type": "object", "additionalProperties": False, "required": ["action"],
                      "properties": {"action": _DC_ACTION}},
    },
}
DEVICE_CLIENT_LEGACY_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["operation"],
    "properties": {
        "operation": {"type": "string", "minLength": 1, "maxLength": 128},
        "args": {"type": "array", "maxItems": 64, "items": {"type": "string", "maxLength": 4096}},
        "path": {"type": "string", "maxLength": 4096},
        "allowStdErr": {"type": ["integer", "string"]},
        "includeStdOut": {"type": ["string", "boolean"]},
    },
}


# The keys the Device Client reads, per object; anything else in a Device Client document is ignored (as the
# Device Client does) and reported. A dict value describes a nested object, a list one describes its items.
_DC_INPUT_KEYS = {"runHandler": ("handler", "args", "path"), "runCommand": ("command",)}
_DC_ACTION_KEYS = ("name", "type", "runAsUser", "ignoreStepFailure", "allowStdErr", "input")
_DC_DOC_KEYS = ("version", "includeStdOut", "conditions", "steps", "finalStep")
_DC_LEGACY_KEYS = ("operation", "args", "path", "allowStdErr", "includeStdOut")
MAX_NOTED_KEYS = 8

# The AWS-Reboot managed template's handler. A handler's exit status cannot show that the device rebooted, so
# this step becomes our `reboot` operation (IN_PROGRESS with a boot marker, done after the next boot), which
# runs only when "reboot" is allow-listed; no handler file is run for it.
REBOOT_HANDLERS = ("reboot.sh",)


class DocumentError(ValueError):
    """The document can never run as written (the job is REJECTED with this message)."""


@dataclasses.dataclass
class Step:
    name: str
    operation: str  # one of operations.MODULES, or "runHandler" / "runCommand"
    arguments: dict
    ignore_failure: bool = False
    allow_stderr: Optional[int] = None  # Device Client: max stderr lines for success
    run_as_user: str = ""  # Device Client: as written in the document ("" when unset)

    def target(self) -> str:
        if self.operation == "runHandler":
            return self.arguments["handler"]
        if self.operation == "runCommand":
            return self.arguments["argv"][0]
        return operations.get(self.operation).target(self.arguments)


@dataclasses.dataclass
class Plan:
    format: str  # "ggdefender" | "device-client" | "device-client-legacy"
    steps: list
    final_step: Optional[Step] = None
    dry_run: bool = False
    include_stdout: bool = False
    notes: list = dataclasses.field(default_factory=list)

    def all_steps(self) -> list:
        return self.steps + ([self.final_step] if self.final_step else [])


def _jsonschema():
    # imported on the first job document, not at start-up: it adds ~5 MiB RSS to the idle component
    # (docs/performance.md, memory budget)
    import jsonschema

    return jsonschema


@lru_cache(maxsize=1)
def our_validator() -> "jsonschema.Draft202012Validator":
    """The JSON Schema validator of our remediation document (the device's and the fleet handler's one check)."""
    text = resources.files("ggdefender.remediation").joinpath("job_document.schema.json").read_text()
    return _jsonschema().Draft202012Validator(json.loads(text))


def _check(validator: Any, doc: Any, label: str) -> None:
    errors = list(validator.iter_errors(doc))
    if not errors:
        return
    best = _jsonschema().exceptions.best_match(errors)
    where = _path(best.absolute_path)
    msg = best.message if len(best.message) <= 300 else best.message[:300] + "..."
    raise DocumentError(f"invalid {label} document at {where}: {msg}")


def _path(parts: Iterable[Any]) -> str:
    out = "$"
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def load(raw: Union[str, bytes, dict]) -> dict:
    """The document as a dict; accepts the object form (MQTT) and the string form (HTTPS plane)."""
    if isinstance(raw, (bytes, bytearray)):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise DocumentError("job document is not valid UTF-8") from None
    if isinstance(raw, str):
        if len(raw) > MAX_DOCUMENT_CHARS:
            raise DocumentError(f"job document is {len(raw)} characters; the limit is {MAX_DOCUMENT_CHARS}")
        try:
            raw = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise DocumentError(f"job document is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(raw, dict):
        raise DocumentError(f"job document must be a JSON object, got {type(raw).__name__}")
    try:
        size = len(json.dumps(raw, separators=(",", ":"), ensure_ascii=False))
    except (ValueError, RecursionError, TypeError):
        raise DocumentError("job document cannot be serialised (too deep or not JSON)") from None
    if size > MAX_DOCUMENT_CHARS:
        raise DocumentError(f"job document is {size} characters; the limit is {MAX_DOCUMENT_CHARS}")
    return raw


def _no_placeholders(value: Any, where: str = "$") -> None:
    """AWS substitutes ${aws:iot:...} before delivery; one reaching the device means a broken job."""
    if isinstance(value, str):
        if PLACEHOLDER in value:
            raise DocumentError(f"{where}: unresolved placeholder in {value[:80]!r}")
    elif isinstance(value, dict):
        for k, v in value.items():
            _no_placeholders(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _no_placeholders(v, f"{where}[{i}]")


def parse(raw: Union[str, bytes, dict], settings: RemediationSettings) -> Plan:
    """Validate a job document completely and return its plan; DocumentError says why it is rejected."""
    doc = load(raw)
    if "schema" in doc:
        plan = _parse_ours(doc, settings)
    elif "version" in doc:
        plan = _parse_device_client(doc, settings)
    elif "operation" in doc:
        plan = _parse_legacy(doc, settings)
    else:
        raise DocumentError(f'unrecognised job document: expected "schema": "{SCHEMA_ID}" or a Device Client '
                            'document with "version": "1.0"')
    for step in plan.all_steps():
        # runCommand has its own explicit switch (AllowRunCommand), checked in _dc_step
        if step.operation != "runCommand" and step.operation not in settings.allowed_operations:
            raise DocumentError(f"step {step.name!r}: operation {step.operation!r} is not allowed on this device "
                                f"(Remediation.AllowedOperations: {', '.join(settings.allowed_operations)})")
    unavailable = operations.unavailable()
    for step in plan.all_steps():
        if step.operation in unavailable:  # checked for every step first: nothing of the job runs
            raise DocumentError(f"step {step.name!r}: operation {step.operation!r} is unavailable on this device "
                                f"({unavailable[step.operation]})")
    return plan


def _parse_ours(doc: dict, settings: RemediationSettings) -> Plan:
    _check(our_validator(), doc, "remediation")
    steps = []
    for i, raw_step in enumerate(doc["steps"]):
        op = raw_step["operation"]
        args = {k: int(v) if k in _INTEGER_ARGUMENTS and isinstance(v, float) else v
                for k, v in (raw_step.get("arguments") or {}).items()}
        module = operations.get(op)
        validate = getattr(module, "validate", None)
        if validate is not None:
            try:
                validate(args, settings)
            except ValueError as exc:
                raise DocumentError(f"$.steps[{i}] ({op}): {exc}") from None
        steps.append(Step(name=raw_step.get("name") or f"{i + 1}-{op}", operation=op, arguments=args))
    return Plan(format="ggdefender", steps=steps, dry_run=bool(doc.get("dryRun", False)))


def _truthy(value: Any) -> bool:
    # the Device Client only honours the *string* "true"; a JSON true is what its README shows, so take both
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def _allow_stderr(value: Any, where: str) -> Optional[int]:
    if value is None:
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise DocumentError(f"{where}.allowStdErr: expected an integer, got {value!r}") from None
    if n < 0 or n > 100000:
        raise DocumentError(f"{where}.allowStdErr: {n} is out of range 0-100000")
    return n


def _known(obj: Any, keys: Collection[str], where: str, ignored: list) -> Any:
    """obj without the keys the Device Client does not read; their paths are added to `ignored`."""
    if not isinstance(obj, dict):
        return obj  # the schema says what is wrong with it
    for key in obj:
        if key not in keys:
            ignored.append(f"{where}.{key}")
    return {k: v for k, v in obj.items() if k in keys}


def _known_action(entry: Any, where: str, ignored: list) -> Any:
    entry = _known(entry, ("action",), where, ignored)
    if not isinstance(entry, dict) or not isinstance(entry.get("action"), dict):
        return entry
    action = _known(entry["action"], _DC_ACTION_KEYS, f"{where}.action", ignored)
    input_keys = _DC_INPUT_KEYS.get(action.get("type"))
    if input_keys and "input" in action:
        action["input"] = _known(action["input"], input_keys, f"{where}.action.input", ignored)
    return dict(entry, action=action)


def _device_client_view(doc: dict) -> tuple:
    """(the document as the Device Client reads it, the paths of the keys it ignores)."""
    ignored: list = []
    view = _known(doc, _DC_DOC_KEYS, "$", ignored)
    if isinstance(view.get("steps"), list):
        view["steps"] = [_known_action(e, f"$.steps[{i}]", ignored) for i, e in enumerate(view["steps"])]
    if "finalStep" in view:
        view["finalStep"] = _known_action(view["finalStep"], "$.finalStep", ignored)
    return view, ignored


def _note_ignored(plan: "Plan", ignored: list) -> None:
    if ignored:
        shown = ", ".join(ignored[:MAX_NOTED_KEYS]) + (f" and {len(ignored) - MAX_NOTED_KEYS} more"
                                                       if len(ignored) > MAX_NOTED_KEYS else "")
        plan.notes.append(f"ignored unknown key(s) {shown} (as the Device Client does)")


def _parse_device_client(doc: dict, settings: RemediationSettings) -> Plan:
    doc, ignored = _device_client_view(doc)
    _check(_jsonschema().Draft202012Validator(DEVICE_CLIENT_SCHEMA), doc, "Device Client")
    _no_placeholders(doc)
    plan = Plan(format="device-client", steps=[], include_stdout=_truthy(doc.get("includeStdOut")))
    _note_ignored(plan, ignored)
    if doc.get("conditions"):
        plan.notes.append("conditions ignored (the Device Client does not evaluate them either)")
    for i, entry in enumerate(doc["steps"]):
        plan.steps.append(_dc_step(entry["action"], settings, f"$.steps[{i}].action"))
    if "finalStep" in doc:
        plan.final_step = _dc_step(doc["finalStep"]["action"], settings, "$.finalStep.action")
    return plan


def _parse_legacy(doc: dict, settings: RemediationSettings) -> Plan:
    ignored: list = []
    doc = _known(doc, _DC_LEGACY_KEYS, "$", ignored)
    _check(_jsonschema().Draft202012Validator(DEVICE_CLIENT_LEGACY_SCHEMA), doc, "Device Client (legacy)")
    _no_placeholders(doc)
    action = {"name": doc["operation"], "type": "runHandler",
              "input": {"handler": doc["operation"], "args": doc.get("args", [])}}
    if "path" in doc:
        action["input"]["path"] = doc["path"]
    if "allowStdErr" in doc:
        action["allowStdErr"] = doc["allowStdErr"]
    plan = Plan(format="device-client-legacy", steps=[_dc_step(action, settings, "$")],
                include_stdout=_truthy(doc.get("includeStdOut")))
    _note_ignored(plan, ignored)
    return plan


def _dc_step(action: dict, settings: RemediationSettings, where: str) -> Step:
    kind = action["type"]
    common = dict(name=action["name"], operation=kind, ignore_failure=_truthy(action.get("ignoreStepFailure")),
                  allow_stderr=_allow_stderr(action.get("allowStdErr"), where),
                  run_as_user=action.get("runAsUser", ""))
    if kind == "runHandler":
        inp = action["input"]
        handler = inp["handler"]
        if not HANDLER_NAME.match(handler) or handler in (".", ".."):
            raise DocumentError(f"{where}.input.handler: {handler!r} is not a plain file name "
                                "(letters, digits, '.', '_', '-'; no paths)")
        if handler in REBOOT_HANDLERS:
            if "reboot" not in settings.allowed_operations:
                raise DocumentError(f"{where}: {handler!r} (the AWS-Reboot template) reboots the device, and "
                                    "\"reboot\" is not in Remediation.AllowedOperations on this device")
            return Step(name=common["name"], operation="reboot", arguments={})
        path = inp.get("path", "")
        if path not in ("", "default") and path.rstrip("/") != settings.handler_directory:
            raise DocumentError(f"{where}.input.path: handlers run only from the configured "
                                f"Remediation.HandlerDirectory, not {path[:100]!r}")
        if not settings.handler_directory:
            raise DocumentError(f"{where}: runHandler needs Remediation.HandlerDirectory, which is not configured")
        return Step(arguments={"handler": handler, "args": list(inp.get("args", []))}, **common)
    # runCommand
    if not settings.allow_run_command:
        raise DocumentError(f"{where}: runCommand is disabled on this device (Remediation.AllowRunCommand)")
    argv = split_command(action["input"]["command"], where)
    return Step(arguments={"argv": argv}, **common)


def split_command(command: str, where: str = "$") -> list:
    """The Device Client's runCommand format: comma-separated argv, `\\,` for a literal comma, tokens trimmed."""
    tokens, current, i = [], [], 0
    while i < len(command):
        ch = command[i]
        if ch == "\\" and i + 1 < len(command) and command[i + 1] == ",":
            current.append(",")
            i += 2
            continue
        if ch == ",":
            tokens.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    tokens.append("".join(current))
    argv = [t.strip(" \t\n\v\f\r") for t in tokens]
    if not argv[0] or any(c.isspace() for c in argv[0]):
        raise DocumentError(f"{where}.input.command: the first token must be a program without whitespace")
    if len(argv) > 64:
        raise DocumentError(f"{where}.input.command: more than 64 arguments")
    if any("\x00" in a for a in argv):
        raise DocumentError(f"{where}.input.command: NUL byte in an argument")
    return argv


def request_to_document(request: dict) -> dict:
    """A local mitigation request (from Detect) as one of our documents, so it takes the same path as jobs."""
    if not isinstance(request, dict):
        raise DocumentError("request must be a JSON object")
    allowed = {"requestId", "operation", "arguments", "reason", "violationId", "dryRun"}
    unknown = sorted(set(request) - allowed)
    if unknown:
        raise DocumentError(f"request: unknown field(s) {', '.join(unknown)}")
    doc: Dict[str, Any] = {"schema": SCHEMA_ID, "steps": [{"operation": request.get("operation")}]}
    if "arguments" in request:
        doc["steps"][0]["arguments"] = request["arguments"]
    if "dryRun" in request:
        doc["dryRun"] = request["dryRun"]
    return doc
