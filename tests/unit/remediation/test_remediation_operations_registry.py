"""Each remediation operation declares itself once (its module's DECLARATION); every other place that names the
operations is derived from the declarations or, where it must stay a literal (the default configuration
process B loads without the operation modules, the user-facing schema file, the docs), equals them here."""

import json
import os
import re
from importlib import resources

import pytest

from ggdefender import defaults
from ggdefender.remediation import config, documents, operations

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
REGENERATE = ("regenerate it: python -c 'import json; from ggdefender.remediation import operations as o; "
              "p=\"components/ggdefender/remediation/job_document.schema.json\"; "
              "open(p,\"w\").write(json.dumps(o.job_document_schema(json.load(open(p))), indent=2)+\"\\n\")'")


def _doc(name):
    with open(os.path.join(ROOT, "docs", name), encoding="utf-8") as fh:
        return fh.read()


def test_every_declared_operation_is_a_complete_module():
    assert operations.names(), "no operation found"
    for name in operations.names():
        module = operations.get(name)
        assert module.DECLARATION.name == name == module.NAME
        assert callable(module.target) and callable(module.run)
        if module.DECLARATION.on_interrupt == "check":
            assert callable(module.after_restart), name
    with pytest.raises(KeyError):
        operations.get("no-such-operation")


def test_schema_file_is_what_the_declarations_make():
    text = resources.files("ggdefender.remediation").joinpath("job_document.schema.json").read_text()
    on_file = json.loads(text)
    assert on_file == operations.job_document_schema(on_file), REGENERATE
    # no leftover argument schema of an operation that is gone
    referenced = set(re.findall(r'"#/\$defs/([^"]+)"', text))
    assert set(on_file["$defs"]) == referenced | {"step"}


def test_schema_accepts_each_operations_arguments_and_refuses_unknown_ones():
    settings = config.parse({"AllowedOperations": list(operations.names())})
    samples = {"block-ip": {"address": "203.0.113.7"}, "unblock-ip": {"address": "203.0.113.7"},
               "kill-process": {"pid": 4242}, "stop-listener": {"port": 8888},
               "set-config": {"section": "Collector", "values": {"SampleIntervalSeconds": 60}}}
    for name in operations.names():
        step = {"operation": name}
        if name in samples:
            step["arguments"] = samples[name]
        plan = documents.parse(json.dumps({"schema": documents.SCHEMA_ID, "steps": [step]}), settings)
        assert plan.all_steps()[0].operation == name
        with pytest.raises(documents.DocumentError):
            documents.parse(json.dumps({"schema": documents.SCHEMA_ID, "steps": [
                dict(step, arguments=dict(step.get("arguments", {}), bogus=1))]}), settings)
        if operations.declaration(name).arguments_required:
            with pytest.raises(documents.DocumentError):
                documents.parse(json.dumps({"schema": documents.SCHEMA_ID, "steps": [{"operation": name}]}),
                                settings)


def test_default_allow_list_equals_the_declarations():
    listed = defaults.DEFAULTS["Remediation"]["AllowedOperations"]
    derived = operations.default_allowed() + ("runHandler",)
    assert tuple(listed) == derived, "defaults.py Remediation.AllowedOperations differs from the declarations"
    assert config.RemediationSettings().allowed_operations == derived


def test_config_accepts_exactly_the_declared_operations():
    config.parse({"AllowedOperations": list(operations.names()) + list(config.DEVICE_CLIENT_OPERATIONS)})
    with pytest.raises(config.s.ConfigError, match="unknown operation 'no-such-operation'"):
        config.parse({"AllowedOperations": ["no-such-operation"]})


def test_docs_operations_table_lists_exactly_the_declared_operations():
    text = _doc("jobs.md")
    table = text.split("### Operations", 1)[1].split("\n\n", 2)[1]
    rows = re.findall(r"^\| `([a-z-]+)` \|", table, re.M)
    assert sorted(rows) == sorted(operations.names())


def test_docs_resume_rule_names_exactly_the_rerun_operations():
    text = " ".join(_doc("jobs.md").split())
    sentence = re.search(r"an interrupted step is run again if it is idempotent \(([^)]*)\)", text).group(1)
    rerun = {n for n in operations.names() if operations.declaration(n).on_interrupt == "rerun"}
    assert set(re.findall(r"`([a-z-]+)`", sentence)) == rerun



def test_mitigation_operations_are_declared_operations_with_a_typed_target():
    # kept a literal in config.py: process B (Detect) reads it without loading the operation modules
    from ggdefender.detect.mitigation import TARGET_KEYS

    assert set(config.MITIGATION_OPERATIONS) <= set(operations.names())
    assert set(config.MITIGATION_OPERATIONS) == set(TARGET_KEYS)
