"""Headless Chromium for the browser tests: Debian's binary, driven by Playwright.

Playwright never downloads a browser here; the tests launch ``/usr/bin/chromium``
(``PGCAST_TEST_CHROMIUM`` overrides it), which ``make install-system`` installs.
A missing browser fails the tests with that instruction: never a skip.
Screenshots go to ``test-artifacts/`` (gitignored).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright

CHROMIUM = os.environ.get("PGCAST_TEST_CHROMIUM", "/usr/bin/chromium")
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
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"no browser at {CHROMIUM}: run `make install-system` "
            "(apt-get install chromium) or set PGCAST_TEST_CHROMIUM"
        )
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A fresh page whose console lines are kept in ``page.console_lines`` for failures."""
    context = await browser.new_context(viewport={"width": 1200, "height": 800})
    new_page = await context.new_page()
    new_page.set_default_timeout(15_000)
    lines: list[str] = []

    def keep(message: ConsoleMessage) -> None:
        lines.append(f"{message.type}: {message.text}")

    new_page.on("console", keep)
    new_page.on("pageerror", lambda exc: lines.append(f"pageerror: {exc}"))
    new_page.console_lines = lines  # type: ignore[attr-defined]
    try:
        yield new_page
    finally:
        await context.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
