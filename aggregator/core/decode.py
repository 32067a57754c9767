"""Message bytes to an ``Event`` or a ``Reject`` reason, on the hot path.

The rules, in order:

* one JSON object per message; bytes that are not UTF-8 JSON -> ``invalid_json``;
  JSON that is not an object -> ``not_object``; extra fields are ignored;
* the time field is required: finite epoch seconds (int or float, not bool) or an
  RFC 3339 string with a zone; absent -> ``missing_ts``, anything else -> ``invalid_ts``;
* a dimension that is absent or null is ``"unknown"``; a string is itself; any
  other type -> ``invalid_field``;
* the value field, absent or null, adds no value; a finite number >= 0 (not bool)
  is the value; anything else -> ``invalid_field``;
* the distinct field, absent or null, adds nothing; a string counts; anything else
  -> ``invalid_field``.

Type checks run inside msgspec's decoder (a typed struct built from the schema), so
a valid message costs one C call; the error of an invalid one names the field,
which maps to the reason.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

import msgspec

from aggregator.core.events import UNKNOWN_KEY, Event, EventSchema, Reject

_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})"
)
_FIELD_IN_ERROR = re.compile(r" - at `\$\.(.+)`$")
_NON_NEGATIVE = Annotated[float, msgspec.Meta(ge=0.0)]


def parse_timestamp(raw: Any) -> float | None:
    """Epoch seconds from a JSON number or an RFC 3339 string; None when invalid."""
    kind = type(raw)
    if kind is int or kind is float:
        ts = float(raw)
        return ts if math.isfinite(ts) else None
    if kind is str and _RFC3339.fullmatch(raw):
        text = raw.upper().replace(" ", "T")
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        head, dot, rest = text.partition(".")
        if dot:  # Python keeps microseconds; cut nanosecond digits beyond them.
            digits = rest[: len(rest) - 6]
            text = f"{head}.{digits[:6]}{rest[len(digits) :]}"
        try:
            return datetime.fromisoformat(text).timestamp()
        except ValueError:
            return None
    return None


def _message_type(schema: EventSchema) -> type[msgspec.Struct]:
    dims = [(f"d{i}", str | None, None) for i in range(len(schema.dimensions))]
    rename = {f"d{i}": name for i, name in enumerate(schema.dimensions)}
    rename.update(ts=schema.time_field, value=schema.value_field, device=schema.distinct_field)
    return msgspec.defstruct(
        "Message",
        [
            ("ts", int | float | str),
            *dims,
            ("value", _NON_NEGATIVE | None, None),
            ("device", str | None, None),
        ],
        rename=rename,
        gc=False,
    )


DECODE_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)
"""What ``Decoder.read`` raises for a message that does not decode; msgspec raises
UnicodeDecodeError for bad UTF-8 inside a string (ValidationError is a DecodeError)."""


def epoch_seconds(raw: int | float | str) -> float | None:
    """The event time of a decoded time field; None when it is not a finite time."""
    if type(raw) is float:
        return raw  # msgspec decodes no NaN or infinity (they are not JSON)
    if type(raw) is int:
        try:
            return float(raw)
        except OverflowError:  # an integer beyond the float range
            return None
    return parse_timestamp(raw)


class Decoder:
    """Decodes messages for one ``EventSchema``; reusable and stateless.

    ``decode`` gives an ``Event`` or a ``Reject``.  The fold's fast path uses the
    parts instead, to build nothing per message it does not need: ``read`` (the
    typed struct, or one of ``DECODE_ERRORS``), ``rejection`` (the reason for that
    error), ``epoch_seconds`` and ``keys`` (one key per dimension, None where
    absent or null).
    """

    __slots__ = ("_time_field", "fields", "keys", "read")

    def __init__(self, schema: EventSchema) -> None:
        self.read: Callable[[bytes | str], Any] = msgspec.json.Decoder(_message_type(schema)).decode
        fields = [f"d{i}" for i in range(len(schema.dimensions))]
        self.fields = tuple(fields)
        """The typed struct's attribute of each dimension, in order."""
        # attrgetter of one field returns the value itself, not a 1-tuple
        self.keys: Callable[[Any], tuple[str | None, ...]] = (
            operator.attrgetter(*fields) if len(fields) > 1 else _one_key(fields[0])
        )
        self._time_field = schema.time_field

    def decode(self, message: bytes | str) -> Event | Reject:
        try:
            raw: Any = self.read(message)
        except DECODE_ERRORS as error:
            return self.rejection(error)
        ts = epoch_seconds(raw.ts)
        if ts is None:
            return Reject.INVALID_TS
        keys = self.keys(raw)
        if None in keys:
            keys = tuple(UNKNOWN_KEY if key is None else key for key in keys)
        return Event(ts, keys, raw.value, raw.device)  # type: ignore[arg-type]

    def rejection(self, error: Exception) -> Reject:
        """The reason for an error ``read`` raised."""
        if not isinstance(error, msgspec.ValidationError):
            return Reject.INVALID_JSON
        message = str(error)
        located = _FIELD_IN_ERROR.search(message)
        if located is None:
            if message.startswith("Object missing required field"):
                return Reject.MISSING_TS
            return Reject.NOT_OBJECT
        return Reject.INVALID_TS if located.group(1) == self._time_field else Reject.INVALID_FIELD


def _one_key(field: str) -> Callable[[Any], tuple[str | None, ...]]:
    get = operator.attrgetter(field)
    return lambda raw: (get(raw),)
