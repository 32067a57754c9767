"""``Partial.to_wire`` with the C extension's ``aggs_to_wire`` equals its Python
twin (``aggs_to_wire_python``) on generated partials, and survives a round trip."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.core import native
from aggregator.core.partial import Agg, Partial, aggs_to_wire_python
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
