"""The baseline of `bench_llm`: a plain Temporal workflow whose update runs one activity
making the same Chat Completions call as a one-step Perennial turn, and the bench's own
LLM agent types. Nothing here is part of Perennial."""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

from perennial.workflows.llm import ContextWindow, LLMAgent, LLMState
from perennial.workflows.registry import agent_type

with workflow.unsafe.imports_passed_through():
    from openai import AsyncOpenAI

RAW_TYPE = "raw_llm"
INSTRUCTIONS = "You are a terse assistant."


class _OneExchange(LLMAgent[LLMState]):
    """One exchange of context (system + the user's message): the same request as the raw
    baseline sends."""

    instructions = INSTRUCTIONS
    model = "bench-model"
    context_window = ContextWindow(max_items=2)


@agent_type("bench_llm")
class BenchLLMAgent(_OneExchange):
    """As configured: a request this small travels inline."""


@agent_type("bench_llm_by_query")
class BenchByQueryAgent(_OneExchange):
    """The same, with the request always read by the `llm_context` query."""

    inline_request_max_bytes = 0


@agent_type("bench_llm_chat")
class BenchChatAgent(LLMAgent[LLMState]):
    """A long conversation (the default window of 100 items) with the state tools."""

    instructions = INSTRUCTIONS
    model = "bench-model"


class RawActivities:
    def __init__(self, base_url: str) -> None:
        self._client = AsyncOpenAI(api_key="unused", base_url=base_url, max_retries=0)

    @activity.defn(name="raw_llm_complete")
    async def complete(self, text: str) -> str:
        completion = await self._client.chat.completions.create(
            model="bench-model",
            messages=[
                {"role": "system", "content": INSTRUCTIONS},
                {"role": "user", "content": text},
            ],
            timeout=60,
        )
        return completion.choices[0].message.content or ""


@workflow.defn(name=RAW_TYPE)
class RawLLMWorkflow:
    def __init__(self) -> None:
        self._stop = False

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: self._stop)

    @workflow.update
    async def ask(self, text: str) -> str:
        return await workflow.execute_activity(
            "raw_llm_complete",
            text,
            result_type=str,
            start_to_close_timeout=timedelta(seconds=60),
            heartbeat_timeout=timedelta(seconds=30),
        )

    @workflow.signal
    def stop(self) -> None:
        self._stop = True


def build_raw_llm_worker(client: Client, task_queue: str, base_url: str) -> Worker:
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[RawLLMWorkflow],
        activities=[RawActivities(base_url).complete],
    )
