"""The dashboard in real headless Chromium against ``aggregator demo``: the numbers
are the API's and move every tick, the header follows a failover, and the page
comes back by itself after the server restarts."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.browser.dashboard_page import DashboardPage, Shown, assert_matches_stats, pod_of
from tests.browser.demo_server import DEMO_LEASE_S, DEMO_RETRY_S

pytestmark = pytest.mark.browser

DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"
TICK_S = 1.0
STALE_AFTER_S = 3 * TICK_S
# A killed leader's lease expires, then a standby acquires on its next retry
# (jittered up to 1.2 x) and publishes on its next tick; the page shows it on arrival.
FAILOVER_BOUND_S = DEMO_LEASE_S + 2 * DEMO_RETRY_S + 3.0
# After the server is back: the longest reconnect backoff (10 s) plus startup.
RECONNECT_BOUND_S = 10.0 + 5.0
# When epochs start over (a new lease), the page waits 5 ticks before believing them.
EPOCH_RESET_S = 5 * TICK_S
# What the browser itself logs while the server is deliberately down: refused
# websocket connections, and demo API requests the stop caught in flight.
OUTAGE = (
    r"WebSocket connection to .*/ws/stats' failed: .*ERR_CONNECTION_REFUSED"
    r"|Failed to load resource: net::ERR_\w+ \(.*/api/demo/pods[/\w-]*\)$"
)


def test_kpis_match_the_api_and_change_every_tick(
    dashboard: DashboardPage, artifacts: Path
) -> None:
    first = dashboard.open()
    shown, stats = dashboard.shown_with_stats()
    assert_matches_stats(shown, stats)
    assert shown.connection == "live"
    assert shown.banner is None
    assert set(shown.tops) == {"app", "platform", "crash_type"}

    # Three later ticks: each one is the API's snapshot of that moment, and the
    # numbers move (the demo produces 2,000 events/s).
    seen = [shown]
    for _ in range(3):
        dashboard.next_snapshot(seen[-1])
        shown, stats = dashboard.shown_with_stats()
        assert_matches_stats(shown, stats)
        seen.append(shown)
    generated = [s.generated_at or 0.0 for s in seen]
    assert generated == sorted(set(generated)), generated
    assert len({s.kpis["count"].text for s in seen}) > 1, "the event count never changed"
    assert len({s.chart_line for s in seen}) > 1, "the chart never changed"
    assert first.epoch == shown.epoch

    # The screenshot after about ten seconds of demo data.
    dashboard.page.wait_for_timeout(max(0.0, 10.0 - _demo_age_s(shown, stats)) * 1000)
    dashboard.wait_until(lambda s: s.live, 5.0, "live")
    dashboard.page.screenshot(path=str(artifacts / "dashboard.png"), full_page=True)
    if os.environ.get("UPDATE_DOCS_SCREENSHOT"):
        shutil.copyfile(artifacts / "dashboard.png", DOCS_SCREENSHOT)
    dashboard.console.assert_clean()


def test_failover_moves_the_header_to_the_new_leader(dashboard: DashboardPage) -> None:
    before = dashboard.open()
    old_leader = before.leader_identity
    assert old_leader is not None
    old_pod = old_leader.rsplit("_", 1)[0]
    assert before.leader_text == old_pod

    # Kill the leader with the page's own demo button (POST /api/demo/pods/<pod>/kill).
    killed_at = time.monotonic()
    dashboard.kill_with_button(old_pod)
    states: set[str] = set()

    def new_leader_shown(shown: Shown) -> bool:
        states.add("stale" if shown.stale else shown.state)
        return shown.live and shown.leader_identity != old_leader

    after = dashboard.wait_until(new_leader_shown, FAILOVER_BOUND_S + 5, "a new leader is shown")
    took = time.monotonic() - killed_at
    assert took <= FAILOVER_BOUND_S, f"new leader shown after {took:.1f} s"
    # No snapshot for the lease duration: the page said so instead of looking live.
    assert "stale" in states

    assert after.epoch is not None
    assert before.epoch is not None
    assert after.epoch > before.epoch
    assert after.epoch_text == str(after.epoch)
    leader = dashboard.server.get("/api/leader")
    assert after.leader_identity == leader["leader"]
    pods = {pod["name"]: pod for pod in dashboard.server.demo_pods()}
    assert not pods[old_pod]["alive"]
    assert after.leader_text != old_pod

    # The numbers keep updating under the new leader and are still the API's.
    shown, stats = dashboard.shown_with_stats()
    assert_matches_stats(shown, stats)
    later = dashboard.next_snapshot(dashboard.next_snapshot(shown))
    assert later.kpis["count"].value != shown.kpis["count"].value
    assert later.leader_identity == after.leader_identity
    assert later.leader_text == pod_of(stats["leader"], stats["members"])
    # The activity list records the change.
    assert "leader changed" in dashboard.page.inner_text("#activity")
    dashboard.console.assert_clean()


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_reconnects_after_the_server_restarts(
    dashboard: DashboardPage, how: signal.Signals
) -> None:
    dashboard.open()
    server = dashboard.server
    dashboard.console.allow(OUTAGE)

    exited_by_itself = server.stop(how)
    if how == signal.SIGTERM:
        assert exited_by_itself, f"the demo did not exit on SIGTERM:\n{server.log_tail()}"
    down = dashboard.wait_until(
        lambda s: s.state == "reconnecting", 5.0, "the page notices the server is gone"
    )
    assert down.banner is not None
    assert "Disconnected" in down.banner
    stale = dashboard.wait_until(
        lambda s: s.stale, STALE_AFTER_S + 2.0, "the page marks its numbers stale"
    )
    # Stale exactly when the snapshot on screen is older than 3 ticks.
    assert stale.age_s is not None
    assert stale.tick_s is not None
    assert stale.tick_s == pytest.approx(TICK_S, abs=0.1)
    assert stale.age_s > 3 * stale.tick_s
    assert down.stale or (down.age_s or 0) <= 3 * TICK_S + 0.5
    assert stale.kpis["count"].value is not None, "stale numbers stay on screen"
    assert "⚠" in dashboard.page.title()
    assert dashboard.page.locator("body.is-stale").count() == 1

    server.start()
    started_at = time.monotonic()
    back = dashboard.wait_until(
        lambda s: s.live and (s.generated_at or 0) > (stale.generated_at or 0),
        RECONNECT_BOUND_S + 5,
        "the page reconnects by itself",
    )
    took = time.monotonic() - started_at
    assert took <= RECONNECT_BOUND_S, f"reconnected {took:.1f} s after the server was back"
    assert back.banner is None
    assert dashboard.page.title() == "stream-aggregator"
    shown, stats = dashboard.shown_with_stats()
    assert_matches_stats(shown, stats)
    if how == signal.SIGTERM:
        assert "server is restarting (close 1012)" in dashboard.page.inner_text("#activity")
    dashboard.console.assert_clean()


def test_follows_a_new_lease_whose_epochs_start_over(dashboard: DashboardPage) -> None:
    """Failover (epoch 0 -> 1), then the whole demo is killed and started again:
    its new lease starts at epoch 0.  The page drops the lower epoch for a few
    ticks (it could be a deposed leader), then follows the new cluster."""
    before = dashboard.open()
    server = dashboard.server
    old_pod = pod_of(before.leader_identity or "", [])
    dashboard.kill_with_button(old_pod)
    failed_over = dashboard.wait_until(
        lambda s: s.live and s.leader_identity != before.leader_identity,
        FAILOVER_BOUND_S + 5,
        "a new leader is shown",
    )
    assert failed_over.epoch is not None
    assert before.epoch is not None
    assert failed_over.epoch > before.epoch

    dashboard.console.allow(OUTAGE)
    server.stop(signal.SIGKILL)
    dashboard.wait_until(lambda s: s.state == "reconnecting", 5.0, "disconnected")
    server.start()
    started_at = time.monotonic()
    stats = server.stats()
    assert stats["epoch"] < failed_over.epoch, "the restarted demo should start a new lease"

    back = dashboard.wait_until(
        lambda s: s.live and s.epoch == server.stats()["epoch"],
        RECONNECT_BOUND_S + EPOCH_RESET_S + 5,
        "the page follows the new lease",
    )
    took = time.monotonic() - started_at
    assert took <= RECONNECT_BOUND_S + EPOCH_RESET_S, f"followed after {took:.1f} s"
    shown, stats = dashboard.shown_with_stats()
    assert_matches_stats(shown, stats)
    assert back.leader_identity != failed_over.leader_identity
    activity = dashboard.page.inner_text("#activity")
    assert "epochs started again" in activity
    dashboard.console.assert_clean()


def _demo_age_s(shown: Shown, stats: dict[str, object]) -> float:
    """Seconds of data the demo has produced (its members started then)."""
    members = stats.get("members")
    assert isinstance(members, list)
    started = min(float(member["started_at"]) for member in members)
    return (shown.generated_at or started) - started
