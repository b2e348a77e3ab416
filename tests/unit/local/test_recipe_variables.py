"""Recipe variables in scripts and configuration for `ggdefender local`."""

from ggdefender.local.nucleus import recipe_variables as v
from test_recipe import _doc  # the same recipe the parsing tests use


def _ctx(**over):
    base = dict(name="com.example.Hello", configuration=_doc()["ComponentConfiguration"]["DefaultConfiguration"],
                artifacts_path="/gg/packages/artifacts/com.example.Hello/1.0.0",
                decompressed_path="/gg/packages/artifacts-unarchived/com.example.Hello/1.0.0",
                work_path="/gg/work/com.example.Hello", root_path="/gg", thing_name="myThing")
    base.update(over)
    return v.VariableContext(**base)


def test_variables():
    dep = _ctx(name="com.example.Dep", configuration={"server": {"port": 8080}}, work_path="/gg/work/com.example.Dep")
    ctx = _ctx(dependencies={"com.example.Dep": dep})
    text = ("{artifacts:path}|{artifacts:decompressedPath}|{work:path}|{kernel:rootPath}|{iot:thingName}|"
            "{configuration:/Greeting}|{configuration:/Nested}|{configuration:/Flag}|{configuration:/Nothing}|"
            "{configuration:/Nested/B/1}|{com.example.Dep:configuration:/server/port}|{com.example.Dep:work:path}")
    assert v.interpolate(text, ctx).split("|") == [
        "/gg/packages/artifacts/com.example.Hello/1.0.0",
        "/gg/packages/artifacts-unarchived/com.example.Hello/1.0.0",
        "/gg/work/com.example.Hello", "/gg", "myThing", "hi", '{"A":1,"B":[1,2]}', "true", "null", "2",
        "8080", "/gg/work/com.example.Dep"]


def test_unresolvable_variables_stay_literal():
    ctx = _ctx()
    for text in ("{configuration:/Missing}", "{other.Comp:work:path}", "{iot:unknown}", "{artifacts:nope}",
                 "{not a variable}", "${HOME}"):
        assert v.interpolate(text, ctx) == text


def test_interpolate_configuration_substitutes_thing_name_in_access_control():
    ctx = _ctx()
    out = v.interpolate_configuration(ctx.configuration, ctx)
    resources = out["accessControl"]["aws.greengrass.ipc.mqttproxy"]["p1"]["resources"]
    assert resources == ["$aws/things/myThing/defender/metrics/json"]
    assert out["Nested"] == {"A": 1, "B": [1, 2]}
    # input untouched
    assert "{iot:thingName}" in ctx.configuration["accessControl"]["aws.greengrass.ipc.mqttproxy"]["p1"]["resources"][0]
