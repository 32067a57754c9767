"""Lease times on the wire: epoch floats to MicroTime and back, exact to the microsecond."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubernetes import client

from aggregator.adapters.kubernetes.microtime import MicroTime, from_micro_time, to_micro_time


@pytest.mark.parametrize(
    ("epoch_s", "wire"),
    [
        (0.0, "1970-01-01T00:00:00.000000Z"),
        (1_700_000_000.0, "2023-11-14T22:13:20.000000Z"),
        (1_700_000_000.123456, "2023-11-14T22:13:20.123456Z"),
        (1_700_000_000.000001, "2023-11-14T22:13:20.000001Z"),
        (1_700_000_000.9999996, "2023-11-14T22:13:21.000000Z"),  # rounds to the nearest µs
    ],
)
def test_epoch_seconds_become_rfc3339_with_six_fraction_digits_in_utc(
    epoch_s: float, wire: str
) -> None:
    moment = to_micro_time(epoch_s)
    assert moment is not None
    assert moment.isoformat() == wire
    assert moment.tzinfo is not None
    assert moment.utcoffset() == dt.timedelta(0)


def test_the_client_serializes_a_whole_second_with_its_fraction() -> None:
    # Plain datetimes lose ".000000" in isoformat(), which the API server refuses.
    spec = client.V1LeaseSpec(
        holder_identity="", renew_time=to_micro_time(1_700_000_000.0), lease_duration_seconds=1
    )
    body = client.V1Lease(metadata=client.V1ObjectMeta(name="x"), spec=spec)
    wire = client.ApiClient().sanitize_for_serialization(body)  # type: ignore[no-untyped-call]
    assert wire["spec"] == {
        "holderIdentity": "",
        "leaseDurationSeconds": 1,
        "renewTime": "2023-11-14T22:13:20.000000Z",
    }


def test_none_stays_none() -> None:
    assert to_micro_time(None) is None
    assert from_micro_time(None) is None


def test_times_read_back_in_any_zone_are_the_same_instant() -> None:
    utc = dt.datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=dt.UTC)
    plus_two = utc.astimezone(dt.timezone(dt.timedelta(hours=2)))
    assert from_micro_time(plus_two) == from_micro_time(utc) == 1_700_000_000.123456
    assert from_micro_time(utc.replace(tzinfo=None)) == 1_700_000_000.123456  # naive = UTC


def test_a_micro_time_in_another_zone_still_writes_utc() -> None:
    moment = MicroTime(2023, 11, 15, 0, 13, 20, 5, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert moment.isoformat() == "2023-11-14T22:13:20.000005Z"


@given(st.integers(min_value=0, max_value=4_102_444_800_000_000))  # up to year 2100
def test_every_microsecond_round_trips_exactly(micros: int) -> None:
    epoch_s = micros / 1_000_000
    assert from_micro_time(to_micro_time(epoch_s)) == epoch_s
