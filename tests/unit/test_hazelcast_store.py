"""HazelcastStore's handling of writes whose outcome is unknown, and its codec,
on a fake IMap (no server): a response lost after the member applied the write
must not make the writer fence itself, and one lost before must not either.
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
    parse_partial_key,
    partial_key,
    partition_prefix,
    prefix_end,
    writer_of,
)
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


def store_on(imap: FakeMap, writer: str = "pod-a") -> HazelcastStore:
    client = cast(HazelcastClient, FakeClient(imap))
    return HazelcastStore(client, writer=writer, ttl_s=60.0)


@pytest.mark.parametrize("first", ["create", "replace"])
async def test_a_write_that_landed_without_a_response_is_still_ours(
    imap: FakeMap, first: str
) -> None:
    store = store_on(imap)
    if first == "replace":
        assert await store.write(SOURCE, 0, [partial(1, 1)]) == []
    imap.lose_responses = 1
    with pytest.raises(StoreUnavailable, match="TargetDisconnectedError"):
        await store.write(SOURCE, 0, [partial(1, 2)])
    assert stored(imap, 1) == partial(1, 2)  # it landed
    assert await store.write(SOURCE, 0, [partial(1, 3)]) == []
    assert stored(imap, 1) == partial(1, 3)
    assert await store.write(SOURCE, 0, [partial(1, 4)]) == []  # back to one candidate
    assert imap.ttls[partial_key(PartialKey(SOURCE, 0, 1))] == 60.0


@pytest.mark.parametrize("first", ["create", "replace"])
async def test_a_write_that_never_arrived_changes_nothing(imap: FakeMap, first: str) -> None:
    store = store_on(imap)
    if first == "replace":
        assert await store.write(SOURCE, 0, [partial(1, 1)]) == []
    imap.drop_requests = 1
    with pytest.raises(StoreUnavailable):
        await store.write(SOURCE, 0, [partial(1, 2)])
    assert await store.write(SOURCE, 0, [partial(1, 3)]) == []
    assert stored(imap, 1) == partial(1, 3)


async def test_offline_errors_are_not_remembered_as_attempts(imap: FakeMap) -> None:
    store = store_on(imap)
    assert await store.write(SOURCE, 0, [partial(1, 1)]) == []
    imap.offline = True
    for count in range(2, 10):
        with pytest.raises(StoreUnavailable, match="ClientOfflineError"):
            await store.write(SOURCE, 0, [partial(1, count)])
    imap.offline = False
    assert await store.write(SOURCE, 0, [partial(1, 10)]) == []
    assert store.stats.last_write_calls == 2  # replace_if_same + set_ttl, no extra candidates


async def test_another_writer_after_an_unknown_outcome_still_fences(imap: FakeMap) -> None:
    store, other = store_on(imap), store_on(imap, "pod-b")
    assert await store.write(SOURCE, 0, [partial(1, 1)]) == []
    imap.lose_responses = 1
    with pytest.raises(StoreUnavailable):
        await store.write(SOURCE, 0, [partial(1, 2)])
    await other.load(SOURCE, 0)
    assert await other.write(SOURCE, 0, [partial(1, 5)]) == []
    assert await store.write(SOURCE, 0, [partial(1, 3)]) == [1]
    assert stored(imap, 1) == partial(1, 5)


async def test_calls_per_write_are_counted(imap: FakeMap) -> None:
    store = store_on(imap)
    assert await store.write(SOURCE, 0, [partial(1, 1), partial(2, 1)]) == []
    assert store.stats.last_write_calls == 2  # two put_if_absent
    assert await store.write(SOURCE, 0, [partial(1, 2), partial(2, 2), partial(3, 1)]) == []
    assert store.stats.last_write_calls == 5  # 2 x (replace_if_same + set_ttl) + 1 create
    assert (store.stats.writes, store.stats.entries, store.stats.calls) == (2, 5, 7)


def test_codec_round_trips_and_tags_the_writer() -> None:
    made = partial(1_700_000_000, 12)
    made.drop("late")
    for deflate in (False, True):
        value = encode_partial(made, "pod-a_x1", deflate=deflate)
        assert decode_partial(value) == made
        assert decode_partial(bytes(value)) == made
        assert writer_of(value) == "pod-a_x1"
    assert encode_partial(made, "pod-a") != encode_partial(made, "pod-b")
    with pytest.raises(CorruptValue):
        decode_partial(bytearray(b"\x09abc"))
    with pytest.raises(CorruptValue):
        decode_partial(bytearray(b"\x01\xc1"))


def test_keys_parse_from_the_right_and_partition_ranges_are_tight() -> None:
    key = PartialKey("team|crashes", 3, -60)
    assert parse_partial_key(partial_key(key)) == key
    assert parse_partial_key("latest") is None
    assert parse_partial_key("a|b|c") is None
    prefix = partition_prefix("crashes", 1)
    inside = [partial_key(PartialKey("crashes", 1, b)) for b in (0, 5, 1_700_000_000)]
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
