"""The scripted model for the planner's tests and benchmark: one Chat Completions server
(`perennial.testing.ScriptedLLM`) answers every agent of the planner, each request matched to
the agent that sent it by its system prompt, so the agents' calls may interleave in any order
(one session's conversation and travel agents, or a hundred sessions at once).

Each agent has a queue of answers (a `Reply`, or a function of the request that returns one);
with its queue empty an agent answers by a default rule that needs no script:

- conversation: a traveller's message is routed to `travel` as it is; a specialist's answer
  is relayed as "travel: <answer>";
- travel: "Planning: <the request>" at once;
- a summary request: a one-line summary;
- any other agent (not the planner's): "Noted.".
"""

from __future__ import annotations

import json
import re
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from perennial.testing import ScriptedLLM, call, text, tool_calls
from perennial.testing.scripted_llm import Reply, Request

Answer = Reply | Callable[[Request], Reply]

#: How each agent's system prompt begins (its type's instructions).
PROMPTS = {
    "conversation": "You are the front desk of a travel planner",
    "travel": "You are a travel planner",
    "summary": "You keep the memory of a long conversation",
}
SOURCE = re.compile(r'"source"\s*:\s*"(https?://[^"]+)"')


def agent_of(request: Request) -> str:
    """Which agent sent the request: conversation, travel, summary, or other (an agent that
    is not the planner's, like the demo's assistant)."""
    system = request.messages[0]["content"] if request.messages else ""
    for agent, start in PROMPTS.items():
        if system.startswith(start):
            return agent
    return "other"


def last(request: Request) -> dict[str, Any]:
    return request.messages[-1]


def user_text(request: Request) -> str:
    """The last user message of the request."""
    return next(m["content"] for m in reversed(request.messages) if m["role"] == "user")


def tool_result(request: Request, name: str) -> str:
    """The content of the last result of tool `name` in the request."""
    calls = {
        c["id"]: c["function"]["name"]
        for m in request.messages
        if m["role"] == "assistant"
        for c in m.get("tool_calls") or []
    }
    found = [m["content"] for m in request.messages
             if m["role"] == "tool" and calls.get(m["tool_call_id"]) == name]  # fmt: skip
    assert found, f"no result of {name} in the request"
    return found[-1]


def sources(request: Request, name: str) -> list[str]:
    """The `source` URLs in the last result of tool `name`, in order."""
    return SOURCE.findall(tool_result(request, name))


class PlannerModel:
    """Answers the planner's agents (see the module docstring); install with
    `PlannerModel(scripted_llm)`."""

    def __init__(self, llm: ScriptedLLM, *, delay: float = 0.0) -> None:
        self.llm = llm
        #: Seconds every default answer waits (a model answering in a fixed time).
        self.delay = delay
        self.queues: dict[str, deque[Answer]] = {agent: deque() for agent in (*PROMPTS, "other")}
        self.seen: dict[str, int] = dict.fromkeys(self.queues, 0)
        self._lock = threading.Lock()
        llm.respond = self

    def script(self, agent: str, *answers: Answer) -> None:
        with self._lock:
            self.queues[agent].extend(answers)

    def pending(self, agent: str) -> int:
        with self._lock:
            return len(self.queues[agent])

    def __call__(self, request: Request) -> Reply:
        agent = agent_of(request)
        with self._lock:
            self.seen[agent] += 1
            answer = self.queues[agent].popleft() if self.queues[agent] else None
        if answer is None:
            return self.default(agent, request)
        return answer(request) if callable(answer) else answer

    def default(self, agent: str, request: Request) -> Reply:
        message = last(request)
        if agent == "conversation":
            if message["role"] == "tool":
                return text(f"travel: {message['content']}", delay=self.delay)
            return tool_calls(call("route_to", specialist="travel", request=user_text(request)),
                              delay=self.delay)  # fmt: skip
        if agent == "travel":
            return text(f"Planning: {user_text(request)}", delay=self.delay)
        if agent == "summary":
            return text("The traveller is planning a trip.", delay=self.delay)
        return text("Noted.", delay=self.delay)


def route(specialist: str, request: str) -> Reply:
    """The conversation's answer that forwards `request` to `specialist`."""
    return tool_calls(call("route_to", specialist=specialist, request=request))


def relay(request: Request) -> Reply:
    """The conversation's answer that relays the specialist's answer as it is."""
    return text(last(request)["content"])


def arguments(request: Request, name: str) -> dict[str, Any]:
    """The arguments of the last call of tool `name` the model made in the request."""
    for m in reversed(request.messages):
        for c in m.get("tool_calls") or []:
            if c["function"]["name"] == name:
                return json.loads(c["function"]["arguments"])
    raise AssertionError(f"no call of {name} in the request")


__all__ = [
    "PROMPTS",
    "PlannerModel",
    "agent_of",
    "arguments",
    "last",
    "relay",
    "route",
    "sources",
    "tool_result",
    "user_text",
]
