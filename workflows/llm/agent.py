"""`LLMAgent`: an agent that thinks with a model and acts with tools, one turn per wake.

    @agent_type("assistant")
    class Assistant(LLMAgent[LLMState]):
        instructions = "You are a helpful assistant."
        model = "gpt-4o-mini"
        tools = [*STATE_TOOLS, *CONTEXT_TOOLS, get_weather]

A turn: append the user's text to the context, then step by step call the model (an activity)
and run the tools it asks for (activity tools concurrently, workflow tools inline), feeding the
results back, until the model answers without tool calls. A turn that reaches `max_steps`, or
whose model call fails for good, raises: the entity runtime restores the state from before the
turn (conversation, memory and usage included) and the caller gets `TurnFailed`.

Every step is in the event log (`run_started`, `step`, `text`, `tool_call`, `error`), and
the Web UI shows activity summaries (`llm gpt-4o-mini step 3`, `tool get_weather`) and the
turn's progress in the current details.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar, Literal, TypeVar

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    TimeoutError,
    is_cancelled_exception,
)

from perennial.workflows.alarms import alarm_prompt
from perennial.workflows.approvals import approval_pending_result, approval_prompt
from perennial.workflows.children import child_prompt
from perennial.workflows.entity import AgentWorkflow
from perennial.workflows.errors import (
    ModelCallFailed,
    ModelRequestRejected,
    ModelUnavailable,
    StepLimitExceeded,
)
from perennial.workflows.llm.budget import SET_BUDGET_UPDATE, USAGE_QUERY, Spending
from perennial.workflows.llm.context import ContextWindow, LLMState, fit_window
from perennial.workflows.llm.sql_tools import SQL_TOOLS, describe_database
from perennial.workflows.llm.summary import Summarizer, with_summary
from perennial.workflows.llm.tool_runner import execute_tool
from perennial.workflows.llm.tools import (
    ActivityTool,
    AnyTool,
    ToolArgumentsError,
    ToolError,
    WorkflowTool,
    render_result,
    tool_index,
)
from perennial.workflows.llm.wire import (
    LLM_CONTEXT_QUERY,
    MODEL_ACTIVITY,
    TURN_STEPS_QUERY,
    AssistantItem,
    ContextQuery,
    ModelCall,
    ModelRequest,
    ModelResponse,
    ModelSettings,
    SystemItem,
    ToolCall,
    ToolItem,
    TurnSteps,
    TurnStepsQuery,
    UserItem,
    digest,
    item_chars,
)
from perennial.workflows.messages import (
    AgentReplyWake,
    AgentStart,
    AlarmWake,
    ApprovalWake,
    Budget,
    ChildFinishedWake,
    ErrorEvent,
    Message,
    PeerChangedWake,
    RunStartedEvent,
    StepEvent,
    TextEvent,
    TokenUsage,
    ToolCallEvent,
    UsageReport,
    preview,
)
from perennial.workflows.messaging import reply_prompt
from perennial.workflows.observing import peer_prompt
from perennial.workflows.payloads import MISSING

LLMStateT = TypeVar("LLMStateT", bound=LLMState)

#: Errors that mean the workflow code is broken for this history: never turned into a tool
#: result or a failed turn (see `workflows.entity`).
_CODE_ERRORS = (workflow.NondeterminismError, workflow.ReadOnlyContextError)


@dataclass
class _ToolOutcome:
    content: str
    ok: bool
    runs_in: Literal["workflow", "activity"]
    duration_ms: int
    attempts: int


class LLMAgent(AgentWorkflow[LLMStateT]):
    """Base of LLM agent types. Set the class attributes below and make the class an agent
    type with `@agent_type(name)`. Override `system_prompt` for a prompt that depends on the
    state."""

    state_model: ClassVar[type[LLMState]] = LLMState

    #: The system prompt.
    instructions: ClassVar[str] = "You are a helpful assistant."
    #: The model name; None uses the worker's default (`OPENAI_MODEL`).
    model: ClassVar[str | None] = None
    model_settings: ClassVar[ModelSettings] = ModelSettings()
    tools: ClassVar[Sequence[AnyTool]] = ()
    #: Model calls one turn may make; a turn still calling tools at the last one fails.
    max_steps: ClassVar[int] = 8
    context_window: ClassVar[ContextWindow] = ContextWindow()
    #: What a tool result may add to the context (longer results are cut).
    max_tool_result_chars: ClassVar[int] = 16_000
    #: Bounds of the key-value memory of the state tools.
    max_memory_keys: ClassVar[int] = 200
    max_memory_value_chars: ClassVar[int] = 8_000

    #: The model activity's timeouts and retries. Temporal owns the retries (the OpenAI
    #: client's are off); a `retry-after` from the server sets the next delay.
    model_start_to_close_timeout: ClassVar[timedelta] = timedelta(minutes=2)
    model_heartbeat_timeout: ClassVar[timedelta] = timedelta(seconds=30)
    model_schedule_to_close_timeout: ClassVar[timedelta | None] = timedelta(minutes=15)
    model_retry_policy: ClassVar[RetryPolicy] = RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(minutes=1),
        maximum_attempts=8,
    )

    #: A model request up to this size (JSON bytes) is sent in the activity's input, saving
    #: the `llm_context` query; larger ones are read by query. 0 always uses the query.
    inline_request_max_bytes: ClassVar[int] = 2048

    #: Every kept version holds the whole conversation: keep fewer than plain agents.
    max_versions: ClassVar[int] = 5

    #: Limits on tokens and cost of each agent of the type, checked before every model call
    #: (see `workflows.llm.budget`; update `set_budget` gives one agent its own).
    budget: ClassVar[Budget] = Budget()

    @workflow.init
    def __init__(self, start: RawValue = MISSING) -> None:
        super().__init__(start)
        self._tools = tool_index(self.tools)
        self._tool_definitions = [tool.definition() for tool in self._tools.values()]
        #: The model call in flight: its id and request (read by the `llm_context` query).
        self._inflight: tuple[str, ModelRequest] | None = None
        #: Workflow tools run one at a time (each may roll its own changes back).
        self._workflow_tool_lock = asyncio.Lock()
        self._summarizer = Summarizer(self, self._spending)

    def _build_parts(self, carried: AgentStart) -> None:
        super()._build_parts(carried)
        # The budget ledger is a part of its own, outside the state: spend is never rolled back.
        self._spending = Spending(self._ctx, carried.budget, type_budget=self.budget)

    def _carried(self) -> AgentStart:
        return super()._carried().model_copy(update={"budget": self._spending.carry()})

    def usage_report(self) -> UsageReport:
        return self._spending.report()

    # ------------------------------------------------------------------ for agent types

    def system_prompt(self) -> str:
        """The instructions, the database's schema (with the SQL tools), and the notes the
        agent pinned with `add_to_context`."""
        prompt = self.instructions
        if any(tool in SQL_TOOLS for tool in self._tools.values()):
            prompt = f"{prompt}\n\n{describe_database(self)}"
        notes = self.state.notes
        if not notes:
            return prompt
        pinned = "\n".join(f"- {note}" for note in notes)
        return f"{prompt}\n\nNotes you pinned in your context:\n{pinned}"

    async def on_message(self, message: Message) -> str | None:
        assert message.id is not None
        return await self.run_turn(message.id, message.text)

    async def on_alarm(self, alarm: AlarmWake) -> str | None:
        """An alarm runs a turn that tells the model which alarm went off and its action
        (see `workflows.alarm_tools` for the tools that set them)."""
        return await self.run_turn(alarm.key, alarm_prompt(alarm))

    async def on_child_finished(self, wake: ChildFinishedWake) -> str | None:
        """A child's report runs a turn that tells the model which child ended, how, and its
        answer or error (see `workflows.coordination_tools` for `spawn_agent`)."""
        return await self.run_turn(wake.key, child_prompt(wake))

    async def on_agent_reply(self, wake: AgentReplyWake) -> str | None:
        """An answer to `ask_agent` (or its timeout) runs a turn that tells the model who
        answered what (see `workflows.coordination_tools`)."""
        return await self.run_turn(wake.key, reply_prompt(wake))

    async def on_peer_changed(self, wake: PeerChangedWake) -> str | None:
        """An observed agent changed: a turn tells the model which and how far."""
        return await self.run_turn(wake.key, peer_prompt(wake))

    async def on_approval(self, wake: ApprovalWake) -> str | None:
        """A decision on a call that needed approval: if approved, the call runs now; then a
        turn tells the model the decision and the call's result (see `workflows.approvals`)."""
        outcome = None
        if wake.decision.approved:
            approval = wake.approval
            call = ToolCall(
                id=approval.call_id or wake.key, name=approval.tool, arguments=approval.arguments
            )
            result = await self._run_approved(call)
            outcome = result.content
            self.record(ToolCallEvent, message_id=wake.key, step=0, call_id=call.id,
                      name=call.name, arguments=preview(call.arguments) or "",
                      result=preview(result.content) or "", ok=result.ok,
                      runs_in=result.runs_in, duration_ms=result.duration_ms,
                      attempts=result.attempts)  # fmt: skip
        return await self.run_turn(wake.key, approval_prompt(wake, outcome))

    async def _run_approved(self, call: ToolCall) -> _ToolOutcome:
        tool = self._tools.get(call.name)
        if tool is None:  # the agent type no longer has the tool (a deploy removed it)
            return _ToolOutcome(f"error: there is no tool named {call.name!r} any more",
                                False, "workflow", 0, 0)  # fmt: skip
        runs_in: Literal["workflow", "activity"] = (
            "activity" if isinstance(tool, ActivityTool) else "workflow"
        )
        try:
            args = tool.parse(call.arguments)
        except ToolArgumentsError as err:
            return _ToolOutcome(f"error: invalid arguments: {err}", False, runs_in, 0, 0)
        return await self._execute_tool(tool, call, args, runs_in)

    async def run_turn(self, message_id: str, text: str) -> str | None:
        """One turn: `text` from the user, then model and tools until an answer. Other wakes
        (alarms, child results) can run a turn with a text that describes them."""
        self.state.context.append(UserItem(content=text, message_id=message_id))
        self.record(RunStartedEvent, message_id=message_id, model=self.model)
        self.mark_working()  # this turn waits for activities: let the fleet see it
        spent = TokenUsage()
        step = 0
        try:
            for step in range(1, self.max_steps + 1):
                self._take_steering()
                response = await self._call_model(message_id, step)
                spent = spent + response.usage
                calls = response.message.tool_calls
                if not calls:
                    self.show(f"turn `{message_id}` answered at step {step}")
                    return response.message.content
                if step == self.max_steps:
                    names = ", ".join(call.name for call in calls)
                    raise StepLimitExceeded(
                        f"the model still asked for tools ({names}) at step {step}, the "
                        f"limit of this agent type"
                    )
                await self._run_tools(message_id, step, calls)
        except _CODE_ERRORS:
            raise
        except Exception as err:
            self.record(
                ErrorEvent,
                message_id=message_id,
                step=step or None,
                error_type=type(err).__name__,
                error=str(err),
                usage=spent,
            )
            raise
        raise AssertionError("unreachable: the loop returns or raises")

    def _take_steering(self) -> None:
        """Messages steered into this turn join the conversation before the next model call."""
        for message in self.take_steering():
            self.state.context.append(UserItem(content=message.text, message_id=message.id))

    def on_turn_stopped(self, *, by: str, reason: str | None) -> bool:
        """Keep the conversation of a stopped turn, so the next turn knows what was asked and
        done: tool calls that did not finish get a result saying so, and the answer is marked
        stopped (the text streamed so far is not in the state: it never reached the workflow)."""
        context = self.state.context
        answered = {item.tool_call_id for item in context if isinstance(item, ToolItem)}
        last = context[-1] if context else None
        if isinstance(last, AssistantItem):
            for call in last.tool_calls:
                if call.id not in answered:
                    context.append(ToolItem(tool_call_id=call.id, name=call.name,
                                            content="error: not completed: the turn was stopped"))  # fmt: skip
        who = "the user" if by == "stop" else "a newer message"
        context.append(
            AssistantItem(content=f"[stopped by {who} before answering: {reason or 'stop'}]")
        )
        return True

    # ------------------------------------------------------------------ wire: queries

    @workflow.query(name=LLM_CONTEXT_QUERY)
    def llm_context(self, query: ContextQuery) -> ModelRequest:
        """The request of the model call in flight (the model activity reads it here)."""
        if self._inflight is None or self._inflight[0] != query.call_id:
            raise ApplicationError(
                f"model call {query.call_id} is not in flight",
                type="ModelCallNotInFlight",
                non_retryable=True,
            )
        return self._inflight[1]

    @workflow.query(name=TURN_STEPS_QUERY)
    def turn_steps(self, query: TurnStepsQuery) -> TurnSteps:
        """The model's answers so far in turn `query.turn` (the running or a recent one)."""
        context = self.state.context
        starts = [i for i, item in enumerate(context)
                  if isinstance(item, UserItem) and item.message_id == query.turn]  # fmt: skip
        if not starts:
            return TurnSteps(turn=query.turn)
        steps = [item for item in context[starts[-1] + 1 :] if isinstance(item, AssistantItem)]
        return TurnSteps(turn=query.turn, steps=steps)

    @workflow.query(name=USAGE_QUERY)
    def usage_query(self) -> UsageReport:
        """What this agent's model calls spent, its budget and what is left of it."""
        return self._spending.report()

    @workflow.update(name=SET_BUDGET_UPDATE)
    def set_budget_update(self, raw: RawValue = MISSING) -> UsageReport:
        """Give this agent its own budget (replacing its type's), or None: its type's again."""
        self._budget.count_arrival(update=True)
        return self._spending.set_budget(Spending.read_request(raw).budget)

    @set_budget_update.validator
    def _validate_set_budget(self, raw: RawValue = MISSING) -> None:
        Spending.read_request(raw)

    # ------------------------------------------------------------------ model calls

    def _request(self) -> ModelRequest:
        context = self.state.context
        dropped = fit_window(context, self.context_window)
        if dropped:
            workflow.logger.info("context window: dropped %d oldest items", dropped)
        system = with_summary(self.system_prompt(), self.state.summary)
        return ModelRequest(
            model=self.model,
            messages=[SystemItem(content=system), *context],
            tools=self._tool_definitions,
            settings=self.model_settings,
        )

    async def _call_model(self, message_id: str, step: int) -> ModelResponse:
        await self._before_model_call(message_id, step)
        request = self._request()
        model = self.model or "default model"
        self.show(f"turn `{message_id}` · step {step}/{self.max_steps}: calling {model}")
        try:
            response = await self.execute_model(
                request, step=step, turn=message_id, label=f"step {step}"
            )
        except ActivityError as err:
            if is_cancelled_exception(err):  # the turn was stopped: no model error, no retry
                raise asyncio.CancelledError() from None
            raise _model_error(err) from None
        self._record_step(message_id, step, response)
        return response

    async def execute_model(
        self, request: ModelRequest, *, step: int, turn: str | None, label: str
    ) -> ModelResponse:
        """Run the model activity on `request` (read by the `llm_context` query unless it is
        small enough to travel inline); `label` goes into the activity's summary. Raises the
        activity's ActivityError."""
        call_id = str(workflow.uuid4())
        info = workflow.info()
        body = request.model_dump_json()
        inline = len(body.encode()) <= self.inline_request_max_bytes
        self._inflight = (call_id, request)
        try:
            return await workflow.execute_activity(
                MODEL_ACTIVITY,
                ModelCall(
                    agent_id=info.workflow_id,
                    run_id=info.run_id,
                    call_id=call_id,
                    digest=digest(body),
                    step=step,
                    model=request.model,
                    messages=len(request.messages),
                    chars=sum(item_chars(item) for item in request.messages),
                    request=request if inline else None,
                    turn=turn,
                ),
                result_type=ModelResponse,
                start_to_close_timeout=self.model_start_to_close_timeout,
                heartbeat_timeout=self.model_heartbeat_timeout,
                schedule_to_close_timeout=self.model_schedule_to_close_timeout,
                retry_policy=self.model_retry_policy,
                summary=f"llm {request.model or 'default model'} {label}",
            )
        finally:
            self._inflight = None

    async def _before_model_call(self, message_id: str, step: int) -> None:
        """The budget (BudgetExceeded), then room in the context window (a summary)."""
        self._spending.check(message_id)
        if await self._summarizer.compact(message_id, step):
            self._spending.check(message_id)

    def _record_step(self, message_id: str, step: int, response: ModelResponse) -> None:
        self._spending.charge(response.usage, response.cost_usd)  # even if the turn fails
        message = response.message
        self.state.usage = self.state.usage.add(response.usage)
        self.state.context.append(message)
        self.record(
            StepEvent,
            message_id=message_id,
            step=step,
            model=response.model,
            usage=response.usage,
            finish_reason=response.finish_reason,
            tool_calls=[call.name for call in message.tool_calls],
            duration_ms=response.duration_ms,
            attempts=response.attempt,
            cost_usd=response.cost_usd,
        )
        if message.content:
            self.record(TextEvent, message_id=message_id, step=step, text=preview(message.content))

    # ------------------------------------------------------------------ tool calls

    async def _run_tools(self, message_id: str, step: int, calls: list[ToolCall]) -> None:
        names = ", ".join(call.name for call in calls)
        self.show(f"turn `{message_id}` · step {step}/{self.max_steps}: running {names}")
        outcomes = await asyncio.gather(*(self._run_tool(call, message_id) for call in calls))
        # Results go back in the model's order, whatever order the tools finished in.
        for call, outcome in zip(calls, outcomes, strict=True):
            self.state.context.append(
                ToolItem(tool_call_id=call.id, content=outcome.content, name=call.name)
            )
            self.record(
                ToolCallEvent,
                message_id=message_id,
                step=step,
                call_id=call.id,
                name=call.name,
                arguments=preview(call.arguments) or "",
                result=preview(outcome.content) or "",
                ok=outcome.ok,
                runs_in=outcome.runs_in,
                duration_ms=outcome.duration_ms,
                attempts=outcome.attempts,
            )

    async def _run_tool(self, call: ToolCall, message_id: str | None = None) -> _ToolOutcome:
        tool = self._tools.get(call.name)
        if tool is None:
            known = ", ".join(sorted(self._tools)) or "none"
            return _ToolOutcome(
                f"error: there is no tool named {call.name!r} (tools: {known})",
                False, "workflow", 0, 0,
            )  # fmt: skip
        runs_in: Literal["workflow", "activity"] = (
            "activity" if isinstance(tool, ActivityTool) else "workflow"
        )
        try:
            args = tool.parse(call.arguments)
        except ToolArgumentsError as err:
            return _ToolOutcome(
                f"error: invalid arguments for {call.name}: {err}", False, runs_in, 0, 0
            )
        if tool.needs_approval:  # the call waits for a person; the turn goes on without it
            approval = self.request_approval(
                tool.name,
                call.arguments,
                call_id=call.id,
                message_id=message_id,
                deadline=tool.approval_timeout,
            )
            return _ToolOutcome(approval_pending_result(approval), True, runs_in, 0, 0)
        return await self._execute_tool(tool, call, args, runs_in)

    async def _execute_tool(
        self, tool: AnyTool, call: ToolCall, args: Any, runs_in: Literal["workflow", "activity"]
    ) -> _ToolOutcome:
        started = workflow.now()
        if isinstance(tool, ActivityTool):
            content, ok, attempts = await self._run_activity_tool(tool, call, args)
        else:
            content, ok, attempts = await self._run_workflow_tool(tool, args)
        elapsed = int((workflow.now() - started).total_seconds() * 1000)
        return _ToolOutcome(self._cut(content), ok, runs_in, elapsed, attempts)

    async def _run_workflow_tool(self, tool: WorkflowTool, args: Any) -> tuple[str, bool, int]:
        async with self._workflow_tool_lock:
            before = self.state.model_copy(deep=True)
            try:
                with self._sql.undo_on_error():  # a failed call leaves the database as it was
                    result = await tool.invoke(self, args)
                return render_result(result), True, 1
            except _CODE_ERRORS:
                raise
            except ToolError as err:
                self._restore_in_place(before)
                return f"error: {err}", False, 1
            except Exception as err:  # a broken tool is reported to the model, not fatal
                self._restore_in_place(before)
                workflow.logger.warning("workflow tool %s raised: %r", tool.name, err)
                return f"error: {tool.name} failed: {type(err).__name__}: {err}", False, 1

    async def _run_activity_tool(
        self, tool: ActivityTool, call: ToolCall, args: Any
    ) -> tuple[str, bool, int]:
        try:
            result = await execute_tool(tool, args, call_id=call.id)
        except ActivityError as err:
            attempts = _failed_attempts(err, tool.retry_policy)
            reason = err.cause.message if err.cause is not None else err.message
            return (
                f"error: {tool.name} failed after {attempts} attempt(s): {reason}",
                False,
                attempts,
            )
        prefix = "error: " if result.is_error else ""
        return prefix + result.content, not result.is_error, result.attempt

    # ------------------------------------------------------------------ helpers

    def _restore_in_place(self, before: LLMState) -> None:
        # In place: the turn's code holds references to `self.state`.
        for name in type(before).model_fields:
            setattr(self.state, name, getattr(before, name))

    def _cut(self, content: str) -> str:
        limit = self.max_tool_result_chars
        if len(content) <= limit:
            return content
        return f"{content[:limit]}\n… [cut: {len(content)} characters in all]"


def _detail(err: ApplicationError) -> dict[str, Any]:
    details = err.details
    return details[0] if details and isinstance(details[0], dict) else {}


def _model_error(err: ActivityError) -> ModelCallFailed:
    """The model activity's failure as the typed error the turn fails with."""
    cause = err.cause
    if isinstance(cause, ApplicationError):
        failure = cause.type or "ModelError"
        status = _detail(cause).get("status_code")
        where = f" (HTTP {status})" if status else ""
        cls = ModelRequestRejected if cause.non_retryable else ModelUnavailable
        return cls(f"{failure}{where}: {cause.message}", failure=failure, status_code=status)
    if isinstance(cause, TimeoutError):
        return ModelUnavailable(
            f"the model call timed out ({cause.type.name if cause.type else 'timeout'})",
            failure="ModelTimeout",
        )
    return ModelUnavailable(f"the model call failed: {cause or err}", failure="ModelError")


def _failed_attempts(err: ActivityError, policy: RetryPolicy) -> int:
    cause = err.cause
    if isinstance(cause, ApplicationError):
        attempt = _detail(cause).get("attempt")
        if isinstance(attempt, int):
            return attempt
    return policy.maximum_attempts or 1


__all__ = ["LLMAgent", "LLMState"]
