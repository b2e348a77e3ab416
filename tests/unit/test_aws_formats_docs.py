"""The AWS-shaped examples in docs/*.md, checked against botocore's service models (tests/aws_models.py).

A fenced block is checked as the input (or one member of the input) of an AWS operation when the line
before it is a marker, `<!-- aws-shape: <service> <Operation> [member] -->`, e.g.
`<!-- aws-shape: iot CreateSecurityProfile -->` or `<!-- aws-shape: iot CreateJob document -->` (a string
member takes the block's text as written, as `--document file://...` does). So that a new example cannot go
unchecked, every JSON block is also searched for objects that look like one of the shapes below: one that is
a whole block must carry the marker, and one nested in a larger example (a profile inside a Detect
configuration) is checked where it stands.
"""

import json
import os
import re
from functools import lru_cache

import jsonschema
import pytest

import aws_models
from ggdefender.remediation import documents

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
    return None


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


@pytest.mark.parametrize("where, lang, text, marker", marked(), ids=[b[0] for b in marked()])
def test_marked_example_is_valid(where, lang, text, marker):
    service, operation, member = marker
    shape = aws_models.input_shape(service, operation, member)
    value = text if shape.type_name == "string" else parsed(text)
    assert value is not None, f"{where}: the marked example is not JSON"
    aws_models.check(value, service, operation, member, path=where)
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
        for path, obj, (service, operation, member) in nested(doc):
            checked += 1
            value = json.dumps(obj, indent=2) if member == "document" else obj
            problems += aws_models.problems(value, service, operation, member, path=f"{where} {path}")
    assert unmarked == [] and problems == []
    assert checked >= 1  # the Detect configuration example in configuration.md holds a profile


def test_a_broken_example_would_be_caught():
    """The same checks refuse an unmarked profile and a bad nested one."""
    profile = {"securityProfileName": "bad name", "behaviors": []}
    assert recognise(profile) == ("iot", "CreateSecurityProfile", None)
    [(path, obj, shape)] = list(nested({"Detect": {"Profiles": [profile]}}))
    assert path == "$.Detect.Profiles[0]"
    assert aws_models.problems(obj, *shape)
    with pytest.raises(AssertionError, match="format-disk. is not one of"):
        check_job_document('{"schema": "ggdefender.remediation/1", "steps": [{"operation": "format-disk"}]}', "x")
