"""A real Chromium for the tests that need a browser: Debian's /usr/bin/chromium, driven by
Playwright's async API (Playwright's own browser download is never used).

    from tests.browser import chromium_page

    async def test_page(gateway):
        async with chromium_page() as page:
            await page.goto(gateway.url)

`make test` installs the browser when it can (scripts/install-test-packages). Where it is missing,
the browser tests skip on a developer machine, saying how to install it, and fail in CI
(CI=true), where a skipped browser test would hide a broken install.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext, Page

__all__ = [
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "browser_page",
    "chromium_context",
    "chromium_page",
    "require_chromium",
]

CHROMIUM = Path(os.environ.get("PERENNIAL_CHROMIUM", "/usr/bin/chromium"))

#: No sandbox (CI runs as root, in containers), no GPU, and nothing that reaches the internet
#: on its own (updates, sync, QUIC probes): the tests' only network is 127.0.0.1.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

INSTALL_HINT = (
    "install it with `sudo apt-get install chromium` (Debian; `make test` as root does it), "
    "or set PERENNIAL_CHROMIUM to a Chromium binary"
)


def require_chromium(*, module: bool = False) -> None:
    """Skip the calling test (fail it in CI) when the browser or Playwright is missing;
    `module=True` at the top of a test module: the whole module."""
    missing = []
    if importlib.util.find_spec("playwright") is None:
        missing.append("the playwright package (`pip install -e '.[dev]'`)")
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"{CHROMIUM}: {INSTALL_HINT}")
    if not missing:
        return
    reason = "browser test needs " + "; ".join(missing)
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        if module:
            return  # failing at collection would stop the whole suite: each test fails instead
        pytest.fail(reason + " (CI installs it: scripts/install-test-packages)", pytrace=False)
    pytest.skip(reason, allow_module_level=module)


@asynccontextmanager
async def chromium_context(**options: Any) -> AsyncIterator[BrowserContext]:
    """A browser context on a fresh profile (its own user-data dir, removed afterwards).
    `options` go to Playwright's `launch_persistent_context` (viewport, locale, ...)."""
    require_chromium()
    from playwright.async_api import async_playwright

    # ignore_cleanup_errors: a Chromium helper may still write to the profile as it exits
    with tempfile.TemporaryDirectory(
        prefix="perennial-chromium-", ignore_cleanup_errors=True
    ) as profile:
        async with async_playwright() as pw:
            context = await pw.chromium.launch_persistent_context(
                profile,
                executable_path=str(CHROMIUM),
                args=CHROMIUM_ARGS,
                headless=True,
                **options,
            )
            try:
                yield context
            finally:
                await context.close()


@asynccontextmanager
async def chromium_page(**options: Any) -> AsyncIterator[Page]:
    """A page in a fresh browser (see `chromium_context`). The browser's console and uncaught
    errors are printed as they happen, so pytest shows them next to a failing test."""
    async with chromium_context(**options) as context:
        page = context.pages[0] if context.pages else await context.new_page()
        page.on("console", lambda m: print(f"[browser console.{m.type}] {m.text}"))
        page.on("pageerror", lambda e: print(f"[browser uncaught] {e}"))
        yield page


@pytest_asyncio.fixture(loop_scope="session")
async def browser_page() -> AsyncIterator[Page]:
    """`chromium_page()` as a fixture: import it into a test module to use it."""
    async with chromium_page() as page:
        yield page
