"""Every value an API caller can send is bounded by its type.

The catalogue's input types are walked field by field: a new operation, or a new
field on an old one, cannot bring an integer without an upper bound (a value past
2^63 overflows both databases), a string without a maximum length, or a list or
map without a maximum size.
"""

from __future__ import annotations

import msgspec
import pytest
from msgspec import inspect

from certfleet.shared import wire
from certfleet.shared.api import OPERATIONS

INT64_MAX = wire.INT64_MAX

BOUNDED_BY_VALIDATE = {"CertificateCreate.lifetime_seconds"}
"""Fields whose bound ``validate()`` checks instead, for a message in days rather than
a raw constraint; a test below proves each refuses a value past 64 bits."""


def _unbounded(type_info: inspect.Type, where: str, seen: set[type]) -> list[str]:
    """Fields of ``type_info`` (recursively) lacking a bound, as ``Struct.field: why``."""
    match type_info:
        case inspect.StructType(cls=cls, fields=fields):
            if cls in seen:
                return []
            seen.add(cls)
            return [problem for field in fields
                    for problem in _unbounded(field.type, f"{cls.__name__}.{field.name}", seen)]
        case inspect.UnionType(types=types):
            return [problem for member in types for problem in _unbounded(member, where, seen)]
        case inspect.ListType() | inspect.SetType() | inspect.FrozenSetType() | inspect.VarTupleType():
            own = [] if type_info.max_length is not None else [f"{where}: a list without max_length"]
            return own + _unbounded(type_info.item_type, f"{where}[]", seen)
        case inspect.DictType():
            own = [] if type_info.max_length is not None else [f"{where}: a map without max_length"]
            return (own + _unbounded(type_info.key_type, f"{where} key", seen)
                    + _unbounded(type_info.value_type, f"{where} value", seen))
        case inspect.IntType() if where in BOUNDED_BY_VALIDATE:
            return []
        case inspect.IntType():
            upper = type_info.le if type_info.le is not None else type_info.lt
            lower = type_info.ge if type_info.ge is not None else type_info.gt
            problems = []
            if upper is None or upper > INT64_MAX:
                problems.append(f"{where}: an integer without an upper bound within 64 bits")
            if lower is None or lower < -INT64_MAX:
                problems.append(f"{where}: an integer without a lower bound within 64 bits")
            return problems
        case inspect.StrType():
            return [] if type_info.max_length is not None else [f"{where}: a string without max_length"]
        case inspect.AnyType():
            return [f"{where}: Any (give it a type)"]
        case _:
            return []


def _inputs() -> list[type]:
    return sorted({op.input for op in OPERATIONS if isinstance(op.input, type) and op.input is not bytes},
                  key=lambda cls: cls.__name__)


@pytest.mark.parametrize("input_type", _inputs(), ids=lambda cls: cls.__name__)
def test_every_field_an_operation_takes_is_bounded(input_type):
    assert _unbounded(inspect.type_info(input_type), input_type.__name__, set()) == []


def test_fields_bounded_by_validate_refuse_values_past_64_bits():
    body = {"common_name": "a.example.test", "agent_id": "agt_x", "target_id": "web", "lifetime_seconds": 2**64}
    with pytest.raises(msgspec.ValidationError, match="lifetime_seconds"):
        wire.decode(msgspec.json.encode(body), wire.CertificateCreate)


def test_the_walk_finds_what_it_looks_for():
    class Loose(msgspec.Struct):
        count: int
        name: str
        tags: list[wire.Name]
        extra: dict[str, int]

    problems = _unbounded(inspect.type_info(Loose), "Loose", set())
    assert problems == ["Loose.count: an integer without an upper bound within 64 bits",
                        "Loose.count: an integer without a lower bound within 64 bits",
                        "Loose.name: a string without max_length",
                        "Loose.tags: a list without max_length",
                        "Loose.extra: a map without max_length",
                        "Loose.extra key: a string without max_length",
                        "Loose.extra value: an integer without an upper bound within 64 bits",
                        "Loose.extra value: an integer without a lower bound within 64 bits"]


@pytest.mark.parametrize("text", ["a\x00b", "a\x1b[2Jb", "a\nb", "a\n", "a\tb", "a\x7fb", "a\x9bb"])
def test_names_and_text_refuse_control_characters(text):
    for kind in (wire.Name, wire.KeyName, wire.Tag, wire.Description, wire.CommonName):
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert(text, kind)


def test_names_and_text_take_the_rest_of_unicode():
    for kind in (wire.KeyName, wire.Tag, wire.Description, wire.CommonName):
        assert msgspec.convert("Zoë's key — ünïcödé ✓", kind) == "Zoë's key — ünïcödé ✓"
