"""Agent types for the chaos benchmark (`bench/chaos.py`) and its shortened test
(`tests/test_chaos.py`). Each records in its own state what it applied, so the benchmark's
ledger can compare the agents' word with its own records of what was accepted.

Registered on import (the registry keeps the first registration when the workflow sandbox
re-imports this module); worker processes import it through
`PERENNIAL_APP=bench.chaos_agents`. Workflow-sandbox rules apply: no I/O at import time.
The activity tools call the scripted LLM server's tool backend (`POST {root}/tools/{name}`),
which counts every execution, with the call's idempotency key (`call_id`) and attempt number.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

from perennial.workflows.entity import AgentWorkflow
from perennial.workflows.llm import (
    ContextWindow,
    LLMAgent,
    LLMState,
    ToolContext,
    activity_tool,
)
from perennial.workflows.messages import AlarmWake, ApprovalWake, ChildFinishedWake, Message
from perennial.workflows.registry import agent_type

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

#: Agent type names.
LEDGER = "chaos_ledger"
LEDGER_SHORT = "chaos_ledger_short"
CHILD = "chaos_child"
LLM = "chaos_llm"
LLM_SHORT = "chaos_llm_short"

#: A message `spawn NAME` makes a ledger agent start the task child `chaos_child/NAME`.
SPAWN = "spawn "
#: The tool that needs a person's approval, and a plain one.
PAY_TOOL = "chaos_pay"
LOOKUP_TOOL = "chaos_lookup"


class AlarmSeen(BaseModel):
    """One alarm as the agent applied it: it stands for the due times from `first_due_at` to
    `due_at` (`missed` earlier ones folded into it)."""

    schedule_id: str
    due_at: datetime
    first_due_at: datetime
    missed: int


class LedgerState(BaseModel):
    #: The id of every message (signal or ask) applied, in order.
    applied: list[str] = []
    alarms: list[AlarmSeen] = []
    #: Children started by applied `spawn` messages, and the reports received
    #: (`"<child id> <status>"`), in order.
    spawned: list[str] = []
    reports: list[str] = []


class _Ledger(AgentWorkflow[LedgerState]):
    state_model = LedgerState
    #: Fewer kept versions: a recurring alarm grows the state for the whole run.
    max_versions = 3

    async def on_message(self, message: Message) -> str:
        assert message.id is not None
        if message.text.startswith(SPAWN):
            name = message.text.removeprefix(SPAWN)
            record = await self.spawn_child(CHILD, name, f"task {name}")
            self.state.spawned.append(record.child_id)
        self.state.applied.append(message.id)
        return f"applied {message.id}"

    async def on_alarm(self, alarm: AlarmWake) -> str:
        self.state.alarms.append(
            AlarmSeen(
                schedule_id=alarm.schedule_id,
                due_at=alarm.due_at,
                first_due_at=alarm.first_due_at or alarm.due_at,
                missed=alarm.missed,
            )
        )
        return f"alarm {alarm.key}"

    async def on_child_finished(self, wake: ChildFinishedWake) -> str:
        self.state.reports.append(f"{wake.child.child_id} {wake.report.status}")
        return "reported"


@agent_type(LEDGER)
class LedgerAgent(_Ledger):
    """Records every message id, alarm and child report; default run limits."""


@agent_type(LEDGER_SHORT)
class ShortLedgerAgent(_Ledger):
    """The same with short runs, so continue-as-new happens often under the chaos."""

    max_signals_per_run = 5
    max_updates_per_run = 4
    max_history_events = 150


@agent_type(CHILD)
class ChildAgent(AgentWorkflow[LedgerState]):
    """A task child: answers its task and ends."""

    state_model = LedgerState
    max_versions = 2

    async def on_message(self, message: Message) -> str:
        assert message.id is not None
        self.state.applied.append(message.id)
        return f"done: {message.text}"


# --------------------------------------------------------------------------- the LLM agent

_TOOL_RETRIES = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=2),
    maximum_attempts=20,
)


async def _backend(ctx: ToolContext, name: str, arguments: dict[str, Any]) -> Any:
    import httpx2  # the openai client's HTTP library; imported here, outside the sandbox

    root = ctx.settings.openai_base_url.removesuffix("/").removesuffix("/v1")
    body = {**arguments, "call_id": ctx.call_id, "attempt": ctx.attempt, "agent": ctx.agent_id}
    async with httpx2.AsyncClient(timeout=30) as http:
        response = await http.post(f"{root}/tools/{name}", json=body)
        response.raise_for_status()
        answer = response.json()
    if "fail" in answer:
        raise RuntimeError(answer["fail"])
    return answer["result"]


@activity_tool(
    name=PAY_TOOL,
    start_to_close_timeout=timedelta(seconds=30),
    heartbeat_timeout=timedelta(seconds=2),
    retry_policy=_TOOL_RETRIES,
    needs_approval=True,
)
async def chaos_pay(ctx: ToolContext, ref: str, amount: int) -> Any:
    """Pay an amount for a reference (a person must approve every payment).

    Args:
        ref: The payment's reference.
        amount: How much, in euros.
    """
    return await _backend(ctx, PAY_TOOL, {"ref": ref, "amount": amount})


@activity_tool(
    name=LOOKUP_TOOL,
    start_to_close_timeout=timedelta(seconds=30),
    heartbeat_timeout=timedelta(seconds=2),
    retry_policy=_TOOL_RETRIES,
)
async def chaos_lookup(ctx: ToolContext, query: str) -> Any:
    """Look something up.

    Args:
        query: What to look up.
    """
    return await _backend(ctx, LOOKUP_TOOL, {"query": query})


class ChaosLLMState(LLMState):
    #: The id of every message whose turn was applied (a failed turn restores the state, so
    #: its id is not here).
    applied: list[str] = []
    #: The approval id of every decision applied.
    decisions: list[str] = []


class _ChaosLLM(LLMAgent[ChaosLLMState]):
    state_model = ChaosLLMState
    instructions = "You are the chaos benchmark's agent."
    model = "scripted-chaos"
    tools = (chaos_pay, chaos_lookup)
    max_steps = 4
    max_versions = 3
    context_window = ContextWindow(max_items=24, max_chars=8_000)
    model_heartbeat_timeout = timedelta(seconds=5)
    model_start_to_close_timeout = timedelta(seconds=30)
    model_retry_policy = RetryPolicy(
        initial_interval=timedelta(milliseconds=200),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=2),
        maximum_attempts=20,
    )

    async def on_message(self, message: Message) -> str | None:
        assert message.id is not None
        self.state.applied.append(message.id)
        return await super().on_message(message)

    async def on_approval(self, wake: ApprovalWake) -> str | None:
        self.state.decisions.append(wake.approval.approval_id)
        return await super().on_approval(wake)


@agent_type(LLM)
class ChaosLLMAgent(_ChaosLLM):
    """An LLM agent on the scripted model, with a tool that needs approval."""


@agent_type(LLM_SHORT)
class ShortChaosLLMAgent(_ChaosLLM):
    """The same with short runs: pending approvals cross continue-as-new often."""

    max_updates_per_run = 4


__all__ = [
    "CHILD",
    "LEDGER",
    "LEDGER_SHORT",
    "LLM",
    "LLM_SHORT",
    "LOOKUP_TOOL",
    "PAY_TOOL",
    "SPAWN",
    "AlarmSeen",
    "ChaosLLMState",
    "LedgerState",
]
