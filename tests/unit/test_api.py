"""The HTTP and websocket API, driven in-process against the demo cluster."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from aggregator.core.accumulate import FoldSettings
from aggregator.core.election import ElectionTimings
from aggregator.core.events import EventSchema
from aggregator.services.pod import PodSettings
from aggregator.services.reduce_stage import ReduceSettings
from aggregator.wiring.demo import DemoCluster


@pytest.fixture
def client() -> Iterator[TestClient]:
    import contextlib

    from aggregator.api.app import create_app

    schema = EventSchema()
    settings = PodSettings(
        fold=FoldSettings(schema, 1, 60, 10.0, 60.0, 65536),
        reduce=ReduceSettings(schema.dimensions, 60, 1, 0.25, 5),
        flush_interval_s=0.2,
        timings=ElectionTimings(3.0, 2.0, 0.5),
        heartbeat_s=0.3,
    )
    cluster = DemoCluster(settings, pods=2, rate=500, seed=3, session_timeout_s=2.0)

    @contextlib.asynccontextmanager
    async def lifespan(_: object) -> AsyncIterator[None]:
        await cluster.start()
        yield
        await cluster.close()

    app = create_app(cluster, demo=cluster, lifespan=lifespan)
    with TestClient(app) as test_client:
        deadline = time.monotonic() + 10
        while test_client.get("/api/stats").status_code != 200:
            assert time.monotonic() < deadline, "no snapshot within 10 s"
            time.sleep(0.1)
        yield test_client


def test_stats_has_schema_1_and_live_fields(client: TestClient) -> None:
    stats = client.get("/api/stats").json()
    assert stats["schema"] == 1
    assert set(stats) >= {
        "window",
        "total",
        "by",
        "series",
        "rejected",
        "leader",
        "epoch",
        "generated_at",
        "members",
        "late",
        "future",
    }
    assert len(stats["series"]) == 60
    assert set(stats["by"]) == {"app", "platform", "crash_type"}


def test_leader_members_health(client: TestClient) -> None:
    leader = client.get("/api/leader").json()
    assert leader["leader"].startswith("pod-")
    assert leader["lease"] == "demo/stream-aggregator"
    time.sleep(0.8)
    members = client.get("/api/members").json()
    assert sorted(m["pod"] for m in members) == ["pod-0", "pod-1"]
    # every pod answers with the elected leader marked, not with itself
    marked = [m["identity"] for m in members if m["leader"]]
    assert marked == [client.get("/api/leader").json()["leader"]]
    assert leader["demo"] is True
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").json() == {"ready": True, "why": []}


def test_metrics_expose_counters(client: TestClient) -> None:
    text = client.get("/metrics").text
    assert 'aggregator_records_total{pod="pod-0"}' in text
    assert "aggregator_leader{" in text
    assert "aggregator_reduce_tick_seconds_count" in text


def test_metrics_expose_the_process_and_its_event_loop(client: TestClient) -> None:
    # What an operator (and the soak) watches for leaks: memory, descriptors, tasks.
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    [rss] = families["process_resident_memory_bytes"].samples
    assert rss.value > 20 * 2**20
    [fds] = families["process_open_fds"].samples
    assert 3 <= fds.value < 1000
    [tasks] = families["aggregator_asyncio_tasks"].samples
    assert 3 <= tasks.value < 100  # the pod's map, elector and members loops at least


def test_websocket_pushes_snapshots(client: TestClient) -> None:
    with client.websocket_connect("/ws/stats") as socket:
        first = socket.receive_json()
        second = socket.receive_json()
    assert first["schema"] == second["schema"] == 1
    assert second["generated_at"] > first["generated_at"]


def test_dashboard_is_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert "<html" in page.text.lower()


def test_demo_kill_and_restart(client: TestClient) -> None:
    killed = client.post("/api/demo/pods/pod-1/kill").json()
    assert [p["alive"] for p in killed["pods"]] == [True, False]
    assert client.post("/api/demo/pods/pod-1/kill").status_code == 409
    assert client.post("/api/demo/pods/nope/kill").status_code == 404
    restarted = client.post("/api/demo/pods/pod-1/restart").json()
    assert all(p["alive"] for p in restarted["pods"])


FUZZ_SEGMENTS = [
    "api", "stats", "leader", "members", "demo", "pods", "pod-0", "pod-1", "kill", "stop",
    "restart", "ws", "static", "metrics", "healthz", "readyz", "..", "%2e%2e", "%00", "%ff",
    "x" * 300, "ä", "☃", "%", "%%", ";", "'", '"', "<script>", "index.html", "app.js", "",
]  # fmt: skip
FUZZ_QUERIES = ["", "?", "?a=1", "?a", "?=", "?%zz", "?a=" + "b" * 5000, "?x=%00&y=☃", "?&&&"]


def test_no_request_path_or_query_string_makes_a_500(client: TestClient) -> None:
    """A short fuzz of what a browser or a scanner may send: never a server error."""
    import random

    rng = random.Random(16)
    tried = 0
    for _ in range(400):
        path = "/" + "/".join(rng.choice(FUZZ_SEGMENTS) for _ in range(rng.randint(0, 4)))
        path = "/" + path.lstrip("/")  # "//x" would name a host, not a path
        url = path + rng.choice(FUZZ_QUERIES)
        method = rng.choice(["GET", "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS"])
        answer = client.request(method, url)
        tried += 1
        assert answer.status_code < 500, (method, url, answer.status_code, answer.text[:200])
    assert tried == 400
