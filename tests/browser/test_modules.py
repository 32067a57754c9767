"""The dashboard's pure modules (epoch gate, cadence, formatting, chart scale) as
tables, run in the browser itself: the page's files are served to Chromium
through request routing, with no server."""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.browser.dashboard_page import ConsoleGuard

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Route

pytestmark = pytest.mark.browser

DASHBOARD = Path(__file__).resolve().parents[2] / "dashboard"
ORIGIN = "http://dashboard.test"


@pytest.fixture
def modules(browser: Browser) -> Iterator[Page]:
    """A blank page on an origin whose /static/ is the dashboard directory."""
    context = browser.new_context(locale="en-US", timezone_id="UTC")
    page = context.new_page()
    guard = ConsoleGuard()
    guard.watch(page)

    def serve(route: Route) -> None:
        path = route.request.url.removeprefix(ORIGIN)
        if path == "/":
            route.fulfill(body="<!doctype html><title>modules</title>", content_type="text/html")
            return
        file = DASHBOARD / path.removeprefix("/static/")
        if not path.startswith("/static/") or not file.is_file():
            route.fulfill(status=404, body="")
            return
        kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        if file.suffix == ".js":
            kind = "text/javascript"
        route.fulfill(body=file.read_bytes(), content_type=kind)

    page.route(f"{ORIGIN}/**", serve)
    page.goto(f"{ORIGIN}/")
    yield page
    guard.assert_clean()
    context.close()


def run(page: Page, module: str, body: str) -> Any:
    """Evaluate ``body`` (an async function body) with ``m`` bound to the module."""
    return page.evaluate(f"async () => {{ const m = await import('/static/{module}'); {body} }}")


SNAPSHOT = """
  const snap = (epoch, at) => ({
    schema: 1, epoch, generated_at: at, leader: `pod-${epoch}_x`,
    total: { count: 1 }, window: { seconds: 300, bucket_seconds: 1 }, series: [],
  });
"""


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        pytest.param(
            # (epoch, generated_at, connection, now_ms)
            [(3, 100.0, 1, 0), (3, 101.0, 1, 1000), (3, 101.0, 1, 1100), (3, 100.5, 1, 1200)],
            [(True, "first"), (True, "next"), (False, "duplicate"), (False, "duplicate")],
            id="same-epoch: newer only",
        ),
        pytest.param(
            [(3, 100.0, 1, 0), (4, 99.0, 1, 1000), (3, 101.0, 1, 2000)],
            [(True, "first"), (True, "newer-epoch"), (False, "epoch")],
            id="higher epoch wins even with an older clock; the deposed one is dropped",
        ),
        pytest.param(
            [(3, 100.0, 1, 0), (2, 200.0, 1, 0), (2, 201.0, 1, 60_000)],
            [(True, "first"), (False, "epoch"), (False, "epoch")],
            id="lower epoch on the same connection: always dropped",
        ),
        pytest.param(
            [(3, 100.0, 1, 0), (0, 200.0, 2, 10_000), (0, 202.0, 2, 14_000), (0, 205.0, 2, 15_000)],
            [(True, "first"), (False, "epoch"), (False, "epoch"), (True, "epoch-reset")],
            id="new connection, epochs started over: followed after 5 ticks",
        ),
        pytest.param(
            [(3, 100.0, 1, 0), (0, 200.0, 2, 10_000), (3, 101.0, 3, 12_000), (0, 205.0, 2, 16_000)],
            [(True, "first"), (False, "epoch"), (True, "next"), (False, "epoch")],
            id="a current snapshot in between restarts the wait",
        ),
    ],
)
def test_epoch_gate(
    modules: Page,
    steps: list[tuple[int, float, int, int]],
    expected: list[tuple[bool, str]],
) -> None:
    decisions = run(
        modules,
        "snapshots.js",
        SNAPSHOT
        + f"""
        const gate = new m.SnapshotGate();
        const steps = {json.dumps(steps)};
        return steps.map(([epoch, at, conn, now]) => gate.offer(snap(epoch, at), conn, now, 1));
        """,
    )
    # Accepted: why; dropped: what kind of drop.
    got = [(d["accept"], d["reason"] if d["accept"] else d["kind"]) for d in decisions]
    assert got == expected


def test_gate_rejects_what_is_not_a_snapshot(modules: Page) -> None:
    reasons = run(
        modules,
        "snapshots.js",
        """
        const gate = new m.SnapshotGate();
        return [null, [], {schema: 2}, {schema: 1}, {schema: 1, epoch: 1, generated_at: 1}]
          .map((value) => gate.offer(value, 1, 0, 1));
        """,
    )
    assert [(r["accept"], r["kind"]) for r in reasons] == [(False, "invalid")] * 5
    assert reasons[2]["reason"] == "invalid: schema 2, expected 1"
    assert reasons[3]["reason"] == "invalid: no epoch"


def test_tick_is_learned_from_the_snapshot_cadence(modules: Page) -> None:
    ticks = run(
        modules,
        "snapshots.js",
        SNAPSHOT
        + """
        const t = new m.TickEstimator();
        const out = [t.seconds];
        t.observe({ ...snap(1, 10), window: { bucket_seconds: 5 } });
        out.push(t.seconds);
        for (const at of [12, 14, 16, 26, 28]) t.observe(snap(1, at));
        out.push(t.seconds);
        t.observe(snap(2, 100));  // a new leader: no gap measured across it
        out.push(t.seconds);
        return out;
        """,
    )
    # Fallback 1 s, then the bucket, then the median gap (a 10 s outage ignored).
    assert ticks == [1, 5, 2, 2]


def test_formatting(modules: Page) -> None:
    got = run(
        modules,
        "format.js",
        """
        return {
          count: [m.count(0), m.count(1234567), m.count(null), m.count(NaN)],
          rate: [m.rate(61.58), m.rate(2025.94), m.rate(12345.6)],
          millis: [m.millis(0.4234), m.millis(12.44), m.millis(148.6), m.millis(1211.2),
                   m.millis(null)],
          percent: [m.percent(0.3531), m.percent(0.0004), m.percent(0), m.percent(1)],
          duration: [m.duration(0.42), m.duration(12.7), m.duration(185), m.duration(7440),
                     m.duration(90000)],
          clock: [m.clock(0), m.shortClock(3600 * 13 + 60 * 5)],
          span: [m.span(300), m.span(90), m.span(7200)],
        };
        """,
    )
    assert got == {
        "count": ["0", "1,234,567", "—", "—"],
        "rate": ["61.6", "2,025.9", "12,346"],
        "millis": ["0.42", "12.4", "149", "1,211", "—"],
        "percent": ["35.3%", "<0.1%", "0.0%", "100.0%"],
        "duration": ["0.4 s", "12 s", "3 m 05 s", "2 h 04 m", "1 d 1 h"],
        "clock": ["00:00:00", "13:05"],
        "span": ["5 min", "90 s", "2 h"],
    }


@pytest.mark.parametrize(
    ("raw", "step"),
    [(0, 1), (0.3, 1), (7, 10), (230, 500), (450, 500), (1001, 2000), (2100, 5000)],
)
def test_chart_steps_are_nice(modules: Page, raw: float, step: int) -> None:
    assert run(modules, "chart.js", f"return m.niceStep({raw}, 1);") == step
