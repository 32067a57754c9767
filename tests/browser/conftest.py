"""Fixtures for the dashboard tests: Debian's headless Chromium driven by
Playwright, ``aggregator demo`` as a subprocess, and a page that must not log a
single error.

A missing Chromium or Playwright fails the tests in CI and skips them locally
(``tests.fixtures.requirements.server_missing``); ``scripts/install-browser``
installs the browser.
"""

from __future__ import annotations

import os
import re
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.browser.dashboard_page import ConsoleGuard, DashboardPage
from tests.browser.demo_server import DemoServer
from tests.fixtures.requirements import server_missing

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Playwright

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
VIEWPORT = {"width": 1280, "height": 800}

_CALL_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[_CALL_FAILED] = report.failed
    return report


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def playwright_api() -> Iterator[Playwright]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        server_missing("Playwright", "pip install -e '.[dev]' (it is in the dev extra)")
    if not CHROMIUM.exists():
        server_missing(f"Chromium ({CHROMIUM})", "run scripts/install-browser")
    with sync_playwright() as api:
        yield api


@pytest.fixture(scope="session")
def browser(playwright_api: Playwright) -> Iterator[Browser]:
    browser = playwright_api.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[DemoServer]:
    """A fresh ``aggregator demo`` (3 pods) on a free loopback port."""
    server = DemoServer(tmp_path)
    server.start()
    yield server
    server.close()


@pytest.fixture
def dashboard(
    browser: Browser, demo: DemoServer, request: pytest.FixtureRequest, artifacts: Path
) -> Iterator[DashboardPage]:
    """The dashboard of ``demo`` at 1280x800; fails if the page logged an error."""
    context = browser.new_context(
        viewport={"width": VIEWPORT["width"], "height": VIEWPORT["height"]},
        locale="en-US",
        timezone_id="UTC",
        color_scheme="light",
    )
    page = context.new_page()
    guard = ConsoleGuard()
    guard.watch(page)
    dashboard = DashboardPage(page, demo, guard)
    try:
        yield dashboard
        if request.node.stash.get(_CALL_FAILED, False):
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
            page.screenshot(path=str(artifacts / f"failed-{name}.png"), full_page=True)
        else:
            guard.assert_clean()
    finally:
        context.close()
