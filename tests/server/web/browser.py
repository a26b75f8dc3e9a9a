"""Headless Chromium for the dashboard tests, driven by Playwright: Debian's chromium package (`make test` installs
it with `system-deps`), never a browser that Playwright downloads."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, async_playwright

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SKIP_REASON = "needs Debian's chromium package: `make test` installs it (system-deps)"


@contextlib.asynccontextmanager
async def launch() -> AsyncIterator[Browser]:
    """A headless Chromium, closed on exit; skips the test where chromium is not installed."""
    if CHROMIUM is None:
        pytest.skip(SKIP_REASON)
    async with async_playwright() as playwright:
        # --no-sandbox: the tests may run as root (in a container), where Chromium's sandbox refuses to start.
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            await browser.close()
