"""The plugin contract: value types, Device Defender limits, and the exact report shape."""

import math

import pytest

from ggdefender.plugins.contract import (
    MAX_LIST_ITEMS, MAX_STRING_LENGTH, SampleError, ValueType, check_metric_name, report_entry, validate_value,
)


@pytest.mark.parametrize("text, expected", [
    ("number", ValueType.NUMBER), ("number_list", ValueType.NUMBER_LIST), ("number-list", ValueType.NUMBER_LIST),
    ("string-list", ValueType.STRING_LIST), ("ip_list", ValueType.IP_LIST), ("ip-address-list", ValueType.IP_LIST),
    (" Number ", ValueType.NUMBER),
])
def test_value_type_accepts_report_keys_and_api_names(text, expected):
    assert ValueType.parse(text) is expected


def test_value_type_api_names_match_create_custom_metric():
    assert [t.metric_type for t in ValueType] == ["number", "number-list", "string-list", "ip-address-list"]


@pytest.mark.parametrize("bad", ["ip-list", "float", "", None, 3])
def test_value_type_rejects_unknown(bad):
    with pytest.raises(SampleError, match="unknown value type"):
        ValueType.parse(bad)


@pytest.mark.parametrize("name", ["cpu_usage", "a", "x" * 128, "ns:metric-1_2"])
def test_valid_metric_names(name):
    assert check_metric_name(name) == name


@pytest.mark.parametrize("name, why", [
    ("", "1-128"), ("x" * 129, "1-128"), ("cpu usage", "1-128"), ("cpu.usage", "1-128"),
    ("aws:cpu", "aws:"), ("AWS:cpu", "aws:"), (5, "must be a string"),
])
def test_invalid_metric_names(name, why):
    with pytest.raises(SampleError, match=why):
        check_metric_name(name)


def test_report_entry_shape_is_an_array_holding_one_object():
    assert report_entry(ValueType.NUMBER, 12.5) == [{"number": 12.5}]
    assert report_entry(ValueType.NUMBER_LIST, (1, 2.5)) == [{"number_list": [1, 2.5]}]
    assert report_entry(ValueType.STRING_LIST, ["sshd"]) == [{"string_list": ["sshd"]}]
    assert report_entry(ValueType.IP_LIST, ["10.0.0.1", "2001:DB8::1"]) == [{"ip_list": ["10.0.0.1", "2001:db8::1"]}]
    assert report_entry(ValueType.STRING_LIST, []) == [{"string_list": []}]


def test_numbers_are_rounded_to_fifteen_significant_digits():
    assert validate_value(ValueType.NUMBER, 0.1 + 0.2) == 0.3
    assert validate_value(ValueType.NUMBER, 7) == 7
    big = validate_value(ValueType.NUMBER, 1234567890123456789)
    assert isinstance(big, float) and big == 1.23456789012346e18


@pytest.mark.parametrize("value_type, value, why", [
    (ValueType.NUMBER, "12", "expected a number, got str"),
    (ValueType.NUMBER, True, "expected a number, got bool"),
    (ValueType.NUMBER, None, "expected a number, got NoneType"),
    (ValueType.NUMBER, math.nan, "not a finite number"),
    (ValueType.NUMBER, math.inf, "not a finite number"),
    (ValueType.NUMBER, [1], "expected a number, got list"),
    (ValueType.NUMBER_LIST, 3, "expected a list, got int"),
    (ValueType.NUMBER_LIST, [1, -math.inf], r"value\[1\]: -inf is not a finite number"),
    (ValueType.NUMBER_LIST, list(range(MAX_LIST_ITEMS + 1)), f"{MAX_LIST_ITEMS + 1} items, more than the limit"),
    (ValueType.STRING_LIST, "sshd", "expected a list, got str"),
    (ValueType.STRING_LIST, ["ok", 3], r"value\[1\]: expected a string, got int"),
    (ValueType.STRING_LIST, ["has space"], "characters other than"),
    (ValueType.STRING_LIST, [""], "empty or has characters"),
    (ValueType.STRING_LIST, ["a" * (MAX_STRING_LENGTH + 1)], f"longer than {MAX_STRING_LENGTH}"),
    (ValueType.IP_LIST, ["10.0.0.256"], "not a valid IPv4 or IPv6 address"),
    (ValueType.IP_LIST, ["example.com"], "not a valid IPv4 or IPv6 address"),
    (ValueType.IP_LIST, ["10.0.0.0/8"], "not a valid IPv4 or IPv6 address"),
    (ValueType.IP_LIST, ["fe80::1%eth0"], "IPv6 scope"),
    (ValueType.IP_LIST, [None], "expected an IP address string"),
])
def test_rejections_say_why(value_type, value, why):
    with pytest.raises(SampleError, match=why):
        validate_value(value_type, value)


def test_string_alphabet_allows_digits_and_path_characters():
    values = ["python3.11", "kworker/0:1", "systemd-resolve", "a_b"]
    assert validate_value(ValueType.STRING_LIST, values) == values


def test_sets_are_sorted_for_deterministic_reports():
    assert validate_value(ValueType.STRING_LIST, {"b", "a"}) == ["a", "b"]
