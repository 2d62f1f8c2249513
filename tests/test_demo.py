"""`perennial demo`: the README's main command, on this test's worker (no model endpoint)."""

from __future__ import annotations

import pytest
from temporalio.worker import Worker

from perennial.client import Perennial, Settings
from perennial.client.demo import run_demo


async def test_the_demo_talks_to_agents_and_lists_them_caught_up(
    perennial: Perennial, settings: Settings, worker: Worker, capsys: pytest.CaptureFixture[str]
) -> None:
    bare = settings.model_copy(update={"openai_base_url": None, "openai_api_key": None})
    await run_demo(bare)
    out = capsys.readouterr().out
    assert "alice <- 'buy oat milk'\n      -> Noted (note #1). (state v1)" in out
    assert "bob   -> Noted (note #6)." in out
    assert "(same reply, one note)" in out
    assert "rolled back to v2; that is now v4" in out
    # The visibility API is written behind; the demo waits until it shows the last versions.
    assert "notes/alice: idle, v4" in out
    assert "notes/bob: idle, v6" in out
