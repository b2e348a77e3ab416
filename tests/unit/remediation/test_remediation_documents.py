"""Job document validation, with hostile documents: every one must be REJECTED before anything runs."""

import json

import pytest

from ggdefender.remediation import config, documents
from ggdefender.remediation.documents import DocumentError

OURS = "ggdefender.remediation/1"
SETTINGS = config.parse({"HandlerDirectory": "/opt/handlers", "HandlerUser": "nobody"})


def ours(*steps, **extra):
    return dict({"schema": OURS, "steps": list(steps)}, **extra)


def step(operation, **arguments):
    return {"operation": operation, "arguments": arguments}


def dc(*actions, **extra):
    return dict({"version": "1.0", "steps": [{"action": a} for a in actions]}, **extra)


def handler(name="stop-port.sh", **inp):
    return {"name": "Step", "type": "runHandler", "input": dict({"handler": name}, **inp)}


def test_seed_document_parses():
    plan = documents.parse(ours(step("stop-listener", port=8888)), SETTINGS)
    assert plan.format == "ggdefender" and plan.steps[0].arguments == {"port": 8888}
    assert plan.steps[0].target() == "tcp/8888"


def test_integral_floats_become_ints_for_ports_and_pids():
    # 8888.0 is an integer to JSON Schema, and Greengrass turns configured numbers (mitigation rules) into floats
    plan = documents.parse(ours(step("stop-listener", port=8888.0), step("kill-process", pid=4242.0)), SETTINGS)
    assert [s.arguments for s in plan.steps] == [{"port": 8888}, {"pid": 4242}]
    assert type(plan.steps[1].arguments["pid"]) is int and plan.steps[0].target() == "tcp/8888"
    with pytest.raises(DocumentError, match="pid"):
        documents.parse(ours(step("kill-process", pid=4242.5)), SETTINGS)


def test_string_form_is_accepted_like_the_https_plane():
    plan = documents.parse(json.dumps(ours(step("collect-now"), dryRun=True)), SETTINGS)
    assert plan.dry_run


@pytest.mark.parametrize("doc, fragment", [
    (ours(step("stop-listener", port="8888")), "arguments.port"),  # wrong type
    (ours(step("stop-listener", port=0)), "arguments.port"),
    (ours(step("stop-listener", port=70000)), "arguments.port"),
    (ours(step("stop-listener", port=10 ** 30)), "arguments.port"),  # huge
    (ours(step("stop-listener", port=8888, protocol="sctp")), "protocol"),
    (ours(step("stop-listener", port=8888, gracePeriodSeconds=1e9)), "gracePeriodSeconds"),
    (ours(step("stop-listener", port=8888, extra=1)), "Additional properties"),
    (ours(step("kill-process", pid=1)), "arguments.pid"),
    (ours(step("kill-process", pid=-5)), "arguments.pid"),
    (ours(step("kill-process", pid=True)), "arguments.pid"),
    (ours(step("kill-process", pid=1234, name="x")), "arguments"),
    (ours(step("kill-process", name="sh; rm -rf /")), "arguments.name"),
    (ours(step("kill-process", name="../../bin/sh")), "arguments.name"),
    (ours(step("kill-process", pid=1234, signal="SIGSTOP")), "signal"),
    (ours(step("kill-process", pid=1234, signal="9")), "signal"),
    (ours(step("block-ip", address="1.2.3.4; nft flush ruleset")), "address"),
    (ours(step("block-ip", address="0.0.0.0/0")), "too broad"),
    (ours(step("block-ip", address="127.0.0.1")), "loopback"),
    (ours(step("block-ip", address="10.0.0.1/8")), "not a valid"),
    (ours(step("set-config", section="Remediation", values={"AllowRunCommand": True})), "never be changed"),
    (ours(step("set-config", section="Supervisor", values={"CollectorUser": "root"})), "never be changed"),
    (ours(step("set-config", section="Collector", values={"Source": "x"})), "SetConfigAllowedKeys"),
    (ours(step("set-config", section="Collector", values={"SampleIntervalSeconds": {"a": 1}})), "values"),
    (ours(step("restart-component", component="aws.greengrass.Nucleus")), "RestartableComponents"),
    (ours(step("format-disk")), "operation"),
    (ours({"operation": "collect-now", "shell": "id"}), "Additional properties"),
    (ours(), "steps"),
    (ours(*[step("collect-now")] * 11), "steps"),
    ({"schema": "ggdefender.remediation/2", "steps": [step("collect-now")]}, "schema"),
    (ours(step("collect-now"), dryRun="yes"), "dryRun"),
    ({"steps": [step("collect-now")]}, "unrecognised"),
    (["not", "an", "object"], "JSON object"),
])
def test_hostile_documents_are_rejected(doc, fragment):
    with pytest.raises(DocumentError) as err:
        documents.parse(doc, SETTINGS)
    assert fragment in str(err.value)


def test_oversize_document_is_rejected_with_the_limit():
    doc = ours(step("collect-now"), comment="x" * 200)
    doc["padding"] = "y" * 40000
    with pytest.raises(DocumentError, match="32768"):
        documents.parse(doc, SETTINGS)
    with pytest.raises(DocumentError, match="32768"):
        documents.parse(json.dumps(doc), SETTINGS)


def test_malformed_json_and_deep_nesting_are_rejected():
    with pytest.raises(DocumentError, match="not valid JSON"):
        documents.parse('{"schema": ', SETTINGS)
    with pytest.raises(DocumentError):
        documents.parse("[" * 5000 + "]" * 5000, SETTINGS)
    with pytest.raises(DocumentError, match="UTF-8"):
        documents.parse(b"\xff\xfe", SETTINGS)


def test_operation_not_in_allow_list_is_rejected():
    narrow = config.parse({"AllowedOperations": ["collect-now"]})
    with pytest.raises(DocumentError, match="not allowed on this device"):
        documents.parse(ours(step("stop-listener", port=8888)), narrow)


def test_device_client_document_parses_with_argv_convention():
    plan = documents.parse(dc(handler(args=["8888"], path="default"), includeStdOut="true"), SETTINGS)
    assert plan.format == "device-client" and plan.include_stdout
    s = plan.steps[0]
    assert s.operation == "runHandler" and s.arguments == {"handler": "stop-port.sh", "args": ["8888"]}


def test_device_client_final_step_conditions_and_legacy_form():
    plan = documents.parse(dict(dc(handler()), finalStep={"action": handler("report.sh")},
                                conditions=[{"key": "k", "value": ["v"]}]), SETTINGS)
    assert plan.final_step.arguments["handler"] == "report.sh" and plan.notes
    legacy = documents.parse({"operation": "restart.sh", "args": ["now"], "allowStdErr": 2}, SETTINGS)
    assert legacy.format == "device-client-legacy" and legacy.steps[0].allow_stderr == 2


@pytest.mark.parametrize("name", ["../etc/passwd", "/bin/sh", "a/b.sh", "..", ".hidden", "sh -c", "x\x00y",
                                  "$(id)", "a;b", "`id`"])
def test_path_traversal_and_shell_metacharacters_in_handler_names(name):
    with pytest.raises(DocumentError):
        documents.parse(dc(handler(name)), SETTINGS)


def test_handler_path_other_than_the_configured_directory_is_rejected():
    with pytest.raises(DocumentError, match="HandlerDirectory"):
        documents.parse(dc(handler(path="/tmp")), SETTINGS)
    assert documents.parse(dc(handler(path="/opt/handlers/")), SETTINGS).steps


def test_run_handler_needs_a_configured_directory():
    with pytest.raises(DocumentError, match="HandlerDirectory"):
        documents.parse(dc(handler()), config.parse({}))


def test_run_handler_without_input_is_rejected_cleanly():
    with pytest.raises(DocumentError, match="input"):
        documents.parse(dc({"name": "x", "type": "runHandler"}), SETTINGS)


def test_unresolved_placeholders_are_rejected():
    with pytest.raises(DocumentError, match="placeholder"):
        documents.parse(dc(handler(args=["${aws:iot:parameter:services}"])), SETTINGS)


def test_run_command_is_off_unless_explicitly_allowed():
    cmd = {"name": "c", "type": "runCommand", "input": {"command": "systemctl,stop,foo.service"}}
    with pytest.raises(DocumentError, match="AllowRunCommand"):
        documents.parse(dc(cmd), SETTINGS)
    allowed = config.parse({"AllowRunCommand": True, "RunCommandExecutables": ["/usr/bin/systemctl"],
                            "HandlerUser": "nobody"})
    plan = documents.parse(dc(cmd), allowed)
    assert plan.steps[0].arguments["argv"] == ["systemctl", "stop", "foo.service"]


def test_split_command_keeps_metacharacters_as_plain_arguments():
    assert documents.split_command(r"echo, a\,b ,$(id); rm -rf /") == ["echo", "a,b", "$(id); rm -rf /"]
    with pytest.raises(DocumentError, match="whitespace"):
        documents.split_command("rm -rf,/")


def test_local_request_becomes_one_of_our_documents():
    doc = documents.request_to_document({"requestId": "r1", "operation": "stop-listener",
                                         "arguments": {"port": 8888}, "reason": "x", "violationId": "v"})
    assert documents.parse(doc, SETTINGS).steps[0].operation == "stop-listener"
    with pytest.raises(DocumentError, match="unknown field"):
        documents.request_to_document({"requestId": "r1", "operation": "x", "command": "sh"})


def test_device_client_comments_and_unknown_keys_are_ignored_and_recorded():
    doc = dc(dict(handler(args=["8888"], _comment="in input"), _comment="in the action"),
             _comment="top level", includeStdOut="true")
    doc["steps"][0]["note"] = "in the step"
    plan = documents.parse(doc, SETTINGS)
    assert plan.steps[0].arguments == {"handler": "stop-port.sh", "args": ["8888"]}
    [note] = plan.notes
    for where in ("$._comment", "$.steps[0].note", "$.steps[0].action._comment", "$.steps[0].action.input._comment"):
        assert where in note
    legacy = documents.parse({"operation": "restart.sh", "_comment": "x"}, SETTINGS)
    assert "$._comment" in legacy.notes[0]
    # the fields the Device Client reads are still checked strictly
    with pytest.raises(DocumentError, match="allowStdErr"):
        documents.parse(dc(dict(handler(), allowStdErr="many", _comment="x")), SETTINGS)


def test_many_unknown_keys_are_noted_boundedly():
    doc = dc(handler(), **{f"_c{i}": "x" for i in range(50)})
    [note] = documents.parse(doc, SETTINGS).notes
    assert "and 42 more" in note and len(note) < 300


def test_our_format_stays_strict_about_unknown_keys():
    with pytest.raises(DocumentError, match="_comment"):
        documents.parse(ours(step("collect-now"), _comment="x"), SETTINGS)


AWS_REBOOT = {"version": "1.0", "steps": [{"action": {"name": "Reboot", "type": "runHandler", "runAsUser": "",
                                                     "input": {"handler": "reboot.sh", "path": ""}}}]}


def test_aws_reboot_template_needs_reboot_allow_listed():
    with pytest.raises(DocumentError, match='AWS-Reboot.*"reboot" is not in Remediation.AllowedOperations'):
        documents.parse(AWS_REBOOT, SETTINGS)  # not in the default allow-list
    with pytest.raises(DocumentError, match="AWS-Reboot"):
        documents.parse({"operation": "reboot.sh"}, SETTINGS)


def test_aws_reboot_template_becomes_the_reboot_operation_when_allowed():
    allowed = config.parse({"AllowedOperations": ["reboot"]})  # no HandlerDirectory needed: no handler file runs
    plan = documents.parse(AWS_REBOOT, allowed)
    assert [(s.operation, s.name, s.arguments) for s in plan.steps] == [("reboot", "Reboot", {})]
    assert documents.parse(ours({"operation": "reboot"}), allowed).steps[0].operation == "reboot"
    with pytest.raises(DocumentError):
        documents.parse(ours({"operation": "reboot", "arguments": {"now": True}}), allowed)
