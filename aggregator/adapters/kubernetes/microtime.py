"""Lease times on the wire: metav1.MicroTime, RFC 3339 in UTC with exactly six
fractional digits ("2024-05-01T12:00:00.000000Z").

The port holds wall-clock epoch seconds (floats); the client's models hold
``datetime`` objects and serialize them with ``isoformat()``, which drops the
fraction when the microsecond is 0.  The API server then refuses the whole
object (400: cannot parse "+00:00" as ".000000"), once in a million writes.
``MicroTime`` is a ``datetime`` whose ``isoformat()`` always writes the exact
wire form, so it can go into ``V1LeaseSpec`` as it is.
"""

from __future__ import annotations

import datetime as dt

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)
WIRE_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


class MicroTime(dt.datetime):
    """A UTC ``datetime`` that serializes as a Kubernetes MicroTime."""

    def isoformat(self, sep: str = "T", timespec: str = "auto") -> str:
        return self.astimezone(dt.UTC).strftime(WIRE_FORMAT)


def to_micro_time(epoch_s: float | None) -> MicroTime | None:
    """Epoch seconds to the nearest microsecond, in UTC."""
    if epoch_s is None:
        return None
    moment = _EPOCH + dt.timedelta(microseconds=round(epoch_s * 1_000_000))
    return MicroTime.combine(moment.date(), moment.timetz())


def from_micro_time(moment: dt.datetime | None) -> float | None:
    """A time read from the API server back to epoch seconds (exact to the microsecond).

    A naive ``datetime`` is taken as UTC (the wire format always carries a zone).
    """
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return ((moment - _EPOCH) // _MICROSECOND) / 1_000_000
