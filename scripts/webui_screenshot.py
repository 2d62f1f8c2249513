"""Regenerate docs/webui.png: an agent's page in the Temporal Web UI bundled with the dev server.

    .venv/bin/python scripts/webui_screenshot.py [--out docs/webui.png]

Starts the embedded dev server with its Web UI (a temporary state dir, free ports) and a
worker, makes a `notes` agent do a few things (messages, a schedule), opens its page in
Debian's Chromium through Playwright, opens the "User Metadata" tab, waits for the agent's
current details to show, and saves a screenshot. Needs `chromium` (apt) and `playwright` (pip); Playwright's own
browser download is not used.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

from perennial.client import Perennial
from perennial.client.server import DevServer
from perennial.testing.harness import server_settings, with_task_queue
from perennial.worker import build_worker
from tests.browser import CHROMIUM, CHROMIUM_ARGS


async def agent_page(perennial: Perennial) -> str:
    """Give a notes agent some history; the path of its page in the Web UI."""
    alice = perennial.agent("notes", "alice")
    await alice.ask("water the plants", sender="bob")
    await alice.ask("call the plumber", sender="bob")
    await alice.schedule("standup", "stand up and stretch", cron="0 10 * * 1-5",
                         timezone="Europe/Paris")  # fmt: skip
    await alice.ask("buy oat milk", sender="carol")
    run_id = (await alice.describe()).run_id
    return f"/namespaces/default/workflows/{quote(alice.id, safe='')}/{run_id}/history"


async def screenshot(out: Path) -> None:
    from playwright.async_api import async_playwright

    with tempfile.TemporaryDirectory() as tmp:
        base = server_settings(Path(tmp))
        async with DevServer(base, headless=False) as server:
            settings = with_task_queue(base, server.address).model_copy(
                update={"task_queue": "perennial"}
            )
            perennial = await Perennial.connect(settings)
            async with build_worker(perennial.client, settings):
                path = await agent_page(perennial)
                async with async_playwright() as p:
                    browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
                    await page.goto(server.ui_url + path)
                    await page.get_by_text("notes/alice").first.wait_for(timeout=60_000)
                    # The agent's current details are in the page's "User Metadata" tab.
                    await page.get_by_text("User Metadata").first.click()
                    await _shown(page, "idle since")
                    await page.screenshot(path=str(out), full_page=False)
                    await browser.close()
    print(f"wrote {out}")


async def _shown(page: Any, text: str, timeout: float = 60.0) -> None:
    """Wait until `text` is on the page or in one of its frames (the UI renders current
    details, markdown, in a frame; its content policy forbids evaluated waits)."""
    for _ in range(int(timeout / 0.25)):
        for frame in page.frames:
            if text in await frame.inner_text("body"):
                return
        await asyncio.sleep(0.25)
    raise TimeoutError(f"{text!r} did not show within {timeout}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/webui.png"))
    asyncio.run(screenshot(parser.parse_args().out))


if __name__ == "__main__":
    main()
