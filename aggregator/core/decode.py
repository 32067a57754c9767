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


class Decoder:
    """Decodes messages for one ``EventSchema``; reusable and stateless."""

    __slots__ = ("_decoder", "_keys", "_time_field")

    def __init__(self, schema: EventSchema) -> None:
        self._decoder = msgspec.json.Decoder(_message_type(schema))
        self._keys = operator.attrgetter(*(f"d{i}" for i in range(len(schema.dimensions))))
        self._time_field = schema.time_field

    def decode(self, message: bytes | str) -> Event | Reject:
        try:
            raw: Any = self._decoder.decode(message)
        except msgspec.ValidationError as error:
            return self._reason(str(error))
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            # msgspec raises UnicodeDecodeError for bad UTF-8 inside a string.
            return Reject.INVALID_JSON
        ts = raw.ts
        if type(ts) is str:
            parsed = parse_timestamp(ts)
            if parsed is None:
                return Reject.INVALID_TS
            ts = parsed
        keys = self._keys(raw)
        if type(keys) is not tuple:  # attrgetter of one field returns the value itself
            keys = (keys,)
        if None in keys:
            keys = tuple(UNKNOWN_KEY if key is None else key for key in keys)
        return Event(float(ts), keys, raw.value, raw.device)

    def _reason(self, message: str) -> Reject:
        located = _FIELD_IN_ERROR.search(message)
        if located is None:
            if message.startswith("Object missing required field"):
                return Reject.MISSING_TS
            return Reject.NOT_OBJECT
        return Reject.INVALID_TS if located.group(1) == self._time_field else Reject.INVALID_FIELD
