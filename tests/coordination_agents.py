"""Agent types for the coordination tests (children, messages between agents, approvals).

Registered on import, outside the workflow sandbox (which re-imports this module for every
run). A worker subprocess imports it through `PERENNIAL_APP=tests.coordination_agents`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow

from perennial.workflows.coordination_tools import CHILD_TOOLS, MESSAGING_TOOLS
from perennial.workflows.entity import AgentWorkflow
from perennial.workflows.llm import STATE_TOOLS, ToolContext, activity_tool, workflow_tool
from perennial.workflows.messages import (
    AgentReplyWake,
    ChildFinishedWake,
    Message,
    PeerChangedWake,
)
from perennial.workflows.notes import NotesState
from perennial.workflows.registry import agent_type
from perennial.workflows.router import RouterAgent
from tests.llm_agents import _FAST_RETRIES, BaseScriptedAgent, _backend


@agent_type("test_child")
class ChildAgent(AgentWorkflow[NotesState]):
    """A worker bee. Texts starting with `fail` raise; `wait` parks the turn until signal
    `release`; anything else is answered `done: <text>`."""

    state_model = NotesState


    @workflow.signal(name="release")
    def release(self) -> None:
        self._released = True

    async def on_message(self, message: Message) -> str:
        self.state.notes.append(message.text)
        if message.text.startswith("fail"):
            raise ValueError(f"cannot do {message.text!r}")
        if message.text.startswith("wait"):
            await workflow.wait_condition(lambda: getattr(self, "_released", False))
        return f"done: {message.text}"


class _Parent(AgentWorkflow[NotesState]):
    """Commands: `spawn TYPE NAME TASK...`, `keep TYPE NAME TASK...` (a named child),
    `cancel CHILD_ID`; anything else is noted. Child reports are noted as
    `STATUS CHILD_ID: RESULT-OR-ERROR`."""

    state_model = NotesState

    async def on_message(self, message: Message) -> str:
        verb, _, rest = message.text.partition(" ")
        if verb in ("spawn", "keep"):
            agent_type, name, task = rest.split(" ", 2)
            record = await self.spawn_child(agent_type, name, task, keep=verb == "keep")
            return f"spawned {record.child_id}"
        if verb == "cancel":
            record = await self.cancel_child(rest)
            return f"cancelling {record.child_id}"
        if verb == "send":
            agent_type, name, text = rest.split(" ", 2)
            return f"sent {await self.send_to_agent(agent_type, name, text)}"
        if verb == "ask":  # ask TYPE NAME SECONDS TEXT
            agent_type, name, seconds, text = rest.split(" ", 3)
            ask = await self.ask_agent(agent_type, name, text, timeout_seconds=float(seconds))
            return f"asked {ask.target_id}"
        if verb == "observe":  # observe TYPE NAME DEBOUNCE_SECONDS
            agent_type, name, seconds = rest.split(" ")
            sub = await self.observe(agent_type, name, debounce_seconds=float(seconds))
            return f"observing {sub.peer_id}"
        if verb == "unobserve":
            agent_type, name = rest.split(" ")
            return f"stopped {(await self.stop_observing(agent_type, name)).peer_id}"
        self.state.notes.append(message.text)
        return "noted"

    async def on_child_finished(self, wake: ChildFinishedWake) -> str:
        report = wake.report
        text = report.result if report.status == "completed" else report.error
        self.state.notes.append(f"{report.status} {report.child_id}: {text}")
        self.state.counter += 1
        return "thanks"

    async def on_peer_changed(self, wake: PeerChangedWake) -> str:
        self.state.notes.append(f"changed {wake.change.peer_id} v{wake.change.version}")
        self.state.counter += 1
        return "seen"

    async def on_agent_reply(self, wake: AgentReplyWake) -> str:
        text = wake.reply if wake.status == "answered" else f"{wake.error_type}: {wake.error}"
        self.state.notes.append(f"{wake.status} {wake.ask.target_id}: {text}")
        self.state.counter += 1
        return "got it"


@agent_type("test_parent")
class ParentAgent(_Parent):
    """A parent with the default per-run limits."""


@agent_type("test_parent_short")
class ShortParentAgent(_Parent):
    """Continues as new after every two updates."""

    max_updates_per_run = 2


@agent_type("test_llm_parent")
class LLMParentAgent(BaseScriptedAgent):
    instructions = "You are a manager agent."
    spawnable_agent_types = ("test_child",)
    tools = (*STATE_TOOLS, *CHILD_TOOLS, *MESSAGING_TOOLS)


@activity_tool(
    start_to_close_timeout=timedelta(seconds=30), retry_policy=_FAST_RETRIES, needs_approval=True
)
async def wire_money(ctx: ToolContext, to: str, amount: int) -> Any:
    """Send money to someone (a person must approve every transfer).

    Args:
        to: Who gets the money.
        amount: How much, in euros.
    """
    return await _backend(ctx, "wire_money", {"to": to, "amount": amount})


@activity_tool(
    name="wire_money_quick",
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=_FAST_RETRIES,
    needs_approval=True,
    approval_timeout=timedelta(seconds=1),
)
async def wire_money_quick(ctx: ToolContext, to: str, amount: int) -> Any:
    """Send money; rejected unless a person approves within a second.

    Args:
        to: Who gets the money.
        amount: How much, in euros.
    """
    return await _backend(ctx, "wire_money_quick", {"to": to, "amount": amount})


@workflow_tool(needs_approval=True)
def forget_everything(agent: LLMParentAgent) -> str:
    """Erase your whole memory (a person must approve)."""
    agent.state.memory.clear()
    return "memory erased"


class _Approver(BaseScriptedAgent):
    instructions = "You are a bank agent."
    tools = (*STATE_TOOLS, wire_money, wire_money_quick, forget_everything)


@agent_type("test_llm_approver")
class ApproverAgent(_Approver):
    """An approver with the default per-run limits."""


@agent_type("test_llm_approver_short")
class ShortApproverAgent(_Approver):
    """Continues as new after every two updates."""

    max_updates_per_run = 2


@agent_type("test_router")
class TestRouter(RouterAgent, BaseScriptedAgent):
    routes = {
        "notes": "Writes down whatever it is sent.",
        "test_child": "Does small tasks and says 'done: <task>'.",
        "test_parent": "Manages other agents.",
    }
    route_timeout = timedelta(seconds=2)
