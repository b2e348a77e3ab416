"""The AWS-shaped examples in docs/*.md, checked against botocore's service models (tests/aws_models.py).

A fenced block is checked as the input (or one member of the input) of an AWS operation when the line
before it is a marker, `<!-- aws-shape: <service> <Operation> [member] -->`, e.g.
`<!-- aws-shape: iot CreateSecurityProfile -->` or `<!-- aws-shape: iot CreateJob document -->` (a string
member takes the block's text as written, as `--document file://...` does). So that a new example cannot go
unchecked, every JSON block is also searched for objects that look like one of the shapes below: one that is
a whole block must carry the marker, and one nested in a larger example (a profile inside a Detect
configuration) is checked where it stands. A violation event is checked as AWS's ViolationEvent (an output
shape: ListViolationEvents' violationEvents[]) without our documented additions. The placeholders users fill in (REGION, ACCOUNT) are replaced by
values of the right form first. The `aws ...` commands in shell blocks are read into their operation's input
and checked the same way.
"""

import itertools
import json
import os
import re
import shlex
from functools import lru_cache

import botocore
import jsonschema
import pytest

import aws_models
from ggdefender.remediation import documents

from test_aws_formats import violation_event_problems

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "docs")
MARKER = re.compile(r"^<!--\s*aws-shape:\s*(\S+)\s+(\S+)(?:\s+(\S+))?\s*-->$")
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
# the docs' placeholders for what each user fills in, replaced by values of the right form before the check
PLACEHOLDERS = {"REGION": "us-east-1", "ACCOUNT": "123456789012"}
_PLACEHOLDER = re.compile(r"\b(" + "|".join(PLACEHOLDERS) + r")\b")


def recognise(obj):
    """The (service, operation, member) an object in a doc looks like, or None."""
    if not isinstance(obj, dict):
        return None
    if "securityProfileName" in obj and "behaviors" in obj:
        return ("iot", "CreateSecurityProfile", None)
    if "SchemaVersion" in obj and "ProductArn" in obj:
        return ("securityhub", "BatchImportFindings", "Findings[]")
    if str(obj.get("schema", "")).startswith("ggdefender.remediation/") or (
            "version" in obj and isinstance(obj.get("steps"), list)):
        return ("iot", "CreateJob", "document")
    if "targetArn" in obj and "components" in obj:
        return ("greengrassv2", "CreateDeployment", None)
    if "violationId" in obj and "violationEventType" in obj:
        return VIOLATION_EVENT
    return None


VIOLATION_EVENT = ("iot", "ListViolationEvents", "violationEvents[]")  # an output shape, plus our additions


def shape_problems(value, marker, path):
    service, operation, member = marker
    if marker == VIOLATION_EVENT:
        return violation_event_problems(value, path)
    return aws_models.problems(value, service, operation, member, path=path)


@lru_cache(maxsize=1)
def blocks() -> tuple:
    """Every fenced block of docs/*.md: (where, language, text, marker or None)."""
    found = []
    for name in sorted(os.listdir(DOCS)):
        if not name.endswith(".md"):
            continue
        with open(os.path.join(DOCS, name), encoding="utf-8") as fh:
            lines = fh.read().split("\n")
        i = 0
        while i < len(lines):
            m = FENCE.match(lines[i])
            if not m:
                i += 1
                continue
            start, indent = i, len(m.group(1))
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
            assert end is not None, f"docs/{name}:{start + 1}: unclosed code fence"
            text = _PLACEHOLDER.sub(lambda p: PLACEHOLDERS[p.group(1)],
                                    "\n".join(line[indent:] for line in lines[start + 1:end]))
            previous = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
            marker = MARKER.match(previous)
            found.append((f"docs/{name}:{start + 1}", m.group(2), text,
                          (marker.group(1), marker.group(2), marker.group(3)) if marker else None))
            i = end + 1
    return tuple(found)


def parsed(text):
    try:
        return json.loads(text)
    except ValueError:
        return None  # shell, log lines, or an elided example ("[ ... ]")


def marked():
    return [b for b in blocks() if b[3] is not None]


def nested(obj, path="$"):
    """(path, object, shape) of every recognisable object inside `obj`, itself excluded."""
    children = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for key, child in children:
        where = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}"
        shape = recognise(child)
        if shape:
            yield where, child, shape
        yield from nested(child, where)


def check_job_document(text, where):
    """A job document example as the device takes it: within the API's size, and valid for its format's
    schema (ours, job_document.schema.json, or the Device Client's)."""
    doc = documents.load(text)
    if "schema" in doc:
        schema_text = (documents.resources.files("ggdefender.remediation")
                       .joinpath("job_document.schema.json").read_text())
        schema = json.loads(schema_text)
    else:
        schema = documents.DEVICE_CLIENT_SCHEMA
    errors = [f"{where}: {'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in jsonschema.Draft202012Validator(schema).iter_errors(doc)]
    assert errors == []


def test_the_docs_have_the_examples_we_expect_to_check():
    """Not vacuous: the marked examples of each shape are found (a broken fence parser would find none)."""
    kinds = [b[3] for b in marked()]
    assert kinds.count(("iot", "CreateSecurityProfile", None)) >= 3
    assert kinds.count(("iot", "CreateJob", "document")) >= 5
    assert ("greengrassv2", "CreateDeployment", None) in kinds
    assert ("iot-jobs-data", "UpdateJobExecution", "statusDetails") in kinds
    assert VIOLATION_EVENT in kinds


@pytest.mark.parametrize("where, lang, text, marker", marked(), ids=[b[0] for b in marked()])
def test_marked_example_is_valid(where, lang, text, marker):
    service, operation, member = marker
    shape = aws_models.input_shape(service, operation, member, output=marker == VIOLATION_EVENT)
    value = text if shape.type_name == "string" else parsed(text)
    assert value is not None, f"{where}: the marked example is not JSON"
    assert shape_problems(value, marker, where) == []
    if shape.type_name == "string":
        assert recognise(parsed(text)) == marker, f"{where}: marked {marker} but does not look like one"
    if marker == ("iot", "CreateJob", "document"):
        check_job_document(text, where)


def test_every_aws_shaped_example_is_marked_and_every_nested_one_is_valid():
    unmarked, problems, checked = [], [], 0
    for where, _lang, text, marker in blocks():
        doc = parsed(text)
        if doc is None:
            continue
        shape = recognise(doc)
        if shape and marker is None:
            unmarked.append(f"{where}: looks like {' '.join(filter(None, shape))}; put "
                            f"<!-- aws-shape: {' '.join(filter(None, shape))} --> on the line before it")
        elif shape and marker != shape:
            unmarked.append(f"{where}: marked {marker} but looks like {shape}")
        for path, obj, shape in nested(doc):
            checked += 1
            value = json.dumps(obj, indent=2) if shape[2] == "document" else obj
            problems += shape_problems(value, shape, f"{where} {path}")
    assert unmarked == [] and problems == []
    assert checked >= 1  # the Detect configuration example in configuration.md holds a profile


# -- `aws ...` commands in shell blocks ----------------------------------------------------------------------
# The AWS CLI builds an operation's input from its options: `--member-name` is the member whose name
# botocore.xform_name(name, "-") gives, a boolean is `--flag` / `--no-flag`, a list takes the values up to the
# next option, a structure or map is JSON or shorthand `a=1,b=x`. What this reading does not know (another
# global option, nested shorthand) fails rather than being skipped. A `file://` value is a file the docs show
# as an example of its own (checked above): the member counts as given, its value is not read here.
GLOBAL_OPTIONS = {"--region", "--profile", "--output", "--query", "--endpoint-url"}
SHELL_VALUES = {"$(date +%s)": "1764000000"}
_SHELL_VARIABLE = re.compile(r"^([A-Z_][A-Z0-9_]*)=(\S+)$")
FILE_VALUE = object()  # a member given as file://...


def shell_commands(text):
    """The `aws` commands of a shell block: continuation lines joined, comments dropped, `NAME=value`
    variables and the few command substitutions in SHELL_VALUES expanded."""
    variables, commands = {}, []
    for line in text.replace("\\\n", " ").split("\n"):
        if not re.match(r"\s*(aws\s|[A-Z_][A-Z0-9_]*=)", line):
            continue  # other tools' commands (their quoting is theirs)
        for src, dst in SHELL_VALUES.items():
            line = line.replace(src, dst)
        words = [re.sub(r"\$\{?([A-Z_][A-Z0-9_]*)\}?", lambda m: variables.get(m.group(1), m.group(0)), w)
                 for w in shlex.split(line, comments=True)]
        if len(words) == 1 and _SHELL_VARIABLE.match(words[0]):
            name, value = _SHELL_VARIABLE.match(words[0]).groups()
            variables[name] = value
        elif words:
            commands.append(words)
    return commands


def _operation(model, command):
    for name in model.operation_names:
        if botocore.xform_name(name, "-") == command:
            return name
    raise AssertionError(f"aws {model.service_name} {command}: no such operation")


def _cli_value(shape, words, where):
    kind = shape.type_name
    if kind == "list":
        return [_cli_value(shape.member, [w], where) for w in words]
    assert len(words) == 1, f"{where}: expected one value, got {words}"
    word = words[0]
    if kind in ("structure", "map"):
        if word[:1] in "{[":
            return json.loads(word)
        pairs = [p.split("=", 1) for p in word.split(",")]
        assert all(len(p) == 2 and not any(c in p[1] for c in "{[=") for p in pairs), \
            f"{where}: shorthand {word!r} is not of the form a=1,b=x"
        if kind == "map":
            return dict(pairs)
        assert all(k in shape.members for k, _ in pairs), f"{where}: {word!r} names a member {shape.name} lacks"
        return {k: _cli_value(shape.members[k], [v], where) for k, v in pairs}
    if kind in ("integer", "long"):
        return int(word)
    if kind in ("float", "double"):
        return float(word)
    return word


def cli_input(words, where):
    """(service, operation, input) of one `aws <service> <command> ...` command; None for an input read
    whole from a file (`--cli-input-json file://...`, the file being an example of its own)."""
    assert len(words) >= 3 and words[0] == "aws", f"{where}: not an aws command: {words}"
    model = aws_models.service_model(CLI_SERVICES.get(words[1], words[1]))
    operation = _operation(model, words[2])
    shape = model.operation_model(operation).input_shape
    options = {botocore.xform_name(m, "-"): m for m in shape.members}
    if "--cli-input-json" in words:
        return None
    document, i = {}, 3
    while i < len(words):
        option = words[i]
        assert option.startswith("--"), f"{where}: unexpected word {option!r}"
        values = list(itertools.takewhile(lambda w: not w.startswith("--"), words[i + 1:]))
        i += 1 + len(values)
        if option in GLOBAL_OPTIONS:
            continue
        name = option[2:]
        flag = options.get(name[3:]) if name.startswith("no-") else None
        negated = flag is not None and shape.members[flag].type_name == "boolean"
        member = flag if negated else options.get(name)
        assert member, f"{where}: aws {words[1]} {words[2]} has no option {option}"
        member_shape = shape.members[member]
        if member_shape.type_name == "boolean":
            assert not values, f"{where}: {option} takes no value"
            document[member] = not negated
        elif len(values) == 1 and values[0].startswith("file://"):
            document[member] = FILE_VALUE
        else:
            assert values, f"{where}: {option} needs a value"
            document[member] = _cli_value(member_shape, values, f"{where} {option}")
    return model.service_name, operation, document


# the CLI's own commands that are no API operation (fleet.md's `cloudformation deploy` is checked against the
# template's parameters by tests/unit/fleet/test_cloudformation.py)
CLI_CUSTOMIZATIONS = {("cloudformation", "deploy")}
CLI_SERVICES = {"s3api": "s3"}  # the CLI's name for a botocore service, where the two differ


def cli_commands():
    found = []
    for where, lang, text, _marker in blocks():
        if lang in ("sh", "bash", "shell", ""):
            found += [(where, words) for words in shell_commands(text)
                      if words[0] == "aws" and tuple(words[1:3]) not in CLI_CUSTOMIZATIONS]
    return found


@pytest.mark.parametrize("where, words", cli_commands(), ids=[f"{w} {' '.join(c[1:3])}" for w, c in cli_commands()])
def test_aws_cli_example_is_a_valid_input(where, words):
    parsed_input = cli_input(words, where)
    if parsed_input is None:
        return
    service, operation, document = parsed_input
    from_files = [k for k, v in document.items() if v is FILE_VALUE]
    for key in from_files:  # given, not read: a valid stand-in keeps it from counting as missing
        del document[key]
    problems = [p for p in aws_models.problems(document, service, operation, path=where)
                if not any(f"required member {k!r}" in p for k in from_files)]
    assert problems == []


def test_the_cli_reading_is_not_vacuous():
    commands = [" ".join(words[:3]) for _where, words in cli_commands()]
    assert commands.count("aws iot create-job") >= 2 and "aws iot describe-job-execution" in commands
    assert commands.count("aws iot create-custom-metric") >= 8
    [command] = shell_commands("J=job-$(date +%s)\naws iot create-job --job-id $J --targets a b \\\n"
                               " --timeout-config inProgressTimeoutInMinutes=10 --document file://x.json # c")
    service, operation, doc = cli_input(command, "t")
    assert (service, operation) == ("iot", "CreateJob")
    assert doc["jobId"] == "job-1764000000" and doc["targets"] == ["a", "b"] and doc["document"] is FILE_VALUE
    assert doc["timeoutConfig"] == {"inProgressTimeoutInMinutes": 10}
    with pytest.raises(AssertionError, match="no option --jobid"):
        cli_input(["aws", "iot", "create-job", "--jobid", "x"], "t")
    with pytest.raises(AssertionError, match="no such operation"):
        cli_input(["aws", "iot", "make-job"], "t")
    assert aws_models.problems(cli_input(["aws", "iot", "create-custom-metric", "--metric-name", "a b",
                                          "--metric-type", "number"], "t")[2], "iot", "CreateCustomMetric")


def test_a_broken_example_would_be_caught():
    """The same checks refuse an unmarked profile and a bad nested one."""
    profile = {"securityProfileName": "bad name", "behaviors": []}
    assert recognise(profile) == ("iot", "CreateSecurityProfile", None)
    [(path, obj, shape)] = list(nested({"Detect": {"Profiles": [profile]}}))
    assert path == "$.Detect.Profiles[0]"
    assert aws_models.problems(obj, *shape)
    with pytest.raises(AssertionError, match="format-disk. is not one of"):
        check_job_document('{"schema": "ggdefender.remediation/1", "steps": [{"operation": "format-disk"}]}', "x")
