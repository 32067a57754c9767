"""HazelcastStore on a fake IMap (no server): writes whose outcome is unknown
(never added twice), sealing and segments, and the codec.
"""

from __future__ import annotations

from typing import cast

import pytest
from hazelcast.asyncio import HazelcastClient
from hazelcast.errors import ClientOfflineError, TargetDisconnectedError

from aggregator.adapters.hazelcast import HazelcastStore
from aggregator.adapters.hazelcast.codec import (
    Blob,
    CorruptValue,
    decode_partial,
    encode_partial,
    is_sealed,
    parse_partial_key,
    partial_key,
    partition_prefix,
    prefix_end,
    sealed,
    writer_of,
)
from aggregator.adapters.hazelcast.store import SEAL_BYTES
from aggregator.core.partial import Partial
from aggregator.ports.store import PartialKey, StoreUnavailable

SOURCE = "crashes"


class FakeMap:
    """The IMap operations the store uses, with injectable failures."""

    def __init__(self) -> None:
        self.entries: dict[str, bytearray] = {}
        self.ttls: dict[str, float] = {}
        self.lose_responses = 0
        """The next N writes are applied, then fail as if the member died."""
        self.drop_requests = 0
        """The next N writes fail before they reach a member."""
        self.offline = False

    def _before(self) -> None:
        if self.offline:
            raise ClientOfflineError()  # type: ignore[no-untyped-call]
        if self.drop_requests:
            self.drop_requests -= 1
            raise TargetDisconnectedError("dropped")

    def _after(self) -> None:
        if self.lose_responses:
            self.lose_responses -= 1
            raise TargetDisconnectedError("lost the response")

    async def put_if_absent(self, key: str, value: Blob, ttl: float) -> Blob | None:
        self._before()
        existing = self.entries.get(key)
        if existing is None:
            self.entries[key] = bytearray(value)
            self.ttls[key] = ttl
        self._after()
        return existing

    async def replace_if_same(self, key: str, old: Blob, new: Blob) -> bool:
        self._before()
        replaced = self.entries.get(key) == old
        if replaced:
            self.entries[key] = bytearray(new)
            self.ttls[key] = 0.0  # an IMap replace resets the TTL
        self._after()
        return replaced

    async def set_ttl(self, key: str, ttl: float) -> None:
        self._before()
        self.ttls[key] = ttl

    async def entry_set(self, _predicate: object) -> list[tuple[str, bytearray]]:
        self._before()
        return list(self.entries.items())


class FakeClient:
    def __init__(self, imap: FakeMap) -> None:
        self.imap = imap

    async def get_map(self, _name: str) -> FakeMap:
        return self.imap


def partial(bucket: int, count: int) -> Partial:
    made = Partial(bucket, 1, count)
    made.total.count = count
    made.by[0]["app"] = made.total.copy()
    return made


def stored(imap: FakeMap, bucket: int) -> Partial:
    return decode_partial(imap.entries[partial_key(PartialKey(SOURCE, 0, bucket))])


@pytest.fixture
def imap() -> FakeMap:
    return FakeMap()


def store_on(imap: FakeMap, writer: str = "pod-a", seal_bytes: int = SEAL_BYTES) -> HazelcastStore:
    client = cast(HazelcastClient, FakeClient(imap))
    return HazelcastStore(client, writer=writer, ttl_s=60.0, seal_bytes=seal_bytes)


def summed(*counts: int, bucket: int = 1) -> Partial:
    """What the store holds after deltas of these counts (the last offset highest)."""
    total = partial(bucket, counts[0])
    for count in counts[1:]:
        total.merge_from(partial(bucket, count))
    return total


def loaded(store_partials: list[Partial]) -> dict[int, Partial]:
    return {p.bucket: p for p in store_partials}


@pytest.mark.parametrize("fault", ["lost response", "dropped request", "offline"])
@pytest.mark.parametrize("first", ["create", "replace", "append"])
async def test_a_write_whose_outcome_is_unknown_is_never_added_twice(
    imap: FakeMap, first: str, fault: str
) -> None:
    """A delta that may have landed must not be sent again on trust: the writer's
    next write of the bucket, without a reload, is fenced; after a reload it adds
    to whatever the store holds, so nothing is counted twice."""
    store = store_on(imap, seal_bytes=0 if first == "append" else 1 << 20)
    if first != "create":
        assert await store.write(SOURCE, 0, [partial(1, 1)]) == []
    imap.lose_responses = fault == "lost response"
    imap.drop_requests = fault == "dropped request"
    imap.offline = fault == "offline"
    with pytest.raises(StoreUnavailable):
        await store.write(SOURCE, 0, [partial(1, 2)])
    imap.offline = False
    landed = fault == "lost response"
    before = [1] if first != "create" else []
    assert await store.write(SOURCE, 0, [partial(1, 2)]) == ([1] if before or landed else [])
    if not before and not landed:
        return  # nothing was there: the retry created the bucket, which is right
    reread = loaded(await store.load(SOURCE, 0))
    assert reread[1] == summed(*before, *([2] if landed else []))
    assert await store.write(SOURCE, 0, [partial(1, 3)]) == []
    assert loaded(await store_on(imap, "observer").load(SOURCE, 0))[1] == summed(
        *before, *([2] if landed else []), 3
    )
    assert all(ttl == 60.0 for ttl in imap.ttls.values())


async def test_another_writer_after_an_unknown_outcome_still_fences(imap: FakeMap) -> None:
    store, other = store_on(imap), store_on(imap, "pod-b")
    assert await store.write(SOURCE, 0, [partial(1, 1)]) == []
    imap.lose_responses = 1
    with pytest.raises(StoreUnavailable):
        await store.write(SOURCE, 0, [partial(1, 2)])
    await other.load(SOURCE, 0)
    assert await other.write(SOURCE, 0, [partial(1, 5)]) == []
    assert await store.write(SOURCE, 0, [partial(1, 3)]) == [1]
    assert stored(imap, 1) == summed(1, 2, 5)


async def test_calls_per_write_are_counted(imap: FakeMap) -> None:
    store = store_on(imap)
    assert await store.write(SOURCE, 0, [partial(1, 1), partial(2, 1)]) == []
    assert store.stats.last_write_calls == 2  # two put_if_absent
    assert await store.write(SOURCE, 0, [partial(1, 2), partial(2, 2), partial(3, 1)]) == []
    assert store.stats.last_write_calls == 5  # 2 x (replace_if_same + set_ttl) + 1 create
    assert (store.stats.writes, store.stats.entries, store.stats.calls) == (2, 5, 7)
    assert stored(imap, 1) == summed(1, 2)


def wide(bucket: int, keys: range, offset: int) -> Partial:
    """A delta with one event for each key in ``keys``."""
    made = Partial(bucket, 1, offset)
    for key in keys:
        made.by[0][f"app-{key}"] = one = partial(bucket, 1).total
        made.total.merge_from(one)
    return made


SMALL_SEAL = len(encode_partial(wide(7, range(60), 0), "pod-a"))
"""A threshold that 40 keys stay under and 80 pass."""


async def test_a_bucket_seals_when_it_grows_past_the_threshold_then_appends(
    imap: FakeMap,
) -> None:
    store = store_on(imap, seal_bytes=SMALL_SEAL)
    base = partial_key(PartialKey(SOURCE, 0, 7))
    deltas = [wide(7, range(i * 40, i * 40 + 40), i) for i in range(5)]
    assert await store.write(SOURCE, 0, deltas[:1]) == []
    assert not is_sealed(imap.entries[base])  # 40 keys: whole
    assert await store.write(SOURCE, 0, deltas[1:2]) == []
    assert is_sealed(imap.entries[base])  # 80 keys: past SMALL_SEAL, sealed
    assert store.stats.last_write_calls == 2  # replace_if_same + set_ttl
    assert decode_partial(imap.entries[base]) == summed_of(deltas[:2])
    for n, delta in enumerate(deltas[2:], start=1):
        assert await store.write(SOURCE, 0, [delta]) == []
        assert store.stats.last_write_calls == 1  # put_if_absent with the TTL
        assert decode_partial(imap.entries[f"{base}#{n}"]) == delta
        assert imap.ttls[f"{base}#{n}"] == 60.0
    assert (store.stats.sealed, store.stats.segments) == (1, 3)
    assert len(imap.entries[f"{base}#3"]) < len(imap.entries[base])  # a delta, not the bucket

    # A reload merges base and segments, and learns the next segment.
    other = store_on(imap, "pod-b", seal_bytes=SMALL_SEAL)
    assert await other.load(SOURCE, 0) == [summed_of(deltas)]
    assert await other.write(SOURCE, 0, [partial(7, 99)]) == []
    assert f"{base}#4" in imap.entries
    # The first writer's next segment is taken: fenced, nothing overwritten.
    assert await store.write(SOURCE, 0, [partial(7, 98)]) == [7]
    assert decode_partial(imap.entries[f"{base}#4"]) == partial(7, 99)


async def test_the_seal_fences_a_writer_with_an_unsealed_view(imap: FakeMap) -> None:
    old, new = store_on(imap, seal_bytes=SMALL_SEAL), store_on(imap, "pod-b", seal_bytes=SMALL_SEAL)
    assert await old.write(SOURCE, 0, [wide(7, range(40), 0)]) == []
    await new.load(SOURCE, 0)
    assert await new.write(SOURCE, 0, [wide(7, range(40, 80), 1)]) == []  # seals
    assert await old.write(SOURCE, 0, [partial(7, 5)]) == [7]
    assert await store_on(imap, "observer").load(SOURCE, 0) == [
        summed_of([wide(7, range(40), 0), wide(7, range(40, 80), 1)])
    ]


async def test_segments_without_a_base_load_as_sealed(imap: FakeMap) -> None:
    store = store_on(imap, seal_bytes=0)  # every bucket seals at its first write
    for count in (1, 2, 3):
        assert await store.write(SOURCE, 0, [partial(7, count)]) == []
    del imap.entries[partial_key(PartialKey(SOURCE, 0, 7))]  # the base expired first
    other = store_on(imap, "pod-b")
    assert await other.load(SOURCE, 0) == [summed(2, 3, bucket=7)]
    assert await other.write(SOURCE, 0, [partial(7, 4)]) == []
    assert partial_key(PartialKey(SOURCE, 0, 7)) not in imap.entries  # appended, not recreated
    assert decode_partial(imap.entries[partial_key(PartialKey(SOURCE, 0, 7, 3))]) == partial(7, 4)


async def test_a_sealed_base_whose_ttl_was_lost_gets_it_at_the_next_append(
    imap: FakeMap,
) -> None:
    store = store_on(imap, seal_bytes=SMALL_SEAL)
    base = partial_key(PartialKey(SOURCE, 0, 7))
    assert await store.write(SOURCE, 0, [wide(7, range(40), 0)]) == []
    imap.lose_responses = 1  # the sealing replace lands; its set_ttl is never sent
    with pytest.raises(StoreUnavailable):
        await store.write(SOURCE, 0, [wide(7, range(40, 80), 1)])
    assert is_sealed(imap.entries[base])
    assert imap.ttls[base] == 0.0
    await store.load(SOURCE, 0)
    assert await store.write(SOURCE, 0, [partial(7, 5)]) == []
    assert imap.ttls[base] == 60.0
    assert await store.write(SOURCE, 0, [partial(7, 6)]) == []
    assert store.stats.last_write_calls == 1


async def test_a_200_app_bucket_never_seals(imap: FakeMap) -> None:
    """At low cardinality the layout is the one before segments: one entry per
    bucket, replaced whole (two calls per bucket and flush)."""
    store = store_on(imap)
    for flush in range(20):
        assert await store.write(SOURCE, 0, [wide(7, range(200), flush)]) == []
    assert list(imap.entries) == [partial_key(PartialKey(SOURCE, 0, 7))]
    assert store.stats.sealed == 0
    assert store.stats.last_write_calls == 2


def summed_of(deltas: list[Partial]) -> Partial:
    total = deltas[0].copy()
    for delta in deltas[1:]:
        total.merge_from(delta)
    return total


def test_codec_round_trips_and_tags_the_writer() -> None:
    made = partial(1_700_000_000, 12)
    made.drop("late")
    for deflate in (False, True):
        value = encode_partial(made, "pod-a_x1", deflate=deflate)
        assert decode_partial(value) == made
        assert decode_partial(bytes(value)) == made
        assert writer_of(value) == "pod-a_x1"
    assert encode_partial(made, "pod-a") != encode_partial(made, "pod-b")
    for deflate in (False, True):
        value = sealed(encode_partial(made, "pod-a", deflate=deflate))
        assert is_sealed(value)
        assert decode_partial(value) == made
        assert not is_sealed(encode_partial(made, "pod-a", deflate=deflate))
    with pytest.raises(CorruptValue):
        decode_partial(bytearray(b"\x09abc"))
    with pytest.raises(CorruptValue):
        decode_partial(bytearray(b"\x01\xc1"))


def test_keys_parse_from_the_right_and_partition_ranges_are_tight() -> None:
    key = PartialKey("team|crashes", 3, -60)
    assert parse_partial_key(partial_key(key)) == key
    assert parse_partial_key("latest") is None
    assert parse_partial_key("a|b|c") is None
    segment = PartialKey("team|crashes", 3, -60, 12)
    assert partial_key(segment) == "team|crashes|3|-60#12"
    assert parse_partial_key(partial_key(segment)) == segment
    for odd in ("c|1|5#0", "c|1|5#01", "c|1|5#", "c|1|5#x", "c|1|#2", "c|1|5#-1"):
        assert parse_partial_key(odd) is None, odd
    # What a reader that predates segments made of a segment's key: not a key of its own.
    assert not partial_key(segment).rsplit("|", 2)[2].lstrip("-").isdigit()
    prefix = partition_prefix("crashes", 1)
    inside = [partial_key(PartialKey("crashes", 1, b)) for b in (0, 5, 1_700_000_000)]
    inside += [partial_key(PartialKey("crashes", 1, 5, n)) for n in (1, 10, 999)]
    outside = [partial_key(PartialKey("crashes", p, 0)) for p in (0, 10, 11, 2)]
    assert all(prefix <= k < prefix_end(prefix) for k in inside)
    assert not any(prefix <= k < prefix_end(prefix) for k in outside)


async def test_a_client_that_fails_to_start_after_the_probe_is_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hazelcast.asyncio import HazelcastClient
    from hazelcast.errors import HazelcastError

    from aggregator.adapters.hazelcast.connection import connect
    from aggregator.ports.store import StoreUnavailable

    class Probe:
        async def shutdown(self) -> None:
            return None

    started: list[str] = []

    async def create_and_start(**config: object) -> Probe:
        started.append(str(config["client_name"]))
        if str(config["client_name"]).endswith("-probe"):
            return Probe()
        raise HazelcastError("Listener cannot be added")

    monkeypatch.setattr(HazelcastClient, "create_and_start", create_and_start)
    with pytest.raises(StoreUnavailable, match="Listener cannot be added"):
        await connect(["127.0.0.1:5701"], "dev", client_name="pod_x")
    assert started == ["pod_x-probe", "pod_x"]
