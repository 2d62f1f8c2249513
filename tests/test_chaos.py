"""Chaos with a ledger, shortened (`python -m bench.chaos` is the full run): 20 agents on two
worker processes under a mixed load for ~40 s (messages, asks, alarms, child tasks, LLM turns
and approvals), one worker SIGKILLed and the dev server restarted on the same SQLite file and
port; then the ledger must find nothing lost, nothing applied twice, no workflow task failure
left and no agent stuck. The dev server is this test's own, since it is restarted.

The ledger's checks are tested first on records with known faults, so a passing chaos run
means the faults did not happen, not that the ledger cannot see them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio

from bench.chaos import (
    ChaosConfig,
    DecisionRecord,
    OneShot,
    Rates,
    Sent,
    Violation,
    check_alarms,
    check_approvals,
    check_children,
    check_messages,
    print_report,
    run_chaos,
)
from bench.chaos_agents import PAY_TOOL, AlarmSeen, ChaosLLMState, LedgerState
from bench.harness import dev_server
from perennial.client import Settings
from perennial.client.server import DevServer
from perennial.testing.scripted_llm import ToolHit

# --------------------------------------------------------------------------- the ledger's eyes

T0 = datetime(2026, 1, 1, tzinfo=UTC)
STEP = timedelta(seconds=2)


def _kinds(violations: list[Violation]) -> list[str]:
    return sorted(v.detail for v in violations)


def test_the_ledger_sees_lost_doubled_and_phantom_messages() -> None:
    states = {"a": LedgerState(applied=["m1", "m2", "m2", "m9", "u1", "f1"])}
    sent = {"a": Sent(accepted={"m1", "m2", "m3"}, uncertain={"u1", "u2"}, failed={"f1"})}
    violations: list[Violation] = []
    figures = check_messages(states, sent, violations)
    assert _kinds(violations) == [
        "accepted m3 never applied (lost)",
        "f1: its turn failed, yet applied",
        "m2 applied 2 times",
        "m9 applied but never sent",
    ]
    assert figures["accepted_applied_once"] == 1 and figures["lost"] == 1
    assert figures["uncertain_applied"] == 1


def _tick(first: datetime, missed: int = 0) -> AlarmSeen:
    return AlarmSeen(
        schedule_id="tick", first_due_at=first, due_at=first + missed * STEP, missed=missed
    )


def test_the_ledger_sees_alarm_gaps_repeats_and_wrong_one_shots() -> None:
    good = [_tick(T0), _tick(T0 + STEP, missed=2), _tick(T0 + 4 * STEP)]
    states = {
        "good": LedgerState(alarms=good),
        "gap": LedgerState(alarms=[_tick(T0), _tick(T0 + 2 * STEP)]),
        "again": LedgerState(alarms=[_tick(T0), _tick(T0 + STEP), _tick(T0 + STEP)]),
        "shots": LedgerState(
            alarms=[
                AlarmSeen(schedule_id="o1", due_at=T0, first_due_at=T0, missed=0),
                AlarmSeen(schedule_id="o2", due_at=T0, first_due_at=T0, missed=0),
                AlarmSeen(schedule_id="o2", due_at=T0, first_due_at=T0, missed=0),
                AlarmSeen(schedule_id="o9", due_at=T0, first_due_at=T0, missed=0),
            ]
        ),
    }
    ticks = {"good": T0, "gap": T0, "again": T0}
    shots = [OneShot("shots", "o1", T0), OneShot("shots", "o2", T0), OneShot("shots", "o3", T0)]
    violations: list[Violation] = []
    figures = check_alarms(states, ticks, shots, 2.0, T0 + 4 * STEP, violations)
    details = _kinds(violations)
    assert len(details) == 5, details
    assert any(d.startswith("a gap before") for d in details)
    assert any(d.startswith("a due time again at") for d in details)
    assert "one-shot o2 fired 2 times" in details and "one-shot o3 fired 0 times" in details
    assert "alarm o9 fired but nobody set it" in details
    assert figures["oneshots_fired_once"] == 1
    assert all(v.agent != "good" for v in violations)


def test_the_ledger_sees_children_reported_twice_or_never() -> None:
    states = {
        "p": LedgerState(
            spawned=["c/1", "c/2", "c/3", "c/3"],
            reports=["c/1 completed", "c/2 completed", "c/2 completed", "c/4 completed"],
        )
    }
    violations: list[Violation] = []
    check_children(states, violations)
    assert _kinds(violations) == [
        "c/2 reported 2 times",
        "c/3 reported 0 times",
        "c/3 started 2 times",
        "report from c/4, which it never started",
    ]


def test_the_ledger_sees_approvals_run_twice_rejected_runs_and_undecided_runs() -> None:
    def hit(ref: str, key: str, attempt: int) -> ToolHit:
        args = {"ref": ref, "call_id": key, "attempt": attempt}
        return ToolHit(name=PAY_TOOL, arguments=args, at=0.0)

    def record(approval: str, ref: str, approve: bool) -> DecisionRecord:
        return DecisionRecord(
            agent="m", approval_id=approval, ref=ref, approve=approve, certain=True, drained=False
        )

    decisions = {
        "a1": record("a1", "r1", True),  # ran once, retried once after a lost attempt: fine
        "a2": record("a2", "r2", True),  # ran under two keys: twice
        "a3": record("a3", "r3", False),  # rejected, yet ran
        "a4": record("a4", "r4", True),  # never applied by the agent, never ran
    }
    hits = [
        hit("r1", "k1", 1),
        hit("r1", "k1", 2),
        hit("r2", "k2", 1),
        hit("r2", "k2b", 1),
        hit("r3", "k3", 1),
        hit("r5", "k5", 1),
    ]
    states = {"m": ChaosLLMState(decisions=["a1", "a2", "a3", "a3"])}
    violations: list[Violation] = []
    figures = check_approvals(states, decisions, {}, hits, violations)
    details = _kinds(violations)
    assert len(details) == 6, details
    assert "decision a3 applied 2 times" in details and "decision a4 applied 0 times" in details
    assert any(d.startswith("approved r2 ran under 2 keys") for d in details)
    assert any(d.startswith("approved r4 ran under 0 keys") for d in details)
    assert any(d.startswith("rejected r3 ran") for d in details)
    assert any(d.startswith("r5 ran without a decision") for d in details)
    assert figures["approved_ran_once"] == 1 and figures["retried_attempts"] == 1


# --------------------------------------------------------------------------- the chaos run

SHORT = ChaosConfig(
    agents=20,
    workers=2,
    duration=40.0,
    rates=Rates(message=3.0, ask=1.5, child=0.4, oneshot=0.4, llm=0.5, approval=0.25),
    llm_share=0.2,
    parent_share=0.2,
    alarm_share=0.2,
    alarm_every=2.0,
    oneshot_after=(2.0, 8.0),
    # One kill at 12-16 s, the server restart at the first event past 20 s.
    kill_every=(12.0, 16.0),
    max_kills=1,
    restart_delay=(1.0, 3.0),
    sticky_timeout=1.0,
    decide_after=(1.0, 5.0),
    probes=4,
    probe_scan=16,
    history_sample=None,
    op_deadline=120.0,
    attempt_timeout=30.0,
    settle_timeout=120.0,
    final_ask_timeout=60.0,
    concurrency=8,
    seed=7,
)


@pytest_asyncio.fixture(loop_scope="session")
async def own_server() -> AsyncIterator[tuple[DevServer, Settings]]:
    """A dev server of this test's own: the chaos restarts it."""
    async with dev_server("perennial-chaos-test-", task_queue="chaos-test") as served:
        yield served


@pytest.mark.asyncio(loop_scope="session")
async def test_nothing_lost_or_applied_twice_under_chaos(
    own_server: tuple[DevServer, Settings], tmp_path: Path
) -> None:
    server, settings = own_server
    results = await run_chaos(SHORT, server, settings, tmp_path)
    print_report(results)  # shown when the test fails
    assert results["violations"] == []
    [kill] = results["kills"]
    assert kill["unanswered"] == 0
    restart = results["server_restart"]
    assert restart is not None and restart["unanswered"] == 0
    ops = results["ops"]
    for kind in ("message", "ask", "child", "oneshot", "llm", "approval", "decide"):
        assert ops[kind]["accepted"] > 0, (kind, ops[kind])
    ledger = results["ledger"]
    assert ledger["messages"]["accepted_applied_once"] == ledger["messages"]["accepted"]
    assert ledger["alarms"]["recurring_alarms_applied"] > 0
    assert ledger["children"]["reported_once_completed"] == ledger["children"]["spawned"] > 0
    assert ledger["approvals"]["decided"] > 0
    assert results["final_asks"]["answered"] == results["final_asks"]["asked"] == 20
    assert results["histories"]["last_task_completed"] == 20
    assert results["settle"]["converged"]
