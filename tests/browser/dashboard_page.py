"""The dashboard as the tests see it: what the page shows, read from the DOM in one
go, and a guard that collects every error the browser logs."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tests.browser.demo_server import DemoServer

if TYPE_CHECKING:
    from playwright.sync_api import ConsoleMessage, Error, Page

KPIS = ("count", "rate", "distinct", "p50", "p90", "p99", "rejected", "late")

# One evaluate() reads everything, so the values belong to one rendered snapshot.
_READ_JS = """
() => {
  const q = (selector) => document.querySelector(selector);
  const data = document.body.dataset;
  const number = (text) => (text === undefined ? null : Number(text));
  const kpi = (name) => {
    const node = q(`[data-testid="kpi-${name}"]`);
    return { text: node.textContent, value: number(node.dataset.value) };
  };
  const banner = q("#banner");
  return {
    state: data.state,
    stale: data.stale === "true",
    epoch: number(data.epoch),
    generatedAt: number(data.generatedAt),
    leaderIdentity: q("#leader").dataset.identity ?? null,
    leaderText: q("#leader").textContent,
    epochText: q("#epoch").textContent,
    memberCount: q("#member-count").textContent,
    connection: q("#conn-text").textContent,
    banner: banner.hidden ? null : banner.textContent,
    kpis: Object.fromEntries(KPIS.map((name) => [name, kpi(name)])),
    tops: Object.fromEntries(
      [...document.querySelectorAll(".top-panel")].map((panel) => [
        panel.dataset.dimension,
        [...panel.querySelectorAll(".top-row:not([hidden])")].map((row) => ({
          key: row.dataset.key,
          count: row.querySelector(".count").textContent,
          share: row.querySelector(".share").textContent,
        })),
      ]),
    ),
    members: [...document.querySelectorAll("#members-body tr[data-pod]")].map((row) => ({
      pod: row.dataset.pod,
      identity: row.title,
      leader: row.dataset.leader === "true",
      partitions: row.querySelector(".partitions").textContent,
    })),
    chartLine: q("#chart path.line")?.getAttribute("d") ?? "",
    // The page's own bookkeeping (app.js exposes it for the browser console).
    ageS: globalThis.dashboard?.shown.snapshot
      ? (performance.now() - globalThis.dashboard.shown.receivedAt) / 1000
      : null,
    tickS: globalThis.dashboard?.ticks.seconds ?? null,
  };
}
""".replace("KPIS", json.dumps(KPIS))


@dataclass(frozen=True)
class Kpi:
    text: str
    value: float | None

    def shown_number(self) -> float:
        """The displayed text as a number (thousands separators removed)."""
        return float(self.text.replace(",", ""))


@dataclass(frozen=True)
class Shown:
    """What the page displays at one moment."""

    state: str
    stale: bool
    epoch: int | None
    generated_at: float | None
    leader_identity: str | None
    leader_text: str
    epoch_text: str
    member_count: str
    connection: str
    banner: str | None
    kpis: dict[str, Kpi]
    tops: dict[str, list[dict[str, str]]]
    members: list[dict[str, Any]]
    chart_line: str
    age_s: float | None
    """Seconds since the snapshot on screen arrived."""
    tick_s: float | None
    """The cadence the page expects."""

    @classmethod
    def from_page(cls, raw: dict[str, Any]) -> Shown:
        epoch = raw["epoch"]
        return cls(
            state=raw["state"],
            stale=raw["stale"],
            epoch=None if epoch is None else int(epoch),
            generated_at=raw["generatedAt"],
            leader_identity=raw["leaderIdentity"],
            leader_text=raw["leaderText"],
            epoch_text=raw["epochText"],
            member_count=raw["memberCount"],
            connection=raw["connection"],
            banner=raw["banner"],
            kpis={name: Kpi(**value) for name, value in raw["kpis"].items()},
            tops=raw["tops"],
            members=raw["members"],
            chart_line=raw["chartLine"],
            age_s=raw["ageS"],
            tick_s=raw["tickS"],
        )

    @property
    def live(self) -> bool:
        return self.state == "live" and not self.stale


@dataclass
class ConsoleGuard:
    """Every console error and uncaught exception of the page.

    While the server is deliberately down, the browser itself logs each refused
    websocket connection (and a demo-controls poll caught by the stop) as a
    console error; a test that stops the server allows exactly those lines
    (message and URL) with ``allow``, and everything else still fails.
    """

    problems: list[str] = field(default_factory=list)
    allowed: list[str] = field(default_factory=list)
    _patterns: list[re.Pattern[str]] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        page.on("console", self._console)
        page.on("pageerror", self._page_error)

    def allow(self, pattern: str) -> None:
        self._patterns.append(re.compile(pattern))

    def assert_clean(self) -> None:
        assert not self.problems, "the browser logged errors:\n" + "\n".join(self.problems)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type not in {"error", "assert"}:
            return
        line = f"{message.text} ({message.location.get('url', '')})"
        if any(pattern.search(line) for pattern in self._patterns):
            self.allowed.append(line)
            return
        self.problems.append(f"console.{message.type}: {line}")

    def _page_error(self, error: Error) -> None:
        self.problems.append(f"uncaught: {error.message}\n{error.stack or ''}")


class DashboardPage:
    def __init__(self, page: Page, server: DemoServer, console: ConsoleGuard) -> None:
        self.page = page
        self.server = server
        self.console = console

    def open(self) -> Shown:
        self.page.goto(self.server.base_url + "/")
        return self.wait_until(lambda shown: shown.live, 15.0, "the page shows live data")

    def kill_with_button(self, pod: str) -> None:
        """Click the demo panel's Kill button of ``pod`` and wait for the answer
        (so that a later server stop does not catch the request in flight).
        """
        with self.page.expect_response(
            lambda response: response.url.endswith(f"/api/demo/pods/{pod}/kill"),
            timeout=5_000,
        ) as answer:
            self.page.click(f'[data-testid="demo-kill-{pod}"]')
        assert answer.value.ok, f"kill {pod}: HTTP {answer.value.status}"

    def read(self) -> Shown:
        return Shown.from_page(self.page.evaluate(_READ_JS))

    def wait_until(self, condition: Callable[[Shown], bool], timeout_s: float, what: str) -> Shown:
        """Poll the page every 100 ms until ``condition`` holds."""
        deadline = time.monotonic() + timeout_s
        while True:
            shown = self.read()
            if condition(shown):
                return shown
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s} s waiting until {what}: {shown}")
            self.page.wait_for_timeout(100)

    def next_snapshot(self, after: Shown, timeout_s: float = 5.0) -> Shown:
        """The first snapshot shown after ``after``."""
        return self.wait_until(
            lambda shown: (shown.generated_at or 0) > (after.generated_at or 0),
            timeout_s,
            "the page shows a newer snapshot",
        )

    def shown_with_stats(self, attempts: int = 20) -> tuple[Shown, dict[str, Any]]:
        """What the page shows and ``/api/stats`` for the same snapshot.

        Reads the DOM, then fetches the API; if a tick fell in between (the API
        is one snapshot ahead), try again.
        """
        shown = self.read()
        for _ in range(attempts):
            shown = self.read()
            stats = self.server.stats()
            if stats["generated_at"] == shown.generated_at:
                return shown, stats
            self.page.wait_for_timeout(50)
        raise AssertionError(f"the page never showed the API's latest snapshot: {shown}")


def assert_matches_stats(shown: Shown, stats: dict[str, Any]) -> None:
    """The page shows exactly the numbers of ``stats`` (and formats them sensibly)."""
    total = stats["total"]
    value = total["value"] or {}
    expected: dict[str, float | None] = {
        "count": total["count"],
        "rate": total["rate_per_s"],
        "distinct": total["distinct"],
        "p50": value.get("p50"),
        "p90": value.get("p90"),
        "p99": value.get("p99"),
        "rejected": stats["rejected"]["count"],
        "late": stats["late"],
    }
    for name, want in expected.items():
        kpi = shown.kpis[name]
        assert kpi.value == want, f"{name}: page holds {kpi.value}, /api/stats says {want}"
        if want is None:
            assert kpi.text == "—", f"{name}: {kpi.text!r} for a missing value"
            continue
        # Shown rounded: counts exactly, rates to 0.1, milliseconds to 3 digits.
        tolerance = 0.0 if name in {"count", "distinct", "rejected", "late"} else 0.05
        if name.startswith("p"):
            tolerance = 0.5 if want >= 100 else 0.05 if want >= 10 else 0.005
        assert math.isclose(kpi.shown_number(), want, abs_tol=tolerance + 1e-9), (
            f"{name}: page shows {kpi.text!r} for {want}"
        )
    assert shown.epoch == stats["epoch"]
    assert shown.leader_identity == stats["leader"]
    assert shown.leader_text == pod_of(stats["leader"], stats["members"])
    assert shown.member_count == str(len(stats["members"]))
    for dimension, rows in stats["by"].items():
        shown_rows = shown.tops.get(dimension)
        assert shown_rows is not None, f"no panel for dimension {dimension!r}"
        assert [row["key"] for row in shown_rows] == [row["key"] for row in rows]
        assert [int(row["count"].replace(",", "")) for row in shown_rows] == [
            row["count"] for row in rows
        ]
    assert set(shown.tops) == set(stats["by"])
    pods = sorted(stats["members"], key=lambda m: natural(m["pod"]))
    assert [m["pod"] for m in shown.members] == [m["pod"] for m in pods]
    assert [m["leader"] for m in shown.members] == [m["identity"] == stats["leader"] for m in pods]


def pod_of(identity: str, members: list[dict[str, Any]]) -> str:
    for member in members:
        if member["identity"] == identity:
            return str(member["pod"])
    return identity.rsplit("_", 1)[0]


def natural(text: str) -> list[int | str]:
    """Sort key that puts pod-2 before pod-10, as the page does."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]
