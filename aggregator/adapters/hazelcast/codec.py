"""How partials, snapshots and member records are laid out in Hazelcast.

Keys are strings ``"<source>|<partition>|<bucket>"`` (a bucket's base entry) and
``"<source>|<partition>|<bucket>#<segment>"`` (its segments, numbered from 1; see
store.py), read from the right, so a source name may itself contain ``|``; a
reader that predates segments fails to read ``<bucket>#<segment>`` as a number
and skips the key, as it skips any key it did not write.  Values are sent as ``bytearray``, which
the client serializes as a Java ``byte[]`` (plain ``bytes`` would be pickled), and
come back as ``bytearray``: Hazelcast stores and compares them as opaque byte
arrays, which is what ``replace_if_same`` needs.

A partial value is one format byte, then MessagePack of ``[writer, wire]`` where
``wire`` is ``Partial.to_wire()`` and ``writer`` the identity of the client that
wrote it.  (Each dimension's keys are packed by the C extension where it is
built, ``_packed_keys``: the same bytes.)  The writer makes two writers' values
differ even when their counts are equal, so a compare-and-set against "the
bytes I wrote last" can only succeed if nobody else wrote since.  MessagePack
was measured against JSON (orjson): about 30 % fewer bytes and a faster raw
decode for a partial with 1,000 keys (``python -m bench.partial_codec``).  The
zlib format trades encode time for about 40 % fewer bytes again; it is optional.

A sealed base entry (one that segments add to, store.py) has the same body under
its own format byte (``SEALED_PLAIN``, ``SEALED_DEFLATED``): a reader that
predates segments finds a format it does not know and skips the entry rather than
take it for the whole bucket, and a writer that predates them cannot read it as
its own to add to.
"""

from __future__ import annotations

import zlib
from typing import Any, TypeAlias

import msgspec

from aggregator.core.partial import Agg, Partial, aggs_to_msgpack, aggs_to_wire
from aggregator.ports.bus import Published
from aggregator.ports.members import MemberInfo
from aggregator.ports.store import PartialKey

PLAIN = 1
"""Format byte: MessagePack."""
DEFLATED = 2
"""Format byte: zlib (level 1) of the MessagePack."""
SEALED_PLAIN = 3
"""Format byte: ``PLAIN``, of a sealed base entry."""
SEALED_DEFLATED = 4
"""Format byte: ``DEFLATED``, of a sealed base entry."""
_SEALED = {PLAIN: SEALED_PLAIN, DEFLATED: SEALED_DEFLATED}
_BODY = {PLAIN: PLAIN, DEFLATED: DEFLATED, SEALED_PLAIN: PLAIN, SEALED_DEFLATED: DEFLATED}

Blob: TypeAlias = bytes | bytearray
"""A value as this module makes it or as the client hands it back."""

_encoder = msgspec.msgpack.Encoder()
_envelope = msgspec.msgpack.Decoder(tuple[str, dict[str, Any]])
_published = msgspec.msgpack.Decoder(Published)
_member = msgspec.msgpack.Decoder(MemberInfo)


class CorruptValue(ValueError):
    """A stored value this adapter cannot read (another format or another program)."""


# -- keys ---------------------------------------------------------------------


def partial_key(key: PartialKey) -> str:
    base = f"{key.source}|{key.partition}|{key.bucket}"
    return f"{base}#{key.segment}" if key.segment else base


def parse_partial_key(text: str) -> PartialKey | None:
    """The key of a stored partial; None for a key this adapter did not write."""
    parts = text.rsplit("|", 2)
    if len(parts) != 3:
        return None
    bucket, hash_sign, segment = parts[2].partition("#")
    try:
        key = PartialKey(parts[0], int(parts[1]), int(bucket), int(segment) if hash_sign else 0)
    except ValueError:
        return None
    if hash_sign and (key.segment < 1 or segment != str(key.segment)):
        return None  # "#0", "#+1", "#01": not a key this adapter writes
    return key


def partition_prefix(source: str, partition: int) -> str:
    """Every key of the partition starts with this, and sorts below ``prefix_end``."""
    return f"{source}|{partition}|"


def prefix_end(prefix: str) -> str:
    """The smallest string above every string that starts with ``prefix``."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


# -- partial values -------------------------------------------------------------


def encode_partial(partial: Partial, writer: str, *, deflate: bool = False) -> bytearray:
    packed = _encoder.encode((writer, partial.to_wire(_packed_keys)))
    if deflate:
        return bytearray((DEFLATED,)) + zlib.compress(packed, 1)
    return bytearray((PLAIN,)) + packed


def _packed_keys(aggs: dict[str, Agg]) -> msgspec.Raw | dict[str, list[Any]]:
    """One dimension's keys for ``encode_partial``: MessagePack made by the C
    extension, the same bytes ``_encoder`` writes for ``aggs_to_wire(aggs)``
    (msgspec copies a Raw into its output as it is), or, where the extension does
    not take them, ``aggs_to_wire(aggs)`` for ``_encoder`` to encode."""
    packed = aggs_to_msgpack(aggs)
    return aggs_to_wire(aggs) if packed is None else msgspec.Raw(packed)


def sealed(value: bytearray) -> bytearray:
    """``value`` (from ``encode_partial``) as a sealed base entry."""
    value[0] = _SEALED[value[0]]
    return value


def is_sealed(value: Blob) -> bool:
    return bool(value) and value[0] in (SEALED_PLAIN, SEALED_DEFLATED)


def decode_partial(value: Blob) -> Partial:
    return Partial.from_wire(_unpack(value)[1])


def writer_of(value: Blob) -> str:
    return _unpack(value)[0]


def _unpack(value: Blob) -> tuple[str, dict[str, Any]]:
    if not value:
        raise CorruptValue("empty value")
    body = _BODY.get(value[0])
    try:
        if body == PLAIN:
            return _envelope.decode(memoryview(value)[1:])
        if body == DEFLATED:
            return _envelope.decode(zlib.decompress(memoryview(value)[1:]))
    except (msgspec.DecodeError, zlib.error) as error:
        raise CorruptValue(f"unreadable partial: {error}") from error
    raise CorruptValue(f"unknown partial format {value[0]}")


# -- snapshots and members -----------------------------------------------------------


def encode_published(message: Published) -> bytearray:
    return bytearray(_encoder.encode(message))


def decode_published(value: Blob) -> Published:
    try:
        return _published.decode(value)
    except msgspec.DecodeError as error:
        raise CorruptValue(f"unreadable snapshot message: {error}") from error


def encode_member(info: MemberInfo) -> bytearray:
    return bytearray(_encoder.encode(info))


def decode_member(value: Blob) -> MemberInfo:
    try:
        return _member.decode(value)
    except msgspec.DecodeError as error:
        raise CorruptValue(f"unreadable member record: {error}") from error
