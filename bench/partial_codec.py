"""``python -m bench.partial_codec``: bytes per stored partial and encode / decode
time, for the value format of the Hazelcast store against JSON (orjson).

The partial is real: synthetic crash events folded by the map-side folder into
one bucket, with about 1,000 app keys (each with its histogram and distinct
registers).  Times are the best of several runs, in microseconds, with
``to_wire`` / ``from_wire`` (what a write and a read really cost) and for the
codec alone.
"""

from __future__ import annotations

import functools
import random
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
import orjson

from aggregator.adapters.hazelcast.codec import decode_partial, encode_partial
from aggregator.core.accumulate import FoldSettings, MapFolder
from aggregator.core.events import EventSchema
from aggregator.core.partial import Partial
from aggregator.core.synthetic import CrashEventGenerator

BASE_TS = 1_763_798_400
WRITER = "stream-aggregator-7d9f8-abcde_3f2a"


@dataclass(frozen=True)
class CodecFigures:
    name: str
    events: int
    keys: int
    size: int
    encode_us: float
    decode_us: float
    raw_encode_us: float
    raw_decode_us: float


def folded_partial(events: int, apps: int = 1000, seed: int = 5) -> Partial:
    folder = MapFolder(FoldSettings(EventSchema(), 1, 300, 10.0, 60.0, 65_536))
    generator = CrashEventGenerator(random.Random(seed), bad_fraction=0.0, apps=apps, skew=0.3)
    for offset in range(events):
        folder.fold(0, offset, BASE_TS + 0.5, generator.message(BASE_TS + 0.9 * offset / events))
    (partial,) = folder.partition(0).roll_up()
    return partial


def best_us(action: Callable[[], object], repeat: int = 7, number: int = 20) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(number):
            action()
        best = min(best, (time.perf_counter() - started) / number)
    return best * 1e6


def measure(events: int) -> list[CodecFigures]:
    partial = folded_partial(events)
    keys = sum(len(k) for k in partial.by)
    wire = (WRITER, partial.to_wire())
    packer, unpacker = msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder()
    deflated = zlib.compress(packer.encode(wire), 1)
    codecs: dict[str, tuple[Callable[[], bytes | bytearray], Callable[[bytes], Partial]]] = {
        "JSON (orjson)": (
            lambda: orjson.dumps((WRITER, partial.to_wire())),
            lambda v: Partial.from_wire(orjson.loads(v)[1]),
        ),
        "MessagePack (msgspec), chosen": (
            lambda: encode_partial(partial, WRITER),
            decode_partial,
        ),
        "MessagePack + zlib level 1 (deflate=True)": (
            lambda: encode_partial(partial, WRITER, deflate=True),
            decode_partial,
        ),
    }
    raw: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
        "JSON (orjson)": (
            functools.partial(orjson.dumps, wire),
            functools.partial(orjson.loads, orjson.dumps(wire)),
        ),
        "MessagePack (msgspec), chosen": (
            functools.partial(packer.encode, wire),
            functools.partial(unpacker.decode, packer.encode(wire)),
        ),
        "MessagePack + zlib level 1 (deflate=True)": (
            lambda: zlib.compress(packer.encode(wire), 1),
            lambda: unpacker.decode(zlib.decompress(deflated)),
        ),
    }
    figures = []
    for name, (encode, decode) in codecs.items():
        value = bytes(encode())
        assert decode(value) == partial
        raw_encode, raw_decode = raw[name]
        figures.append(
            CodecFigures(
                name,
                events,
                keys,
                len(value),
                best_us(encode),
                best_us(functools.partial(decode, value)),
                best_us(raw_encode),
                best_us(raw_decode),
            )
        )
    return figures


def main() -> None:
    print(
        "| partial | format | bytes | encode µs (with to_wire) | decode µs (with from_wire) "
        "| codec alone: encode / decode µs |"
    )
    print("|---|---|---|---|---|---|")
    for events in (3_000, 20_000):
        for f in measure(events):
            print(
                f"| {f.events:,} events, {f.keys:,} keys | {f.name} | {f.size:,} "
                f"| {f.encode_us:,.0f} | {f.decode_us:,.0f} "
                f"| {f.raw_encode_us:,.0f} / {f.raw_decode_us:,.0f} |"
            )


if __name__ == "__main__":
    main()
