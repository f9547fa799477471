"""jsoncodec is json: the same values, the same text, the same errors (it only skips importing json)."""

from __future__ import annotations

import json
import pathlib
import subprocess

import pytest
from vpccni.cniplugin import jsoncodec

VALUES = [
    {"cniVersion": "1.0.0", "name": "aws-cni", "mtu": 9001, "ratio": 0.25, "ok": True, "none": None},
    {
        "nested": [{"a": [1, 2.5, -3e-7, 1e300]}, [], {}],
        "ünïcode": "snow ☃ \U0001f600",
        "ctl": '\x00\n\t"\\/',
    },
    [1, "two", 3.0, False],
    "just a string",
    12345678901234567890,
    {"inf": float("inf"), "ninf": float("-inf")},
]


@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("ensure_ascii", [True, False])
@pytest.mark.parametrize("separators", [(",", ":"), (", ", ": ")])
def test_dumps_is_json_dumps(value: object, ensure_ascii: bool, separators: tuple[str, str]) -> None:
    expected = json.dumps(value, ensure_ascii=ensure_ascii, separators=separators)
    assert jsoncodec.dumps(value, ensure_ascii=ensure_ascii, separators=separators) == expected


def test_dumps_default_and_its_absence() -> None:
    value = {"when": object.__new__(type("Stamp", (), {"__str__": lambda self: "now"}))}
    assert jsoncodec.dumps(value, default=str) == json.dumps(value, default=str) == '{"when": "now"}'
    with pytest.raises(TypeError, match="Object of type set is not JSON serializable"):
        jsoncodec.dumps({"s": {1}})
    circular: list[object] = []
    circular.append(circular)
    with pytest.raises(ValueError, match="Circular reference"):
        jsoncodec.dumps(circular)


@pytest.mark.parametrize("value", VALUES[:-1])
def test_loads_round_trips_like_json(value: object) -> None:
    text = json.dumps(value, ensure_ascii=False)
    for data in (text, text.encode(), f" \n\t{text}\r\n ".encode()):
        assert jsoncodec.loads(data) == json.loads(data)


def test_loads_reads_nan_and_infinity_as_json_does() -> None:
    value = jsoncodec.loads(b"[NaN, Infinity, -Infinity, 1.5, 7]")
    assert (
        isinstance(value, list)
        and value[0] != value[0]
        and value[1:] == [float("inf"), float("-inf"), 1.5, 7]
    )


@pytest.mark.parametrize(
    "data",
    [
        "\ufeff{}".encode(),
        '{"a": 1}'.encode("utf-16"),
        '{"a": 1}'.encode("utf-32-be"),
        '["x"]'.encode("utf-16-le"),
    ],
)
def test_loads_leaves_other_encodings_to_json(data: bytes) -> None:
    assert jsoncodec.loads(data) == json.loads(data)


@pytest.mark.parametrize(
    "data",
    [b"", b"   ", b'{"cniVersion": ', b'{"a": 1} trailing', b"[1, 2,]", b'{"a" 1}', b'"unterminated',
     b'"ctl \x01 char"', b"\xff\xfe\xfd not utf-8", b"nul", "\ufeff{}", b"[" * 200000],
)  # fmt: skip
def test_errors_are_json_errors(data: bytes | str) -> None:
    with pytest.raises((ValueError, RecursionError)) as expected:
        json.loads(data)
    with pytest.raises(type(expected.value)) as got:
        jsoncodec.loads(data)
    assert str(got.value) == str(expected.value)


# The shim's situation: json is not loaded when the input turns out to be malformed.
PROBE = """
import sys
from vpccni.cniplugin import jsoncodec
assert "json" not in sys.modules
try:
    jsoncodec.loads(bytes.fromhex(sys.argv[1]))
except Exception as exc:
    print(type(exc).__name__ + ": " + str(exc))
"""


@pytest.mark.parametrize(
    "data", [b'{"cniVersion": "1.0.0", ', b'{"a": 1 x', b'"ctl \x01"', b"\xff", b"{} {}", b""]
)
def test_errors_in_a_process_without_json(data: bytes) -> None:
    src = str(pathlib.Path(jsoncodec.__file__).parents[2])
    code = f"import sys; sys.path.insert(0, {src!r})" + PROBE
    proc = subprocess.run(
        ["/usr/bin/python3", "-I", "-S", "-c", code, data.hex()], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    with pytest.raises(ValueError) as expected:
        json.loads(data)
    assert proc.stdout.strip() == f"{type(expected.value).__name__}: {expected.value}"
