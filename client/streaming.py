"""Following a turn as it happens: text deltas, tool calls and results, restarts, the reply.

Deltas never enter history. A streaming model call heartbeats its `StreamProgress` (all the
text so far); the worker throttles heartbeats to `stream_interval_ms`, and the server keeps
only the newest. A reader polls the agent's workflow description at the same interval: the
pending model call's heartbeat details give the text, cut by what was already delivered. When
the history grows, it reads the agent's event log for the turn's steps and tool calls, and a
finished step's final text (query `turn_steps`), so no tail is lost between two heartbeats.
Everything goes through the Temporal server: any worker may run the turn, any process may
read it, and a reader that reconnects resumes from its `StreamPosition`.

A step whose model call is retried (its worker died mid-stream) is announced by a
`RestartItem`; the new attempt's text follows from its start, never mixed with the old one's
(each heartbeat names its attempt).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from temporalio.client import WorkflowHandle
from temporalio.service import RPCError

from perennial.workflows.llm.wire import (
    MODEL_ACTIVITY,
    TURN_STEPS_QUERY,
    AssistantItem,
    StreamProgress,
    TurnSteps,
    TurnStepsQuery,
)
from perennial.workflows.messages import (
    AskReply,
    DeltaItem,
    Event,
    EventsPage,
    EventsQuery,
    ReplyItem,
    RestartItem,
    StepEvent,
    StreamItem,
    StreamPosition,
    ToolCallEvent,
    ToolCallItem,
    ToolResultItem,
)

if TYPE_CHECKING:
    from temporalio.client import Client

#: Events read per page while following a turn.
_EVENTS_PAGE = 200


@dataclass
class _Step:
    """What was delivered of one step: by which attempt, its text (None: only its length is
    known, after a resume), which tool calls, and whether the step is complete."""

    attempt: int = 0
    chars: int = 0
    text: str | None = ""
    calls: set[str] = field(default_factory=set)
    done: bool = False

    def restart(self, attempt: int) -> None:
        self.attempt, self.chars, self.text, self.calls = attempt, 0, "", set()

    def continues(self, text: str) -> bool:
        """True when `text` extends what was delivered (False: it is another attempt's)."""
        if self.text is None:
            return len(text) >= self.chars
        return text.startswith(self.text)


class TurnFollower:
    """Reads one turn's progress until `answer` (the ask in flight) resolves.

    Args:
        client: A connected Temporal client (its data converter decodes the heartbeats).
        agent_id: The agent's workflow id.
        turn: The turn's id (the message id of the ask).
        answer: The ask in flight; its result ends the stream.
        position: Where to start: after this event offset, with this much of a step's text
            already delivered (a reconnecting reader passes its last position).
        interval: How often to look for progress.
    """

    def __init__(
        self,
        client: Client,
        *,
        agent_id: str,
        turn: str,
        answer: Awaitable[AskReply],
        position: StreamPosition,
        interval: timedelta,
    ) -> None:
        self._client = client
        self._handle: WorkflowHandle[Any, Any] = client.get_workflow_handle(agent_id)
        self._turn = turn
        self._answer = asyncio.ensure_future(answer)
        self._interval = interval.total_seconds()
        self._offset = position.offset
        self._history_length = -1
        self._steps: dict[int, _Step] = {}
        if position.step:
            self._steps[position.step] = _Step(
                attempt=position.attempt, chars=position.chars, text=None
            )
        self._last_step = position.step

    def position(self) -> StreamPosition:
        step = self._steps.get(self._last_step, _Step())
        return StreamPosition(offset=self._offset, step=self._last_step, attempt=step.attempt,
                              chars=step.chars)  # fmt: skip

    async def items(self) -> AsyncIterator[StreamItem]:
        """The turn's items in order, ending with its `ReplyItem`; the ask's error (TurnFailed,
        TurnStopped, AskTimedOut, ...) is raised after the items that came before it."""
        try:
            while not self._answer.done():
                for item in await self._poll():
                    yield item
                await asyncio.wait({self._answer}, timeout=self._interval)
            reply = self._answer.result()  # raises the ask's typed error
            for item in await self._catch_up():
                yield item
            for item in self._finish(reply):
                yield item
        finally:
            if not self._answer.done():
                self._answer.cancel()

    # ------------------------------------------------------------------ one look

    async def _poll(self) -> list[StreamItem]:
        try:
            description = await self._handle.describe()
        except RPCError:
            return []  # not started yet, or switching runs: look again next time
        raw = description.raw_description
        streaming: list[tuple[StreamProgress, int]] = []
        for pending in raw.pending_activities:
            if pending.activity_type.name != MODEL_ACTIVITY:
                continue
            progress = await self._progress(pending)
            if progress is not None and progress.turn == self._turn:
                streaming.append((progress, pending.attempt))
        items: list[StreamItem] = []
        # The text of a step already being streamed goes first (it is what the reader waits
        # for); a new step's waits for the log, which may finish the step before it.
        for progress, attempt in streaming:
            if progress.step in self._steps or progress.step == 1:
                items += self._text(progress, current_attempt=attempt)
        length = raw.workflow_execution_info.history_length
        if length != self._history_length:
            self._history_length = length
            items += await self._catch_up()
        for progress, attempt in streaming:
            items += self._text(progress, current_attempt=attempt)
        return items

    async def _progress(self, pending: Any) -> StreamProgress | None:
        payloads = pending.heartbeat_details.payloads
        if not payloads:
            return None
        try:
            (details,) = await self._client.data_converter.decode(list(payloads)[:1])
            return StreamProgress.model_validate(details)
        except (ValidationError, ValueError, TypeError):
            return None  # not a stream's heartbeat

    def _text(self, progress: StreamProgress, *, current_attempt: int) -> list[StreamItem]:
        step = self._steps.setdefault(progress.step, _Step())
        if step.done:
            return []
        items: list[StreamItem] = []
        newest = max(progress.attempt, current_attempt)
        if newest > step.attempt:
            if step.chars or step.calls:
                items.append(self._restart(progress.step, newest))
            else:
                step.restart(newest)
        self._last_step = progress.step
        if progress.attempt == step.attempt and len(progress.text) > step.chars:
            items.append(self._delta(progress.step, progress.text))
        return items

    def _restart(self, number: int, attempt: int) -> RestartItem:
        self._steps[number].restart(attempt)
        return self._item(RestartItem, step=number, attempt=attempt, at=(number, attempt, 0))

    def _delta(self, number: int, text: str) -> DeltaItem:
        step = self._steps[number]
        piece = text[step.chars :]
        step.chars, step.text = len(text), text
        return self._item(DeltaItem, step=number, text=piece, at=(number, step.attempt, step.chars))

    # ------------------------------------------------------------------ the event log

    async def _catch_up(self) -> list[StreamItem]:
        """Items from the turn's events after the last offset read (finished steps complete
        their text from `turn_steps`; tool calls and results)."""
        items: list[StreamItem] = []
        while True:
            try:
                page = await self._handle.query(
                    "events", EventsQuery(after=self._offset, limit=_EVENTS_PAGE),
                    result_type=EventsPage,
                )  # fmt: skip
            except RPCError:
                return items
            for event in page.events:
                items += await self._from_event(event)
                self._offset = event.offset
            self._offset = max(self._offset, page.next_after)
            if len(page.events) < _EVENTS_PAGE:
                return items

    async def _from_event(self, event: Event) -> list[StreamItem]:
        if getattr(event, "message_id", None) != self._turn:
            return []
        if isinstance(event, StepEvent):
            return await self._step_done(event.step)
        if isinstance(event, ToolCallEvent):
            self._last_step = max(self._last_step, event.step)
            return [self._item(ToolResultItem, step=event.step, call_id=event.call_id,
                               name=event.name, ok=event.ok, result=event.result)]  # fmt: skip
        return []

    async def _step_done(self, number: int) -> list[StreamItem]:
        """A model call returned: deliver the rest of its text and its tool calls."""
        answer = await self._step_answer(number)
        step = self._steps.setdefault(number, _Step())
        self._last_step = number
        items: list[StreamItem] = []
        if answer is None:  # not an LLM agent: the reply completes the text
            return items
        items += self._complete(number, answer.content or "")
        for call in answer.tool_calls:
            if call.id not in step.calls:
                step.calls.add(call.id)
                items.append(self._item(ToolCallItem, step=number, call_id=call.id,
                                        name=call.name, arguments=call.arguments))  # fmt: skip
        step.done = True
        return items

    def _complete(self, number: int, text: str) -> list[StreamItem]:
        """The rest of step `number`'s final text (a restart first if what was delivered
        came from an attempt that did not make it)."""
        step = self._steps[number]
        items: list[StreamItem] = []
        if not step.continues(text):
            items.append(self._restart(number, step.attempt + 1))
        if len(text) > step.chars:
            items.append(self._delta(number, text))
        return items

    async def _step_answer(self, number: int) -> AssistantItem | None:
        try:
            steps = await self._handle.query(
                TURN_STEPS_QUERY, TurnStepsQuery(turn=self._turn), result_type=TurnSteps
            )
        except RPCError:
            return None  # not an LLM agent, or not answering: the reply completes the text
        return steps.steps[number - 1] if 0 < number <= len(steps.steps) else None

    def _finish(self, reply: AskReply) -> list[StreamItem]:
        """The reply ends the stream; a last step not seen finishing is completed from it."""
        items: list[StreamItem] = []
        open_steps = [n for n, step in self._steps.items() if not step.done]
        if reply.reply and (open_steps or not self._steps):
            # The last step's tail (or, for an agent that does not stream, the whole text).
            number = max(open_steps) if open_steps else 1
            self._steps.setdefault(number, _Step())
            items += self._complete(number, reply.reply)
        items.append(self._item(ReplyItem, reply=reply.reply, version=reply.version))
        return items

    def _item(self, cls: Callable[..., StreamItem], *, at: tuple[int, int, int] | None = None,
              **fields: Any) -> StreamItem:  # fmt: skip
        position = self.position()
        if at is not None:
            step, attempt, chars = at
            position = StreamPosition(offset=self._offset, step=step, attempt=attempt, chars=chars)
        return cls(id=self._turn, position=position, **fields)


__all__ = ["TurnFollower"]
