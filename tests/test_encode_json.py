"""`validate.encode_json`: orjson writes what it writes byte for byte as `json.dumps` does, and
everything else goes through `json.dumps`, so the bytes stored and every refusal are as before."""

from __future__ import annotations

import collections
import datetime
import enum
import json
import types
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchd import validate
from batchd.errors import InvalidRequestError
from batchd.validate import encode_json


def by_json(value: Any) -> bytes | None:
    """What the json module alone writes, or None where it refuses."""
    try:
        text = json.dumps(
            value,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
            default=validate._mapping,
        )
        return text.encode("utf-8")
    except (ValueError, TypeError, RecursionError):  # UnicodeEncodeError is a ValueError
        return None


def by_us(value: Any) -> bytes | None:
    try:
        return encode_json(value, "params")
    except InvalidRequestError:
        return None


class Color(enum.Enum):
    RED = 1


class Size(enum.IntEnum):
    BIG = 2


class Name(str):
    pass


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


def holding_itself() -> list[Any]:
    value: list[Any] = [1]
    value.append(value)
    return value


ODD = {
    "a list that holds itself": holding_itself(),
    "a UUID": uuid.UUID(int=1),
    "an Enum": Color.RED,
    "an IntEnum": Size.BIG,
    "a str subclass": Name("x"),
    "an OrderedDict": collections.OrderedDict(a=1),
    "a read-only mapping": types.MappingProxyType({"a": 1}),
    "a datetime": datetime.datetime(2025, 1, 1),
    "a date": datetime.date(2025, 1, 1),
    "bytes": b"x",
    "a set": {1},
    "an int key": {1: "a"},
    "a bool key": {True: "a"},
    "a None key": {None: "a"},
    "an integer past 64 bits": 2**64,
    "an integer below -2**63": -(2**63) - 1,
    "the largest 64-bit integers": [2**63 - 1, -(2**63), 2**64 - 1],
    "NaN": float("nan"),
    "Infinity": float("inf"),
    "-Infinity": float("-inf"),
    "a tiny float": 1e-7,
    "a huge float": 1e16,
    "the smallest subnormal": 5e-324,
    "negative zero": -0.0,
    "floats at the edges": [1e-4, 9.999e-5, 9.999999999999998e15],
    "a lone surrogate": "a\ud800b",
    "a lone surrogate as a key": {"\udc80": 1},
    "control characters": "\x00\x01\x1f\x7f\u2028\u2029",
    "a tuple": (1, "a", None),
    "nesting past orjson's 254 levels": nested(300),
    "nesting past Python's recursion limit": nested(5000),
}


@pytest.mark.parametrize("name", list(ODD))
def test_odd_values_are_written_or_refused_as_json_does(name: str) -> None:
    value = ODD[name]
    assert by_us({"x": value}) == by_json({"x": value})


def test_refusals_still_name_the_field() -> None:
    with pytest.raises(InvalidRequestError, match="NaN and Infinity are not JSON"):
        encode_json({"temperature": float("nan")}, "params")
    with pytest.raises(InvalidRequestError, match=r"not JSON-serialisable: .*UUID"):
        encode_json({"id": uuid.UUID(int=1)}, "metadata")
    with pytest.raises(InvalidRequestError, match="lone surrogate"):
        encode_json({"t": "\ud800"}, "params")


def test_ordinary_params_take_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the json module out of action, a request's usual params are still encoded."""

    def refuse(*args: object, **kwargs: object) -> str:
        raise AssertionError("json.dumps was called")

    params = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "temperature": 0.7,
        "stop_sequences": ["\n\nHuman:"],
        "messages": [{"role": "user", "content": [{"type": "text", "text": 'héllo "x"'}]}],
        "metadata": {"user_id": None},
    }
    expected = by_json(params)
    monkeypatch.setattr(json, "dumps", refuse)
    assert encode_json(params, "params") == expected


JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=2),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=6) | st.integers(), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None, database=None)
@given(JSONISH)
def test_any_value_is_written_or_refused_as_json_does(value: Any) -> None:
    assert by_us(value) == by_json(value)
