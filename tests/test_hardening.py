"""No input wedges, wipes or impersonates an agent: each defect found by probing the wire
through the raw Temporal client (as anyone with access to the namespace can) is replayed here,
through the raw client where the attack came from there.

The rules that close them: every input is bounded and strict before it can reach a command;
a run never dies on its input; no silent restart from empty; history is budgeted in bytes;
agent-to-agent signals carry capabilities; reads never take the update slots writes need;
request ids are per kind. (Schedules: tests/test_schedule_rules.py; secrets:
tests/test_secrets_redaction.py.)
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.client import WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.common import RawValue, WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.worker import Worker

import tests.agents  # noqa: F401  (registers the test agent types before a worker is built)
from perennial.client import AgentBusy, AgentHandle, AgentStopped, Perennial
from tests.conftest import eventually
from tests.support import (
    accepted_updates,
    history,
    rejected_update,
    rejections,
    run_histories,
    unique,
    worker_task_failures,
)


def _raw(data: bytes, encoding: bytes | None = b"json/plain") -> RawValue:
    metadata = {"encoding": encoding} if encoding is not None else {}
    return RawValue(Payload(metadata=metadata, data=data))


async def _new_agent(perennial: Perennial, agent_type: str = "notes") -> AgentHandle:
    agent = perennial.agent(agent_type, unique())
    assert (await agent.ask("first", id="first")).version == 1
    return agent


async def _no_task_ever_failed(perennial: Perennial, agent: AgentHandle) -> None:
    assert worker_task_failures(await history(agent, perennial.client)) == []


# --------------------------------------------------------------------------- 2, 3: long ids


async def test_a_reply_to_with_an_id_over_the_servers_limit_is_rejected_not_a_wedge(
    perennial: Perennial, worker: Worker
) -> None:
    agent = await _new_agent(perennial)
    handle = perennial.client.get_workflow_handle(agent.id)
    await handle.signal(
        "message",
        {"text": "hi", "reply_to": {"asker_id": "x" * 1001, "correlation_id": "c"}},
    )
    assert (await agent.ask("still here")).version == 2
    [rejected] = await rejections(agent)
    assert "reply_to.asker_id" in rejected and "x" * 100 not in rejected  # no echo
    await _no_task_ever_failed(perennial, agent)


async def test_a_subscriber_id_over_the_servers_limit_is_rejected_not_a_wedge(
    perennial: Perennial, worker: Worker
) -> None:
    agent = await _new_agent(perennial)
    handle = perennial.client.get_workflow_handle(agent.id)
    await handle.signal(
        "subscribe", {"subscriber_id": "y" * 1001, "watch": "events", "debounce_seconds": 0.05}
    )
    await agent.send("change")  # would have reported to the bad id
    assert (await agent.ask("still here")).version == 3
    [rejected] = await rejections(agent)
    assert "subscriber_id" in rejected
    await _no_task_ever_failed(perennial, agent)


# --------------------------------------------------------------------------- 4: bad starts

_BAD_STARTS: list[Any] = [
    "a string",
    42,
    [],
    {"zzz": 1},
    {"packed": "not base64 lzma"},
    {"snapshots": [{"version": 0, "state_json": "{\"counter\": \"many\"}"}]},
    {"snapshots": "nope"},
    {"generation": -1},
    {f"k{i}": i for i in range(50_000)},
]


@pytest.mark.parametrize("start", _BAD_STARTS, ids=lambda s: json.dumps(s)[:30])
async def test_a_bad_start_input_fails_the_run_at_once_and_the_name_stays_usable(
    perennial: Perennial, worker: Worker, start: Any
) -> None:
    agent_id = f"notes/{unique()}"
    handle = await perennial.client.start_workflow(
        "notes", start, id=agent_id, task_queue=perennial.settings.task_queue
    )
    with pytest.raises(Exception) as failed:
        await handle.result()
    cause = getattr(failed.value, "cause", None)
    assert isinstance(cause, ApplicationError) and cause.type == "InvalidStart", failed.value
    assert len(cause.message) < 600  # says what is wrong without echoing the input
    assert (await handle.describe()).status == WorkflowExecutionStatus.FAILED
    # The next send starts the agent afresh: the failed run never held anything.
    agent = perennial.agent("notes", agent_id.split("/", 1)[1])
    assert (await agent.ask("hello")).reply == "Noted (note #1)."


@pytest.mark.parametrize("start", [None, "absent"])
async def test_a_start_with_no_input_is_a_new_agent(
    perennial: Perennial, worker: Worker, start: Any
) -> None:
    agent_id = f"notes/{unique()}"
    args = [] if start == "absent" else [start]
    await perennial.client.start_workflow(
        "notes", args=args, id=agent_id, task_queue=perennial.settings.task_queue
    )
    agent = perennial.agent("notes", agent_id.split("/", 1)[1])
    assert (await agent.ask("hello")).reply == "Noted (note #1)."


# --------------------------------------------------------------------------- stopped agents


async def test_a_failed_or_terminated_agent_is_never_restarted_empty_and_recover_resumes_it(
    perennial: Perennial, worker: Worker
) -> None:
    agent = await _new_agent(perennial)
    await agent.send("second", id="second")
    await eventually(lambda: _version_is(agent, 2))
    handle = perennial.client.get_workflow_handle(agent.id)
    await handle.terminate(reason="an operator's mistake")
    # Every way in refuses, typed, and sends nothing: raw get-or-create is not ours to stop.
    for attempt in (agent.send("lost?"), agent.ask("lost?"), agent.schedule("s", "p", after_seconds=60)):
        with pytest.raises(AgentStopped, match="an operator's mistake"):
            await attempt
    recovery = await agent.recover()
    assert (await handle.describe()).run_id == recovery.run_id
    reply = await agent.ask("third")
    assert (reply.reply, reply.version) == ("Noted (note #3).", 3)
    assert (await agent.state_view()).state["notes"] == ["first", "second", "third"]


async def _version_is(agent: AgentHandle, version: int) -> bool:
    return (await agent.state_view()).version == version


async def test_recover_reapplies_messages_that_came_after_the_last_good_task(
    perennial: Perennial, settings: Any
) -> None:
    """Messages accepted by the server while no worker ran, then the run terminated: recover
    resets to the last completed workflow task and the messages are applied after all."""
    from perennial.worker import build_worker

    agent = perennial.agent("notes", unique())
    async with build_worker(perennial.client, settings):
        await agent.ask("before")
    for i in range(3):  # no worker: accepted into history, not yet applied
        await agent.send(f"queued {i}", id=f"q{i}")
    await perennial.client.get_workflow_handle(agent.id).terminate(reason="test")
    await agent.recover()
    async with build_worker(perennial.client, settings):
        await eventually(lambda: _version_is(agent, 4))
        notes = (await agent.state_view()).state["notes"]
    assert notes == ["before", "queued 0", "queued 1", "queued 2"]


# --------------------------------------------------------------------------- 5: floods


async def test_a_burst_of_large_messages_through_the_client_switches_runs_and_loses_nothing(
    perennial: Perennial, worker: Worker
) -> None:
    """450 messages with 120 KB of data each (54 MB) in a few seconds: too large for signals,
    they go by update `send`, which the agent refuses (AgentBusy, retried by the client)
    whenever its run's history nears its byte budget. The run switches instead of growing
    toward the server's 50 MB limit, and every message is applied once."""
    agent = await _new_agent(perennial)
    data = "d" * 120_000
    sem = asyncio.Semaphore(16)

    async def send(i: int) -> None:
        async with sem:
            await agent.send(f"m{i}", id=f"m{i}", data=data)

    await asyncio.gather(*(send(i) for i in range(450)))
    await eventually(lambda: _version_is(agent, 451), timeout=120)
    view = await agent.state_view()
    assert view.state["notes"][1:] == [f"m{i}" for i in range(450)] or sorted(
        view.state["notes"][1:]
    ) == sorted(f"m{i}" for i in range(450))
    runs = await _runs(perennial, agent)
    assert runs >= 2  # it switched
    description = await perennial.client.get_workflow_handle(agent.id).describe()
    assert description.status == WorkflowExecutionStatus.RUNNING


async def _runs(perennial: Perennial, agent: AgentHandle) -> int:
    return len(await run_histories(perennial.client, agent.id))


async def test_a_flood_of_the_largest_valid_signals_never_reaches_the_history_limit(
    perennial: Perennial, worker: Worker
) -> None:
    """Raw signals at the signal size limit (16 KiB), 2,000 of them (32 MB) as fast as the
    server takes them: the agent switches runs by bytes and applies every one."""
    agent = await _new_agent(perennial)
    handle = perennial.client.get_workflow_handle(agent.id)
    data = "d" * 15_900
    sem = asyncio.Semaphore(16)

    async def send(i: int) -> None:
        async with sem:
            await handle.signal("message", {"text": f"m{i}", "id": f"m{i}", "data": data})

    await asyncio.gather(*(send(i) for i in range(2_000)))
    await eventually(lambda: _version_is(agent, 2_001), timeout=180)
    assert await _runs(perennial, agent) >= 2
    for run in await _run_sizes(perennial, agent):
        assert run < 40 * 1024 * 1024


async def _run_sizes(perennial: Perennial, agent: AgentHandle) -> list[int]:
    return [sum(e.ByteSize() for e in run) for run in await run_histories(perennial.client, agent.id)]


async def test_a_raw_flood_of_oversized_signals_is_recovered_without_them(
    perennial: Perennial, worker: Worker
) -> None:
    """Signals are in history before the agent sees them: oversized ones (refused by the
    agent) flooded faster than ~30 MB/s reach the server's 50 MB history limit and the server
    terminates the run. No workflow code can refuse them; what Perennial guarantees is the
    aftermath: no silent restart from empty, and `recover` brings the agent back without them
    (too many bytes for the server to reapply), sending again only what it accepts."""
    agent = await _new_agent(perennial)
    handle = perennial.client.get_workflow_handle(agent.id)
    sem = asyncio.Semaphore(16)

    async def flood(i: int) -> None:
        async with sem:
            try:
                await handle.signal("message", {"text": f"m{i}", "data": "d" * 120_000})
            except RPCError:
                pass  # refused once the run was terminated

    await asyncio.gather(*(flood(i) for i in range(450)))
    if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
        pytest.skip("this machine did not flood fast enough to reach the history limit")
    with pytest.raises(AgentStopped, match="history size exceeds limit"):
        await agent.send("refused, typed")
    recovery = await agent.recover()
    assert recovery.skipped_signals >= 300
    assert (await agent.ask("after recovery")).reply == "Noted (note #2)."


async def test_signals_too_large_for_a_signal_are_rejected_and_say_how_to_send_them(
    perennial: Perennial, worker: Worker
) -> None:
    agent = await _new_agent(perennial)
    handle = perennial.client.get_workflow_handle(agent.id)
    await handle.signal("message", {"text": "big", "data": "d" * 120_000})
    assert (await agent.ask("next")).version == 2
    [rejected] = await rejections(agent)
    assert "by signal" in rejected and "update `send`" in rejected


# --------------------------------------------------------------------------- 6: followers


async def test_followers_never_take_the_update_slots_that_writes_need(
    perennial: Perennial, worker: Worker
) -> None:
    agent = await _new_agent(perennial)
    seen: list[list[int]] = [[] for _ in range(10)]

    async def follow(index: int) -> None:
        async for event in agent.watch(after=0):
            seen[index].append(event.offset)

    followers = [asyncio.create_task(follow(i)) for i in range(10)]
    try:
        await asyncio.sleep(0)  # let them start waiting
        reply = await asyncio.wait_for(agent.ask("while followed"), timeout=15)
        assert reply.version == 2
        await agent.schedule("s", "ping", after_seconds=3600)
        last = (await agent.events()).next_after
        await eventually(lambda: all(s and s[-1] >= last for s in seen), timeout=20)
    finally:
        for task in followers:
            task.cancel()
        await asyncio.gather(*followers, return_exceptions=True)


async def test_long_polls_are_bounded_in_number_and_time(
    perennial: Perennial, worker: Worker
) -> None:
    agent = await _new_agent(perennial)
    cause = await rejected_update(perennial, agent, "wait_events", {"after": 0, "timeout_seconds": 600})
    assert cause.type == "InvalidRequest" and "timeout_seconds" in cause.message
    handle = perennial.client.get_workflow_handle(agent.id)
    waiting = [
        asyncio.create_task(
            handle.execute_update("wait_events", {"after": 99, "timeout_seconds": 30})
        )
        for _ in range(3)
    ]
    await eventually(lambda: _waiters_admitted(perennial, agent, 3))
    cause = await rejected_update(perennial, agent, "wait_events", {"after": 99})
    assert cause.type == "AgentBusy"
    with pytest.raises(AgentBusy):
        await agent.wait_events(after=99, timeout=1)
    assert (await agent.ask("writes still go through")).version == 2
    await asyncio.gather(*waiting)  # released by the new events


async def _waiters_admitted(perennial: Perennial, agent: AgentHandle, count: int) -> bool:
    accepted = accepted_updates(await history(agent, perennial.client))
    return sum(u.name == "wait_events" for u in accepted) >= count


# --------------------------------------------------------------------------- 7: huge ask


async def test_an_ask_over_the_payload_limit_disturbs_nobody_else(
    perennial: Perennial, worker: Worker
) -> None:
    """A 2.5 MB update cannot be refused with a typed rejection (the rejection would carry
    the request back, over the server's limit): the server drops it, its caller gets an error,
    and the agent and its other callers are undisturbed."""
    agent = await _new_agent(perennial)
    handle = perennial.client.get_workflow_handle(agent.id)
    with pytest.raises((RPCError, WorkflowUpdateFailedError)):
        await handle.execute_update("ask", {"text": "x", "data": "y" * 2_500_000})
    reply = await asyncio.wait_for(agent.ask("right after"), timeout=5)
    assert reply.version == 2
    await _no_task_ever_failed(perennial, agent)


# --------------------------------------------------------------------------- 8: undecodable

_UNDECODABLE: dict[str, RawValue] = {
    "invalid utf-8": _raw(b'{"text": "\xff\xfe"}'),
    "lone surrogate": _raw(b'{"text": "\\ud800"}'),
    "truncated": _raw(b'{"text": "ab'),
    "nested 900": _raw(b'{"text": "a", "data": ' + b"[" * 900 + b"]" * 900 + b"}"),
    "4301-digit integer": _raw(b'{"text": "a", "data": ' + b"9" * 4301 + b"}"),
    "NaN": _raw(b'{"text": "a", "data": NaN}'),
    "protobuf": _raw(b"\x0a\x01a", b"json/protobuf"),
    "binary": _raw(b"\x00\x01", b"binary/plain"),
    "no encoding": _raw(b'{"text": "a"}', None),
}


async def test_undecodable_message_signals_become_rejected_events(
    perennial: Perennial, worker: Worker
) -> None:
    agent = await _new_agent(perennial)
    handle = perennial.client.get_workflow_handle(agent.id)
    for raw in _UNDECODABLE.values():
        await handle.signal("message", raw)
    await handle.signal("message", args=[{"text": "one"}, {"text": "two"}])  # wedged agents
    await handle.signal("message")  # no argument at all
    await handle.signal("no_such_signal", {"text": "a"})
    assert (await agent.ask("still here")).version == 2
    rejected = await rejections(agent)
    assert len(rejected) == len(_UNDECODABLE) + 3
    assert any("takes one argument, got 2" in r for r in rejected)
    assert any("missing argument" in r for r in rejected)
    assert any("no such signal" in r for r in rejected)
    await _no_task_ever_failed(perennial, agent)


@pytest.mark.parametrize("case", [*_UNDECODABLE, "no argument"])
async def test_undecodable_asks_get_a_typed_rejection(
    perennial: Perennial, worker: Worker, case: str
) -> None:
    agent = await _new_agent(perennial)
    args = [] if case == "no argument" else [_UNDECODABLE[case]]
    cause = await rejected_update(perennial, agent, "ask", *args)
    assert cause.type == "InvalidMessage", cause
    assert (await agent.ask("still here")).version == 2


@pytest.mark.parametrize("version", [True, "1", 1.0])
async def test_rollback_versions_are_strict_integers(
    perennial: Perennial, worker: Worker, version: Any
) -> None:
    agent = await _new_agent(perennial)
    cause = await rejected_update(perennial, agent, "rollback", {"version": version})
    assert cause.type == "InvalidRequest"


# --------------------------------------------------------------------------- 11: request ids


async def test_an_ask_and_a_rollback_with_the_same_id_never_meet(
    perennial: Perennial, worker: Worker
) -> None:
    agent = await _new_agent(perennial)
    handle = perennial.client.get_workflow_handle(agent.id)
    for i in range(16):
        version = (await agent.state_view()).version
        ask, rollback = await asyncio.gather(
            handle.execute_update("ask", {"text": f"n{i}", "id": f"same-{i}"}),
            handle.execute_update("rollback", {"version": version, "id": f"same-{i}"}),
        )
        assert ask["reply"].startswith("Noted") and rollback["restored_version"] == version
    await _no_task_ever_failed(perennial, agent)


async def test_a_workflow_id_conflict_with_use_existing_attaches_to_the_running_agent(
    perennial: Perennial, worker: Worker
) -> None:
    """The wire contract for other SDKs: get-or-create attaches to the running run."""
    agent = await _new_agent(perennial)
    await perennial.client.start_workflow(
        "notes",
        {},
        id=agent.id,
        task_queue=perennial.settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        start_signal="message",
        start_signal_args=[{"text": "attached", "id": "attached"}],
    )
    await eventually(lambda: _version_is(agent, 2))
