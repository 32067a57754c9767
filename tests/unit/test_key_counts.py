"""The reducer's per-key counts: ``add_counts`` and ``take_counts`` in C equal
their Python twins on generated input (totals, noted keys, returned sizes), and
bad arguments are clear errors.  In CI the extension must have been built;
locally a missing one skips the comparisons and says how to build it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.core import key_counts, native
from aggregator.core.key_counts import add_counts_python, ranks_at_or_above, take_counts_python
from tests.unit.test_native import built  # noqa: F401 (the autouse fixture that needs the extension)

names = st.sampled_from([f"k{i}" for i in range(12)] + ["", "é", "k1 "])
counts = st.dictionaries(names, st.integers(-3, 2**70))
bars = st.none() | st.tuples(st.integers(-2, 5), names)


@settings(max_examples=400, deadline=None)
@given(totals=counts, changes=counts, sign=st.sampled_from([1, -1]), bar=bars)
def test_add_counts_in_c_equals_python(
    totals: dict[str, int], changes: dict[str, int], sign: int, bar: tuple[int, str] | None
) -> None:
    compiled = native.NATIVE
    assert compiled is not None
    python_totals, python_risen = dict(totals), {"old"}
    c_totals, c_risen = dict(totals), {"old"}
    add_counts_python(python_totals, changes, sign, bar, python_risen)
    compiled.add_counts(c_totals, changes, sign, bar, c_risen)
    assert c_totals == python_totals
    assert c_risen == python_risen
    assert all(c_totals[key] != 0 for key in changes if key in c_totals)
    if bar is not None and sign > 0:
        assert python_risen - {"old"} == {
            key for key in changes if key in c_totals and ranks_at_or_above(c_totals[key], key, bar)
        }


@settings(max_examples=400, deadline=None)
@given(totals=counts, leaving=counts, limit=st.integers(-1, 15))
def test_take_counts_in_c_equals_python(
    totals: dict[str, int], leaving: dict[str, int], limit: int
) -> None:
    compiled = native.NATIVE
    assert compiled is not None
    python_totals, python_leaving = dict(totals), dict(leaving)
    c_totals, c_leaving = dict(totals), dict(leaving)
    python_taken = take_counts_python(python_totals, python_leaving, limit)
    assert compiled.take_counts(c_totals, c_leaving, limit) == python_taken
    assert (c_totals, c_leaving) == (python_totals, python_leaving)
    assert python_taken == min(max(limit, 0), len(leaving))
    # Taking every slice equals taking the whole at once.
    whole = dict(totals)
    key_counts.add_counts(whole, leaving, -1, None, set())
    while c_leaving:
        key_counts.take_counts(c_totals, c_leaving, 3)
    assert c_totals == whole


def test_bad_arguments_are_clear_errors() -> None:
    totals = {"a": 1}
    with pytest.raises(ValueError, match="sign"):
        key_counts.add_counts(totals, {"a": 1}, 2, None, set())
    with pytest.raises(ValueError, match="themselves"):
        key_counts.add_counts(totals, totals, 1, None, set())
    with pytest.raises(ValueError, match="themselves"):
        key_counts.take_counts(totals, totals, 1)
    compiled = native.NATIVE
    assert compiled is not None
    with pytest.raises(TypeError, match="bar"):
        compiled.add_counts({}, {"a": 1}, 1, (1,), set())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sign"):
        compiled.add_counts({}, {"a": 1}, 0, None, set())
    with pytest.raises(TypeError):
        compiled.take_counts({}, [], 1)  # type: ignore[arg-type]
