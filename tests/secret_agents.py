"""An LLM agent type whose activity tools use secrets (`ToolSecret`), for the tests of
`tests/test_secrets_everywhere.py`. Registered on import.

The tools are real I/O against the scripted LLM server's tool backend (`POST
{root}/tools/{name}`), which records every execution's arguments: the token a tool sends there
proves the worker injected it. `repo_stars` echoes its token in its result and in its error (a
careless tool); `post_status` needs a secret no test worker has.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import Field

from perennial.workflows.llm import STATE_TOOLS, ToolContext, activity_tool
from perennial.workflows.llm.tools import ToolSecret
from perennial.workflows.registry import agent_type
from tests.llm_agents import (  # the scripted server's tool endpoint
    _FAST_RETRIES,
    BaseScriptedAgent,
    _backend,
)


@activity_tool(start_to_close_timeout=timedelta(seconds=30), retry_policy=_FAST_RETRIES)
async def repo_stars(
    ctx: ToolContext,
    repo: Annotated[str, Field(description="The repository, as owner/name")],
    token: Annotated[str, ToolSecret("github")],
) -> str:
    """How many stars a repository has."""
    answer = await _backend(ctx, "repo_stars", {"repo": repo, "token": token})
    if answer.get("denied"):
        raise PermissionError(f"the code host refused token {token}")
    return f"{repo} has {answer['stars']} stars (asked with token {token})"


@activity_tool(start_to_close_timeout=timedelta(seconds=30), retry_policy=_FAST_RETRIES)
async def post_status(
    ctx: ToolContext, text: str, webhook: Annotated[str, ToolSecret("chat_webhook")]
) -> str:
    """Post a status line to the team's chat.

    Args:
        text: The line to post.
    """
    await _backend(ctx, "post_status", {"text": text, "webhook": webhook})
    return "posted"


@agent_type("test_secrets")
class SecretsAgent(BaseScriptedAgent):
    """A scripted LLM agent whose tools take secrets from the worker."""

    tools = (*STATE_TOOLS, repo_stars, post_status)
