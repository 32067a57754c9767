"""``Partial.to_wire`` with the C extension's ``aggs_to_wire`` equals its Python
twin (``aggs_to_wire_python``) on generated partials, and survives a round trip.

The extension's ``aggs_to_msgpack`` writes the very bytes msgspec writes for
``aggs_to_wire_python`` (every header form, every int form, floats, the fallbacks
to Python), so the Hazelcast codec's values are the same with it and without it.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from enum import IntEnum
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.adapters.hazelcast.codec import decode_partial, encode_partial
from aggregator.core import native
from aggregator.core.partial import Agg, Partial, aggs_to_msgpack, aggs_to_wire_python
from tests.unit.test_native import built, python_only  # noqa: F401 (autouse fixture)

ints = st.integers(-(2**40), 2**70)


@st.composite
def aggs(draw: st.DrawFn) -> Agg:
    agg = Agg()
    agg.count = draw(ints)
    agg.vcount = draw(st.integers(0, 5))
    agg.vsum = draw(st.floats(allow_nan=False))
    if agg.vcount:  # min and max travel only with values (as Agg.to_wire)
        agg.vmin, agg.vmax = sorted(draw(st.tuples(st.floats(0, 1e9), st.floats(0, 1e9))))
    agg.hist = draw(st.dictionaries(ints, ints, max_size=6))
    agg.regs = draw(st.dictionaries(st.integers(0, 4095), st.integers(1, 60), max_size=6))
    return agg


@settings(max_examples=300, deadline=None)
@given(
    by=st.lists(st.dictionaries(st.text(max_size=6), aggs(), max_size=8), min_size=1, max_size=3)
)
def test_aggs_to_wire_in_c_equals_python(by: list[dict[str, Agg]]) -> None:
    compiled = native.NATIVE
    assert compiled is not None
    for keys in by:
        assert compiled.aggs_to_wire(keys) == aggs_to_wire_python(keys)
    partial = Partial(7, len(by), 3)
    partial.by = tuple(by)
    wire = partial.to_wire()
    with python_only():
        assert partial.to_wire() == wire
    assert Partial.from_wire(wire) == partial


def test_bad_aggs_are_type_errors() -> None:
    compiled = native.NATIVE
    assert compiled is not None
    with pytest.raises(TypeError):
        compiled.aggs_to_wire([])  # type: ignore[arg-type]
    broken = Agg()
    broken.hist = [1, 2]  # type: ignore[assignment]
    with pytest.raises(TypeError, match="dicts"):
        compiled.aggs_to_wire({"k": broken})
    with pytest.raises(AttributeError):
        compiled.aggs_to_wire({"k": object()})  # type: ignore[dict-item]


# -- aggs_to_msgpack: the MessagePack of aggs_to_wire, made in C ----------------


def msgspec_bytes(aggs: dict[Any, Any]) -> bytes:
    return msgspec.msgpack.encode(aggs_to_wire_python(aggs))


def test_msgspec_copies_a_raw_into_its_output_as_it_is() -> None:
    """What the codec relies on to embed the C extension's bytes."""
    inner = {"app": [1, -1.5, None, [7, 2]]}
    assert msgspec.msgpack.encode(("pod", {"k": [msgspec.Raw(msgspec.msgpack.encode(inner))]})) == (
        msgspec.msgpack.encode(("pod", {"k": [inner]}))
    )
    # Not parsed again (0xc1 is no MessagePack at all): copied, not re-encoded.
    assert msgspec.msgpack.encode([msgspec.Raw(b"\xc1\xff")]) == b"\x91\xc1\xff"


# Either side of each boundary where msgspec changes an int's form; the ints past
# the last ones (below -2**63, above 2**64 - 1) it refuses.
INT_EDGES = sorted(
    {
        edge + step
        for edge in (0, 2**7, 2**8, 2**16, 2**32, 2**63, -32, -(2**7), -(2**15), -(2**31))
        for step in (-1, 0, 1)
    }
    | {2**64 - 2, 2**64 - 1, -(2**63), -(2**63) + 1}
)
TOO_BIG = (2**64, -(2**63) - 1, 2**70, -(2**70))
msgpack_ints = st.one_of(st.sampled_from(INT_EDGES), st.integers(-(2**63), 2**64 - 1))
any_floats = st.one_of(
    st.floats(),
    st.sampled_from([0.0, -0.0, 5e-324, 1.7976931348623157e308, -1e308, float("inf"), -1.0]),
)
# UTF-8 lengths either side of where msgspec's string header grows (fixstr, str8,
# str16, str32): the header counts bytes, not characters.
STR_EDGES = [edge + step for edge in (32, 256, 65536) for step in (-1, 0, 1)]


@st.composite
def keys_of_edge_lengths(draw: st.DrawFn) -> str:
    size = draw(st.sampled_from(STR_EDGES))
    wide = draw(st.sampled_from("é€😀"))
    width = len(wide.encode())
    many = draw(st.integers(0, size // width))
    return wide * many + "a" * (size - many * width)


wire_keys = st.one_of(st.text(max_size=40), keys_of_edge_lengths())


@st.composite
def packable_aggs(draw: st.DrawFn) -> Agg:
    """Any Agg msgspec can encode; with 8 or more hist or regs entries, the flat
    list takes an array16 header."""
    agg = Agg()
    agg.count = draw(msgpack_ints)
    agg.vcount = draw(st.one_of(st.just(0), msgpack_ints))
    agg.vsum = draw(st.one_of(any_floats, msgpack_ints))
    if draw(st.booleans()):  # else inf and -inf, which travel only with values
        agg.vmin, agg.vmax = draw(any_floats), draw(any_floats)
    agg.hist = draw(st.dictionaries(msgpack_ints, msgpack_ints, max_size=20))
    agg.regs = draw(st.dictionaries(st.integers(0, 65535), st.integers(0, 64), max_size=20))
    return agg


@settings(max_examples=400, deadline=None)
@given(aggs=st.dictionaries(wire_keys, packable_aggs(), max_size=20))
def test_aggs_packed_in_c_are_the_bytes_msgspec_writes(aggs: dict[str, Agg]) -> None:
    assert aggs_to_msgpack(aggs) == msgspec_bytes(aggs)


def test_maps_and_arrays_past_15_and_65535_entries_take_the_longer_headers() -> None:
    wide = Agg()
    wide.vcount, wide.vmin, wide.vmax = 1, 1.0, 1.0
    wide.hist = {bin_: 1 for bin_ in range(-40_000, 0)}  # 80,000 items: array32
    wide.regs = {reg: 2 for reg in range(8)}  # 16 items: array16
    many = {"wide": wide, **{f"app-{i}": Agg() for i in range(70_000)}}
    for size, header in [
        (0, b"\x80"),
        (15, b"\x8f"),
        (16, b"\xde\x00\x10"),
        (65_535, b"\xde\xff\xff"),
        (65_536, b"\xdf\x00\x01\x00\x00"),
        (len(many), b"\xdf\x00\x01\x11\x71"),
    ]:
        aggs = dict(itertools.islice(many.items(), size))
        packed = aggs_to_msgpack(aggs)
        assert packed is not None
        assert packed.startswith(header)
        assert packed == msgspec_bytes(aggs)
    assert b"\xdd\x00\x01\x38\x80" in msgspec_bytes({"wide": wide})


class Level(IntEnum):
    HIGH = 3


class WiderAgg(Agg):
    __slots__ = ("extra",)


def odd(**fields: object) -> Agg:
    agg = Agg()
    for name, value in fields.items():
        setattr(agg, name, value)
    return agg


def unset(name: str) -> Agg:
    agg = Agg()
    delattr(agg, name)
    return agg


def unset_with_values(name: str) -> Agg:
    agg = unset(name)
    agg.vcount = 1
    return agg


class Key(str):
    __slots__ = ()


# What the C code leaves to Python: the codec then encodes aggs_to_wire(aggs) as
# before, so its output (or its error) is what it was.
LEFT_TO_PYTHON: dict[str, dict[Any, Any]] = {
    "int key": {1: Agg()},
    "str subclass key": {Key("app"): Agg()},
    "lone surrogate key": {"\ud800": Agg()},  # no UTF-8
    "not an Agg": {"app": object()},
    "Agg subclass": {"app": WiderAgg()},
    "bool count": {"app": odd(count=True)},  # an int that msgspec writes as true
    "IntEnum count": {"app": odd(count=Level.HIGH)},
    "IntEnum vcount": {"app": odd(count=1.5, vcount=Level.HIGH)},
    "str vsum": {"app": odd(vsum="1.5")},
    "str vmax": {"app": odd(vcount=1, vmax="high")},
    "float hist count": {"app": odd(hist={1: 2.0})},
    "float hist bin": {"app": odd(hist={1.0: 2})},
    "bool rank": {"app": odd(regs={3: True})},
    "Counter hist": {"app": odd(hist=Counter({1: 2}))},
    "unset vsum": {"app": unset("vsum")},
    "unset regs": {"app": unset("regs")},
    "unset vmin with values, second": {"ok": Agg(), "app": unset_with_values("vmin")},
    **{f"count {big}": {"app": odd(count=big)} for big in TOO_BIG},
    **{f"vsum {big}": {"app": odd(vsum=big)} for big in TOO_BIG},
    **{f"hist bin {big}": {"app": odd(hist={big: 1})} for big in TOO_BIG},
    **{f"rank {big}": {"app": odd(regs={1: big})} for big in TOO_BIG},
}


def outcome(encode: Callable[[], object]) -> object:
    """What encode returns, or the type of what it raises."""
    try:
        return encode()
    except Exception as error:  # compared, not handled
        return type(error)


@pytest.mark.parametrize("aggs", LEFT_TO_PYTHON.values(), ids=LEFT_TO_PYTHON.keys())
def test_what_c_does_not_take_python_encodes_as_before(aggs: dict[Any, Any]) -> None:
    compiled = native.NATIVE
    assert compiled is not None
    assert compiled.aggs_to_msgpack(Agg, aggs) is None
    partial = Partial(7, 1, 3)
    partial.by[0].update(aggs)
    encoded = outcome(lambda: encode_partial(partial, "pod-a"))
    with python_only():
        assert outcome(lambda: encode_partial(partial, "pod-a")) == encoded


# Odd, but written as msgspec writes them: min and max are not read without
# values (as Agg.to_wire), and ints and floats may stand for each other.
TAKEN_AS_THEY_ARE: dict[str, dict[str, Agg]] = {
    "no values, junk min": {"app": odd(vmin="junk", vmax=None)},
    "no values, unset min": {"app": unset("vmin")},
    "float counts, int sum": {"app": odd(count=2.0, vcount=0.0, vsum=3)},
    "nan vcount, int max": {"app": odd(vcount=float("nan"), vmin=-0.0, vmax=1)},
    "values, None min and max": {"app": odd(vcount=1, vmin=None, vmax=None)},
    "None count": {"app": odd(count=None)},
}


@pytest.mark.parametrize("aggs", TAKEN_AS_THEY_ARE.values(), ids=TAKEN_AS_THEY_ARE.keys())
def test_odd_fields_msgspec_writes_are_written_the_same(aggs: dict[str, Agg]) -> None:
    packed = aggs_to_msgpack(aggs)
    assert packed is not None
    assert packed == msgspec_bytes(aggs)


def test_the_call_takes_a_dict_and_leaves_other_agg_types_to_python() -> None:
    compiled = native.NATIVE
    assert compiled is not None
    with pytest.raises(TypeError):
        compiled.aggs_to_msgpack(Agg, [])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        compiled.aggs_to_msgpack("Agg", {})  # type: ignore[arg-type]

    class Unslotted:
        pass

    class Aggs(dict[str, Agg]):
        pass

    assert compiled.aggs_to_msgpack(Unslotted, {}) is None  # type: ignore[arg-type]
    assert compiled.aggs_to_msgpack(Agg, Aggs(app=Agg())) is None
    assert aggs_to_msgpack(Aggs(app=Agg())) is None
    with python_only():
        assert aggs_to_msgpack({"app": Agg()}) is None


@settings(max_examples=200, deadline=None)
@given(
    total=packable_aggs(),
    by=st.lists(st.dictionaries(st.text(max_size=8), packable_aggs(), max_size=8), max_size=3),
    dropped=st.dictionaries(st.text(max_size=6), st.integers(0, 2**40), max_size=3),
    deflate=st.booleans(),
)
def test_encode_partial_writes_the_same_bytes_with_and_without_c(
    total: Agg, by: list[dict[str, Agg]], dropped: dict[str, int], deflate: bool
) -> None:
    partial = Partial(1_700_000_000, len(by), 42)
    partial.total, partial.by, partial.dropped = total, tuple(by), dropped
    value = encode_partial(partial, "pod-a_x1", deflate=deflate)
    with python_only():
        assert encode_partial(partial, "pod-a_x1", deflate=deflate) == value


def test_a_partial_encoded_in_c_decodes_as_before() -> None:
    partial = Partial(1_700_000_000, 2, 42)
    for i in range(40):
        agg = partial.by[i % 2].setdefault(f"app-{i // 2}", Agg())
        agg.count, agg.vcount, agg.vsum, agg.vmin, agg.vmax = i + 1, 1, i * 1.5, i * 1.5, i * 1.5
        agg.hist[i - 20] = i
        agg.regs[i * 100] = i % 7 + 1
        partial.total.merge_from(agg)
    partial.drop("late")
    value = encode_partial(partial, "pod-a")
    assert decode_partial(value) == partial
    with python_only():
        assert encode_partial(partial, "pod-a") == value
