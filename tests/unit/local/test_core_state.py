"""Core without a server: identity, configuration store, local pub/sub and IoT Core routing."""

import asyncio
import threading

import pytest

from ggdefender.local.nucleus.core import (Core, FailedUpdateCondition, topic_matches, validate_filter)


@pytest.fixture
def core():
    c = Core(thing_name="thing-1")
    c.events = []
    c.on_event = c.events.append
    return c


def test_tokens_are_16_upper_case_and_reissued(core):
    t1 = core.register_component("A", "1.0.0", {"x": 1})
    assert len(t1) == 16 and t1 == t1.upper() and core.authenticate(t1) == "A"
    t2 = core.register_component("A", "1.0.1", {"x": 2})
    assert t2 != t1 and core.authenticate(t1) is None and core.authenticate(t2) == "A"
    assert core.components()["A"].version == "1.0.1" and core.get_config("A") == {"x": 2}
    core.unregister_component("A")
    assert core.authenticate(t2) is None and "A" not in core.components()
    with pytest.raises(KeyError):
        core.get_config("A")
    assert core.authenticate(None) is None and core.authenticate("") is None


def test_register_rejects_bad_input(core):
    with pytest.raises(ValueError, match="configuration must be an object"):
        core.register_component("A", "1", [1])
    with pytest.raises(ValueError, match="non-empty"):
        core.register_component("", "1", {})


def test_invalid_policy_is_reported_not_fatal(core):
    core.register_component("A", "1", {"accessControl": {"aws.greengrass.ipc.pubsub": {
        "p": {"operations": ["*"], "resources": ["a?"]}}}})
    assert core.components()["A"].policy_errors
    assert any(e["kind"] == "policy-error" for e in core.events)


def test_state_changes_call_the_hook(core):
    seen = []
    core.on_state_change = lambda n, s: seen.append((n, s))
    core.register_component("A", "1", {})
    core.set_state("A", "RUNNING")
    core.set_state("A", "RUNNING")  # unchanged: no second call
    assert seen == [("A", "RUNNING")]
    with pytest.raises(ValueError, match="unknown lifecycle state"):
        core.set_state("A", "DANCING")


def test_config_get_merge_and_events(core):
    core.register_component("A", "1", {"Collector": {"Interval": 300}, "list": [1, 2]})
    got = []
    core.subscribe_config("A", ["Collector"], lambda comp, path: got.append(path))
    core.merge_config("A", [], {"Collector": {"Interval": 60, "Extra": {"deep": True}}, "other": 1})
    assert core.get_config("A", ["Collector", "Interval"]) == 60
    assert core.get_config("A", ["Collector", "Extra"]) == {"deep": True}
    assert sorted(got) == [["Collector", "Extra", "deep"], ["Collector", "Interval"]]
    got.clear()
    core.merge_config("A", ["Collector", "Interval"], 60)  # same value: no event
    assert got == []
    with pytest.raises(KeyError):
        core.get_config("A", ["missing"])
    value = core.get_config("A", [])
    value["list"].append(3)  # a copy: the store is not changed through it
    assert core.get_config("A", ["list"]) == [1, 2]


def test_update_configuration_nucleus_rules(core):
    core.register_component("A", "1", {"n": {"v": 1}, "leaf": 5})
    core.update_configuration("A", ["n"], {"v": 2}, timestamp=2e9)
    assert core.get_config("A", ["n", "v"]) == 2
    with pytest.raises(FailedUpdateCondition, match="older"):
        core.update_configuration("A", ["n"], {"v": 3}, timestamp=1.0)
    with pytest.raises(ValueError, match="accessControl"):
        core.update_configuration("A", [], {"accessControl": {}}, timestamp=3e9)
    with pytest.raises(ValueError, match="accessControl"):
        core.update_configuration("A", ["accessControl"], {"x": 1}, timestamp=3e9)
    with pytest.raises(ValueError, match="names a value, not an object"):
        core.update_configuration("A", ["leaf"], {"leaf": 6}, timestamp=3e9)
    core.update_configuration("A", [], {"leaf": 6}, timestamp=3e9)
    assert core.get_config("A", ["leaf"]) == 6
    core.update_configuration("A", ["new", "branch"], {"k": "v"}, timestamp=3e9)
    assert core.get_config("A", ["new"]) == {"branch": {"k": "v"}}


def test_newer_leaf_wins_over_older_merge(core):
    core.register_component("A", "1", {})
    core.merge_config("A", [], {"a": 1}, timestamp=100.0)
    core.merge_config("A", [], {"a": 2, "b": 2}, timestamp=50.0)
    assert core.get_config("A") == {"a": 1, "b": 2}


def test_reset_config(core):
    defaults = {"a": {"b": 1, "c": 2}, "d": 3}
    core.register_component("A", "1", defaults)
    core.merge_config("A", [], {"a": {"b": 10, "x": 1}, "d": 30, "e": 1})
    core.reset_config("A", "/a/b", defaults)
    assert core.get_config("A", ["a"]) == {"b": 1, "c": 2, "x": 1}
    core.reset_config("A", "/e", defaults)  # not in defaults: removed
    assert "e" not in core.get_config("A")
    core.reset_config("A", "", defaults)
    assert core.get_config("A") == defaults
    with pytest.raises(ValueError, match="must start with '/'"):
        core.reset_config("A", "a", defaults)


def test_access_control_merge_reloads_policies(core):
    core.register_component("A", "1", {})
    svc, op = "aws.greengrass.ipc.pubsub", "aws.greengrass#PublishToTopic"
    assert not core.is_authorized("A", svc, op, "t")
    core.merge_config("A", [], {"accessControl": {svc: {"p": {"operations": [op], "resources": ["t"]}}}})
    assert core.is_authorized("A", svc, op, "t")
    assert any(e["kind"] == "denied" for e in core.events)


@pytest.mark.parametrize("flt,topic,match", [
    ("a/b", "a/b", True), ("a/+", "a/b", True), ("a/+", "a/b/c", False), ("a/#", "a", True),
    ("a/#", "a/b/c", True), ("#", "a", True), ("+/b", "a/b", True), ("#", "$aws/x", False),
    ("+/x", "$aws/x", False), ("$aws/things/+/jobs/#", "$aws/things/t/jobs/notify", True),
    ("a/+/c", "a//c", True), ("a/b", "a/b/", False),
])
def test_topic_matching(flt, topic, match):
    assert topic_matches(flt, topic) is match


@pytest.mark.parametrize("flt,ok", [("a/#", True), ("a/#/b", False), ("a+", False), ("", False), ("+", True)])
def test_filter_validation(flt, ok):
    assert (validate_filter(flt) is None) is ok


def test_local_receive_modes(core):
    got = {"exact": [], "wild": [], "others": []}
    core.subscribe_local("A", "t/1", lambda t, m, s: got["exact"].append((t, m, s)))
    core.subscribe_local("A", "t/+", lambda t, m, s: got["wild"].append(s))  # wildcard: others only by default
    core.subscribe_local("A", "t/1", lambda t, m, s: got["others"].append(s), "RECEIVE_MESSAGES_FROM_OTHERS")
    core.publish_local("t/1", {"v": 1}, source="A")
    core.publish_local("t/1", b"\x00", source="B")
    assert got == {"exact": [("t/1", {"v": 1}, "A"), ("t/1", b"\x00", "B")], "wild": ["B"], "others": ["B"]}


def test_unsubscribe(core):
    got = []
    unsub = core.subscribe_local("A", "t", lambda *a: got.append(a))
    unsub()
    unsub()  # idempotent
    core.publish_local("t", {}, source="B")
    assert got == [] and core.subscription_counts()["local"] == 0


def test_iot_routing_component_and_cloud(core):
    comp, cloud = [], []
    core.subscribe_iot_component("A", "$aws/things/thing-1/jobs/#", 1, lambda t, p, s: comp.append((t, p, s)))
    stop = core.subscribe_iot("$aws/things/+/defender/metrics/json", lambda t, p, s: cloud.append((t, p, s)))
    core.publish_iot("$aws/things/thing-1/defender/metrics/json", b"{}", source="A")
    core.publish_iot("$aws/things/thing-1/jobs/notify", "x", source="cloud")
    assert cloud == [("$aws/things/thing-1/defender/metrics/json", b"{}", "A")]
    assert comp == [("$aws/things/thing-1/jobs/notify", b"x", "cloud")]
    stop()
    core.publish_iot("$aws/things/thing-1/defender/metrics/json", b"{}")
    assert len(cloud) == 1
    with pytest.raises(ValueError, match="invalid topic filter"):
        core.subscribe_iot("a/#/b", lambda *a: None)


def test_deliveries_from_other_threads_run_on_the_attached_loop(core):
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        core.attach_loop(loop, thread.ident)
        seen = []
        core.subscribe_iot("a", lambda t, p, s: seen.append(threading.get_ident()))
        core.publish_iot("a", b"1")
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result(10)
        assert seen == [thread.ident]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_restart_request(core):
    core.register_component("A", "1", {})
    assert core.request_restart("A") is False  # no runtime hook: FAILED
    core.on_restart_request = lambda name: name == "A"
    assert core.request_restart("A") is True
    with pytest.raises(KeyError):
        core.request_restart("B")


def test_thing_name_rule():
    from ggdefender.local.nucleus.core import thing_name_problem

    assert thing_name_problem("ggdefender-local") is None and thing_name_problem("a:b_c-1") is None
    for bad in ("", "..", ".", "a/b", "a/#", "+", "x" * 129, "t\n", None):
        assert "thing name" in thing_name_problem(bad)
