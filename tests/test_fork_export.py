"""Fork, export, import and state schema migrations: a new agent from another's state at a
kept version (memory included, the source untouched, the origin its first event), schedules
copied on request, existing names and unknown versions refused, a round trip to a second
server, bad files refused typed; an agent type's state migrated across continue-as-new and
rollback, and a failed migration typed with the agent left as it was."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

import tests.fork_agents  # noqa: F401  (registers the test agent types before a worker is built)
from perennial.activities import build_activities
from perennial.client import (
    AgentExists,
    AgentHandle,
    AgentNotFound,
    AgentStopped,
    InvalidExport,
    InvalidRequest,
    Perennial,
    Settings,
    StateMigrationFailed,
    VersionNotKept,
)
from perennial.client.gateway.server import GatewayServer
from perennial.client.transfer import check_bundle, export_text, read_export
from perennial.testing import AgentTestEnv, eventually
from perennial.worker import build_worker, workflow_runner
from perennial.workflows.messages import ForkedEvent, ImportedEvent, SqlRequest, SqlRows
from tests.conftest import ROOT
from tests.fork_agents import POISON, ForkNotesAgent, MigratingV2, MigratingV3
from tests.support import TASK_COMPLETED, has_events, unique

NOTES = "test_fork_notes"
MIGRATING = "test_fork_migrating"


async def _filled(perennial: Perennial) -> str:
    """The name of a notes agent at version 3: memory at v1, notes at v2 and v3."""
    name = unique("src")
    for text in ("remember color=blue", "a", "b"):
        await perennial.agent(NOTES, name).ask(text)
    return name


# --------------------------------------------------------------------------- fork


async def test_a_fork_starts_from_the_source_at_a_kept_version_and_leaves_it_alone(
    perennial: Perennial, worker: Worker
) -> None:
    name = await _filled(perennial)
    source = perennial.agent(NOTES, name)
    before, before_events = await source.state_view(), await source.events()

    fork = await source.fork(unique("fork"), version=2)
    view = await fork.state_view()
    assert (view.version, view.versions_kept) == (2, [2])
    assert view.state == {"notes": ["a"], "memory": {"color": "blue"}}  # memory included
    assert await _database(perennial.client, fork.id) == ["a"]  # its database at that version
    first = (await fork.events()).events[0]
    assert isinstance(first, ForkedEvent)
    assert (first.offset, first.source_id, first.version, first.schedules) == (1, source.id, 2, 0)
    # The fork lives on from there, on its own.
    assert ((await fork.ask("c")).reply, (await fork.state_view()).version) == ("2 notes", 3)
    assert (await fork.state_view()).state["notes"] == ["a", "c"]
    assert (await source.state_view()).model_dump() == before.model_dump()
    assert (await source.events()).model_dump() == before_events.model_dump()

    # Without a version: the current state, with every kept version to roll back to.
    whole = await source.fork(unique("fork"))
    view = await whole.state_view()
    assert (view.version, view.versions_kept, view.state) == (3, [0, 1, 2, 3], before.state)
    assert await _database(perennial.client, whole.id) == ["a", "b"]
    await whole.rollback(2)  # state and database of every kept version came along
    assert (await whole.state_view()).state == {"notes": ["a"], "memory": {"color": "blue"}}
    assert await _database(perennial.client, whole.id) == ["a"]
    assert await _database(perennial.client, source.id) == ["a", "b"]


async def test_a_fork_onto_an_existing_agent_or_from_an_unknown_version_is_refused(
    perennial: Perennial, worker: Worker
) -> None:
    name = await _filled(perennial)
    source = perennial.agent(NOTES, name)
    other = perennial.agent(NOTES, unique("other"))
    await other.ask("mine")
    other_before = (await other.state_view(), await other.events())

    with pytest.raises(AgentExists, match="already exists"):
        await source.fork(other.name)
    assert (await other.state_view(), await other.events()) == other_before
    with pytest.raises(AgentExists):
        await source.fork(source.name)
    with pytest.raises(VersionNotKept, match="version 9"):
        await source.fork(unique("nothing"), version=9)
    with pytest.raises(InvalidRequest):
        await source.fork("")
    # A stopped agent holds a state `recover` can bring back: its name is not free either.
    stopped = perennial.agent(NOTES, unique("stopped"))
    await stopped.ask("kept")
    await perennial.client.get_workflow_handle(stopped.id).terminate("test")
    with pytest.raises(AgentExists, match="recover"):
        await source.fork(stopped.name)
    assert not (await stopped.describe()).running
    assert (await source.state_view()).version == 3


async def test_schedules_are_copied_on_request_and_past_one_shots_fire_at_once(
    perennial: Perennial, worker: Worker
) -> None:
    source = perennial.agent(NOTES, unique("sched"))
    await source.ask("a")
    await source.schedule("daily", "tick", every_seconds=86_400)
    await source.schedule("later", "ping", after_seconds=3_600)
    due = {s.id: s.next_due for s in await source.schedules()}

    assert await (await source.fork(unique("bare"))).schedules() == []
    fork = await source.fork(unique("sched"), with_schedules=True)
    assert {s.id: s.next_due for s in await fork.schedules()} == due
    first = (await fork.events()).events[0]
    assert isinstance(first, ForkedEvent) and first.schedules == 2

    # A one-shot whose time passed while it was in a file fires as soon as the agent starts.
    bundle = await source.export(with_schedules=True)
    past = datetime.now(UTC) - timedelta(minutes=5)
    bundle.schedules = [
        s.model_copy(update={"next_due": past}) if s.id == "later" else s for s in bundle.schedules
    ]
    revived = await perennial.import_agent(export_text(bundle), name=unique("revived"))
    await eventually(lambda: _has_note(revived, "ping"))
    assert [s.id for s in await revived.schedules()] == ["daily"]
    assert (await revived.state_view()).state["notes"] == ["a", "ping"]


async def _database(client: Client, workflow_id: str) -> list[str]:
    """The notes in the agent's SQL database."""
    rows = await client.get_workflow_handle(workflow_id).query(
        "sql", SqlRequest(query="SELECT text FROM notes ORDER BY rowid"), result_type=SqlRows
    )
    return [row[0] for row in rows.rows]  # type: ignore[misc]


async def _has_note(agent: AgentHandle, note: str) -> bool:
    return note in (await agent.state_view()).state["notes"]


# --------------------------------------------------------------------------- export, import


async def test_export_and_import_into_a_second_server_by_the_client_and_the_cli(
    perennial: Perennial, worker: Worker, settings: Settings, tmp_path: Path
) -> None:
    name = await _filled(perennial)
    source = perennial.agent(NOTES, name)
    await source.schedule("daily", "tick", every_seconds=86_400)
    file = tmp_path / "agent.json"
    code, out, err = await _cli(settings, "export", source.id, "--with-schedules")
    assert code == 0, err
    file.write_text(out)
    assert "exported" in err and json.loads(out)["snapshots"][-1]["state"]["notes"] == ["a", "b"]
    view = await source.state_view()

    async with AgentTestEnv(app=["tests.fork_agents"]) as second:
        copy = await second.perennial.import_agent(file)  # the source's name by default
        assert copy.id == source.id
        moved = await copy.state_view()
        assert (moved.version, moved.versions_kept, moved.state) == (3, [0, 1, 2, 3], view.state)
        assert await _database(second.perennial.client, copy.id) == ["a", "b"]
        assert [s.next_due for s in await copy.schedules()] == [
            s.next_due for s in await source.schedules()
        ]
        first = (await copy.events()).events[0]
        assert isinstance(first, ImportedEvent) and first.source_id == source.id
        assert first.exported_at is not None and first.schedules == 1
        with pytest.raises(AgentExists):
            await second.perennial.import_agent(file)
        assert (await copy.ask("c")).version == 4

        # The CLI, into the second server under another name (TYPE/NAME: the type is checked).
        cli = second.settings
        code, out, err = await _cli(cli, "--json", "import", str(file), "--name", f"{NOTES}/cli")
        assert code == 0, err
        assert json.loads(out)["id"] == f"{NOTES}/cli"
        assert (await second.agent(NOTES, "cli").state_view()).state == view.state
        code, _, err = await _cli(cli, "--json", "import", str(file), "--name", "test_cart/cli")
        assert code == 2 and _error(err)["type"] == "InvalidExport", err
        code, _, err = await _cli(cli, "--json", "import", str(file), "--name", "cli")
        assert code == 2 and _error(err)["type"] == "AgentExists", err
        code, out, err = await _cli(
            cli, "--json", "fork", f"{NOTES}/cli", "cli-2", "--version", "2"
        )
        assert code == 0, err
        assert (json.loads(out)["version"], json.loads(out)["kind"]) == (2, "forked")
    # The source was only read.
    assert (await source.state_view()).model_dump() == view.model_dump()


async def test_bad_export_files_are_refused_typed_and_start_nothing(
    perennial: Perennial, worker: Worker, tmp_path: Path
) -> None:
    name = await _filled(perennial)
    good = json.loads(export_text(await perennial.agent(NOTES, name).export()))

    def spoiled(**changes: object) -> dict[str, object]:
        return {**good, **changes}

    bad = {
        "not JSON": b"{nope",
        "not an agent export": {"hello": "world"},
        "a newer Perennial": spoiled(format_version=99),
        "snapshots": spoiled(snapshots=[]),
        "last snapshot": spoiled(version=7),
        "not an agent of": spoiled(source_id="test_cart/x"),
        "sql": spoiled(sql={"base_version": 0, "base": "bm90IGEgZGF0YWJhc2U="}),
        "cannot read": tmp_path / "missing.json",
    }
    for reason, source in bad.items():
        with pytest.raises(InvalidExport, match=reason):
            read_export(source)  # type: ignore[arg-type]

    target = perennial.agent(NOTES, unique("target"))
    with pytest.raises(InvalidExport, match="not a 'test_cart' one"):
        await perennial.import_agent(good, name=target.name, agent_type="test_cart")
    misfit = spoiled(snapshots=[{"version": 3, "state": {"notes": "not a list"}}])
    with pytest.raises(InvalidExport, match="does not fit ForkNotes"):
        await perennial.import_agent(misfit, name=target.name)
    with pytest.raises(AgentNotFound):
        await target.describe()
    # A state from newer code than this process's is refused before anything starts.
    newer = spoiled(snapshots=[{"version": 3, "state": {"notes": []}, "schema_version": 5}])
    with pytest.raises(StateMigrationFailed, match="newer"):
        check_bundle(read_export(newer), ForkNotesAgent)


# --------------------------------------------------------------------------- the gateway


async def test_the_gateway_forks_exports_and_imports_with_scopes(
    perennial: Perennial, worker: Worker, settings: Settings, tmp_path: Path
) -> None:
    name = await _filled(perennial)
    target, landing, stranger = unique("gw"), unique("gw"), unique("gw")
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(f"""
[[token]]
name = "forker"
token = "forker-token-0123456789abcdef"
scopes = ["read:{NOTES}/{name}", "write:{NOTES}/{name}", "write:{NOTES}/{target}",
          "write:{NOTES}/{landing}"]

[[token]]
name = "reader"
token = "reader-token-0123456789abcdef"
scopes = ["read:*"]
""")
    served = settings.model_copy(update={"gateway_port": 0, "gateway_tokens_file": tokens})
    forker = {"Authorization": "Bearer forker-token-0123456789abcdef"}
    reader = {"Authorization": "Bearer reader-token-0123456789abcdef"}
    base = f"/agents/{NOTES}/{name}"
    async with (
        GatewayServer(served, perennial=perennial) as gateway,
        httpx.AsyncClient(base_url=gateway.url, timeout=30) as http,
    ):
        refused = await http.post(f"{base}/fork", json={"name": stranger}, headers=forker)
        assert refused.status_code == 403, refused.text
        refused = await http.post(f"{base}/fork", json={"name": target}, headers=reader)
        assert refused.status_code == 403, refused.text
        forked = await http.post(f"{base}/fork", json={"name": target, "version": 1},
                                 headers=forker)  # fmt: skip
        assert forked.status_code == 200, forked.text
        assert forked.json() | {"id": None} == {
            "id": None, "agent_type": NOTES, "name": target, "kind": "forked",
            "source_id": f"{NOTES}/{name}", "version": 1, "versions": 1, "schedules": 0,
        }  # fmt: skip
        again = await http.post(f"{base}/fork", json={"name": target}, headers=forker)
        assert again.status_code == 409 and again.json()["error"]["type"] == "AgentExists"
        gone = await http.get(f"{base}/export", params={"version": 9}, headers=reader)
        assert gone.status_code == 404 and gone.json()["error"]["type"] == "VersionNotKept"

        exported = await http.get(f"{base}/export", headers=reader)
        assert exported.status_code == 200, exported.text
        bundle = exported.json()
        assert [s["version"] for s in bundle["snapshots"]] == [0, 1, 2, 3]
        refused = await http.post("/agents/import", params={"name": stranger}, json=bundle,
                                  headers=forker)  # fmt: skip
        assert refused.status_code == 403, refused.text
        junk = await http.post("/agents/import", json={"format": "zip"}, headers=forker)
        assert junk.status_code == 400 and junk.json()["error"]["type"] == "InvalidExport"
        anonymous = await http.post("/agents/import", params={"name": landing}, json=bundle)
        assert anonymous.status_code == 401
        imported = await http.post("/agents/import", params={"name": landing}, json=bundle,
                                   headers=forker)  # fmt: skip
        assert imported.status_code == 200, imported.text
        assert (imported.json()["kind"], imported.json()["versions"]) == ("imported", 4)
    copy = perennial.agent(NOTES, target)
    assert (await copy.state_view()).state == {"notes": [], "memory": {"color": "blue"}}
    landed = await perennial.agent(NOTES, landing).state_view()
    assert (landed.version, landed.state["notes"]) == (3, ["a", "b"])


# --------------------------------------------------------------------------- migrations


@asynccontextmanager
async def worker_for(
    perennial: Perennial, settings: Settings, *agent_classes: type
) -> AsyncIterator[Worker]:
    """A worker running these versions of their agent types (a deploy of that code); none
    given: the registered ones."""
    if not agent_classes:
        async with build_worker(perennial.client, settings) as worker:
            yield worker
        return
    worker = Worker(
        perennial.client,
        task_queue=settings.task_queue,
        workflows=list(agent_classes),
        activities=build_activities(settings),
        workflow_runner=workflow_runner(settings),
        sticky_queue_schedule_to_start_timeout=settings.sticky_timeout,
    )
    async with worker:
        yield worker


async def _set_and_continue(perennial: Perennial, values: list[str]) -> str:
    """A deploy-1 agent set to `values`, which continued as new after the third: the state
    of the new run is in its input, written at state schema 0. Returns its name."""
    agent = perennial.agent(MIGRATING, unique("mig"))
    for value in values:
        await agent.ask(f"set {value}")
    await eventually(lambda: has_events(agent, "continued_as_new"))
    await eventually(lambda: _answers(agent))  # the new run is up
    return agent.name


async def _answers(agent: AgentHandle) -> bool:
    return (await agent.state_view()).version >= 3


async def test_a_state_is_migrated_across_continue_as_new_and_on_rollback(
    perennial: Perennial, settings: Settings
) -> None:
    async with worker_for(perennial, settings):  # deploy 1: schema 0
        name = await _set_and_continue(perennial, ["a", POISON, "b"])
    agent = perennial.agent(MIGRATING, name)
    async with worker_for(perennial, settings, MigratingV2):  # deploy 2: schema 1
        view = await agent.state_view()
        assert view.state == {"current": "b", "history": ["a", POISON, "b"], "count": 3}
        assert (view.version, view.versions_kept) == (3, [0, 1, 2, 3])
        assert (await agent.ask("set c")).reply == "c (set 4 times)"
        # An older kept version is migrated when a rollback restores it.
        restored = await agent.rollback(1)
        assert (restored.restored_version, restored.version) == (1, 5)
        assert (await agent.state_view()).state == {"current": "a", "history": ["a"], "count": 1}
        # One that cannot be migrated is refused typed, and the state stays as it is.
        with pytest.raises(StateMigrationFailed, match="poisoned"):
            await agent.rollback(2)
        view = await agent.state_view()
        assert (view.version, view.state["current"]) == (5, "a")
        # The current state was migrated when the run started; the others stay as they are.
        bundle = await agent.export()
        assert [(s.version, s.schema_version) for s in bundle.snapshots] == [
            (0, 0), (1, 0), (2, 0), (3, 1), (4, 1), (5, 1),
        ]  # fmt: skip
        assert bundle.state_schema_version == 1


async def test_a_failed_migration_fails_the_new_run_typed_and_a_fixed_deploy_recovers_it(
    perennial: Perennial, settings: Settings
) -> None:
    source = perennial.agent(MIGRATING, unique("mig"))
    async with worker_for(perennial, settings):  # deploy 1
        for value in ("a", POISON):
            await source.ask(f"set {value}")
        bundle = await source.export()
    # Imported where deploy 2 runs: this process knows deploy 1 only, so the agent checks it.
    elsewhere = settings.model_copy(update={"task_queue": f"{settings.task_queue}-2"})
    client = Perennial(perennial.client, elsewhere)
    agent = await client.import_agent(bundle, name=unique("imp"))
    handle = perennial.client.get_workflow_handle(agent.id)
    async with worker_for(client, elsewhere, MigratingV2):
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "StateMigrationFailed"
    assert "poisoned" in cause.message
    with pytest.raises(AgentStopped, match="StateMigrationFailed"):
        await agent.ask("set x")  # nothing is started from empty in its place
    async with worker_for(client, elsewhere, MigratingV3):  # the fixed deploy
        await agent.recover()  # the run is redone from its start, by the fixed code
        view = await agent.state_view()
        assert view.state == {"current": "cured", "history": ["a", POISON], "count": 2}
        assert (await agent.events()).events[0].kind == "imported"


async def test_a_failed_migration_of_a_running_agent_waits_for_a_fixed_deploy(
    perennial: Perennial, settings: Settings
) -> None:
    async with worker_for(perennial, settings):  # deploy 1 runs the agent past its start
        name = await _set_and_continue(perennial, ["a", "b", POISON])
    agent = perennial.agent(MIGRATING, name)
    handle = perennial.client.get_workflow_handle(agent.id)
    async with worker_for(perennial, settings, MigratingV2):
        await agent.send("set z", id="z")  # deploy 2 replays the run: it cannot migrate
        await eventually(lambda: _task_failed_with(perennial, agent.id, "StateMigrationFailed"))
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
    async with worker_for(perennial, settings, MigratingV3):  # the fixed deploy resumes it
        # The server retries a failed workflow task after a pause (10 s on the dev server).
        await eventually(lambda: _task_failed_with(perennial, agent.id, None), timeout=30)
        view = await agent.state_view()
    assert view.state == {"current": "z", "history": ["a", "b", POISON, "z"], "count": 4}


async def _task_failed_with(perennial: Perennial, workflow_id: str, kind: str | None) -> bool:
    """The last workflow task of the agent failed with `kind` (None: the last one completed,
    after one that failed)."""
    handle = perennial.client.get_workflow_handle(workflow_id)
    tasks = [
        e
        async for e in handle.fetch_history_events()
        if e.event_type in (EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED, TASK_COMPLETED)
    ]
    if kind is None:
        return tasks[-1].event_type == TASK_COMPLETED and any(
            e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED for e in tasks
        )
    last = tasks[-1]
    failure = last.workflow_task_failed_event_attributes.failure
    return last.event_type != TASK_COMPLETED and failure.application_failure_info.type == kind


def test_bad_migration_declarations_are_refused_when_the_type_is_defined() -> None:
    from perennial.workflows.registry import agent_type

    with pytest.raises(ValueError, match="step 1"):

        @agent_type("test_fork_bad", registered=False)
        class Skips(MigratingV2):
            state_migrations = {1: dict}

    with pytest.raises(TypeError, match="int >= 0"):

        @agent_type("test_fork_bad", registered=False)
        class Negative(MigratingV2):
            state_schema_version = -1


# --------------------------------------------------------------------------- helpers


async def _cli(settings: Settings, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "perennial.client.cli", "--app", "tests.fork_agents",
        "--address", settings.address, "--task-queue", settings.task_queue, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()


def _error(stderr: str) -> dict[str, str]:
    line = [line for line in stderr.splitlines() if line.startswith("{")][-1]
    error: dict[str, str] = json.loads(line)["error"]
    return error
