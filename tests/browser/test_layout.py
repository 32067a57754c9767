"""The page at a phone's width in the dark theme, and at 1024 px in the light one:
nothing wider than the screen, every section there, the theme applied."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.browser.dashboard_page import ConsoleGuard, DashboardPage
from tests.browser.demo_server import DemoServer

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = pytest.mark.browser

SECTIONS = [
    "[data-testid=leader]",
    "[data-testid=connection]",
    "[data-testid=kpi-count]",
    "[data-testid=kpi-p99]",
    "[data-testid=chart] svg",
    "[data-testid=top-app]",
    "[data-testid=top-crash_type]",
    "[data-testid=members]",
    "[data-testid=demo]",
]


@pytest.mark.parametrize(
    ("width", "height", "scheme", "background"),
    [
        pytest.param(390, 844, "dark", "rgb(14, 17, 22)", id="phone-dark"),
        pytest.param(1024, 768, "light", "rgb(243, 245, 248)", id="1024-light"),
    ],
)
def test_layout(
    browser: Browser, demo: DemoServer, width: int, height: int, scheme: str, background: str
) -> None:
    context = browser.new_context(
        viewport={"width": width, "height": height},
        color_scheme="dark" if scheme == "dark" else "light",
        locale="en-US",
    )
    page = context.new_page()
    guard = ConsoleGuard()
    guard.watch(page)
    try:
        DashboardPage(page, demo, guard).open()
        page.wait_for_selector("[data-testid=demo]:not([hidden])")
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"the page is {overflow} px wider than the screen"
        for selector in SECTIONS:
            box = page.locator(selector).first.bounding_box()
            assert box is not None, f"{selector} is not displayed"
            assert box["width"] > 0
            assert box["x"] >= 0
            assert box["x"] + box["width"] <= width + 0.5, f"{selector} sticks out"
        assert page.evaluate("getComputedStyle(document.body).backgroundColor") == background
        guard.assert_clean()
    finally:
        context.close()
