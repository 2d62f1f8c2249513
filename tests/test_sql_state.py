"""The SQL database per agent (`self.sql`, workflows/sql.py): deterministic, part of the
state (a failed turn, `rollback` and continue-as-new included), within its budgets, and
reachable read-only from outside (raw query `sql`, the Python client, the CLI, the gateway)
and by the model (`SQL_TOOLS`, with the schema in the system prompt).

The first half drives the part directly, like the agent's loop does (fast, no server): every
refused construct, the log that restores older versions, the budgets. The second half runs
agents on the dev server.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import httpx
import pytest
from temporalio.client import WorkflowQueryFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

import tests.sql_agents  # noqa: F401  (registers the test agent types before a worker is built)
from perennial.client import (
    AgentBusy,
    AgentNotFound,
    InvalidRequest,
    Perennial,
    Settings,
    SqlError,
    SqlNotDeterministic,
    SqlReadOnly,
    TurnFailed,
    VersionNotKept,
)
from perennial.client.gateway.server import GatewayServer
from perennial.testing.scripted_llm import ScriptedLLM, call, text, tool_calls
from perennial.workflows.errors import StateTooLarge
from perennial.workflows.messages import AgentStart, Snapshot, SqlBlob, SqlCarried
from perennial.workflows.registry import agent_types
from perennial.workflows.sql import SqlDatabase, SqlLimits, check_carried
from perennial.workflows.versions import Versions
from tests.conftest import eventually
from tests.sql_agents import _noise
from tests.support import has_events, unique
from tests.test_perennial_cli import perennial_cli

# --------------------------------------------------------------------------- the part alone


class _Ctx:
    def __init__(self, versions: Versions) -> None:
        self._versions = versions

    @property
    def version(self) -> int:
        return self._versions.version


class Driver:
    """The part driven like the agent's loop drives it: turns that commit a version or fail,
    rollbacks, continue-as-new."""

    def __init__(
        self,
        carried: SqlCarried | None = None,
        *,
        keep: int = 10,
        snapshots: list[Snapshot] | None = None,
        max_bytes: int = 1 << 20,
        max_log_bytes: int = 256 << 10,
        max_carried_bytes: int = 1 << 20,
        max_steps: int = 5_000_000,
    ) -> None:
        self.versions = Versions(keep=keep, max_bytes=1 << 30, snapshots=snapshots or [])
        if self.versions.empty:
            self.versions.commit("{}")
        limits = SqlLimits(max_bytes=max_bytes, max_log_bytes=max_log_bytes,
                           max_carried_bytes=max_carried_bytes, max_steps=max_steps)  # fmt: skip
        self.db = SqlDatabase(
            _Ctx(self.versions),  # type: ignore[arg-type]
            carried or SqlCarried(),
            versions=self.versions,
            limits=limits,
        )

    def turn(self, work: Any) -> Any:
        self.db.begin_turn()
        try:
            result = work(self.db)
            self.db.commit_turn()
        except BaseException:
            self.db.end_turn(failed=True)
            raise
        self.db.end_turn(failed=False)
        self.versions.commit("{}")
        return result

    def sql(self, query: str, *params: Any) -> Any:
        return self.turn(lambda db: db.execute(query, params))

    def rows(self, query: str, *params: Any) -> list[list[Any]]:
        return self.db.read(query, params, max_rows=10_000).rows

    def count(self) -> int:
        return int(self.rows("SELECT count(*) FROM t")[0][0])

    def rollback(self, to: int) -> int:
        self.versions.get(to)
        self.db.check_restorable(to)
        version = self.versions.commit("{}")
        self.db.restore(to, version=version)
        return version

    def next_run(self, **limits: Any) -> Driver:
        """Continue as new: what the next run starts from (checked like a start input)."""
        carried = self.db.carry()
        check_carried(carried, version=self.versions.version)
        return Driver(carried, snapshots=self.versions.snapshots(), **limits)


def _table(driver: Driver) -> Driver:
    driver.sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT UNIQUE, b BLOB, f REAL)")
    return driver


REFUSED = [
    "SELECT random()",
    "SELECT randomblob(4)",
    "SELECT abs(random()) % 6",
    "SELECT date('now')",
    "SELECT date('NOW', '+1 day')",
    "SELECT date()",
    "SELECT time()",
    "SELECT datetime('now')",
    "SELECT julianday()",
    "SELECT julianday('now')",
    "SELECT unixepoch()",
    "SELECT strftime('%s')",
    "SELECT strftime('%Y', 'now')",
    "SELECT datetime(0, 'localtime')",
    "SELECT date('2020-01-01', 'utc')",
    "SELECT current_date",
    "SELECT current_time",
    "SELECT current_timestamp",
    "SELECT sqlite_version()",
    "SELECT sqlite_source_id()",
    "SELECT sqlite_compileoption_used('THREADSAFE')",
    "SELECT changes()",
    "SELECT total_changes()",
    "SELECT last_insert_rowid()",
    "SELECT load_extension('libevil')",
    "ATTACH DATABASE ':memory:' AS other",
    "ATTACH DATABASE '/tmp/perennial-sql-attach.db' AS other",
    "DETACH DATABASE main",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT mine",
    "RELEASE mine",
    "SAVEPOINT perennial_turn",
    "ROLLBACK TO perennial_turn",
    "PRAGMA query_only=1",
    "PRAGMA foreign_keys=OFF",
    "PRAGMA journal_mode=WAL",
    "PRAGMA temp_store_directory='/tmp'",
    "PRAGMA writable_schema=ON",
    "PRAGMA compile_options",
    "CREATE TEMP TABLE scratch(a)",
    "CREATE TEMP VIEW scratch AS SELECT 1",
]


@pytest.mark.parametrize("query", REFUSED)
def test_what_would_not_replay_is_refused_in_a_turn_and_in_a_read(query: str) -> None:
    driver = _table(Driver())
    with pytest.raises(SqlNotDeterministic):
        driver.sql(query)
    with pytest.raises((SqlNotDeterministic, SqlReadOnly)):
        driver.db.read(query, (), max_rows=10)
    assert driver.versions.version == 1  # the turn failed: no version


def test_clocks_hidden_in_parameters_defaults_triggers_and_views_are_refused() -> None:
    driver = _table(Driver())
    with pytest.raises(SqlNotDeterministic, match="'now'"):
        driver.sql("SELECT date(?)", "now")
    with pytest.raises(SqlNotDeterministic, match="'now'"):
        driver.sql("SELECT datetime(?, '+1 hour')", " now ")
    driver.sql("CREATE TABLE stamped(a, at DEFAULT CURRENT_TIMESTAMP)")
    with pytest.raises(SqlNotDeterministic, match="current_timestamp"):
        driver.sql("INSERT INTO stamped(a) VALUES (1)")
    driver.sql("CREATE TABLE lucky(a, n DEFAULT (random()))")
    with pytest.raises(SqlNotDeterministic, match="random"):
        driver.sql("INSERT INTO lucky(a) VALUES (1)")
    driver.sql("CREATE TABLE log(a)")
    driver.sql(
        "CREATE TRIGGER noisy AFTER INSERT ON t BEGIN INSERT INTO log VALUES (random()); END"
    )
    with pytest.raises(SqlNotDeterministic, match="random"):
        driver.sql("INSERT INTO t(v) VALUES ('x')")
    driver.sql("CREATE VIEW today AS SELECT date('now') AS d")
    with pytest.raises(SqlNotDeterministic, match="'now'"):
        driver.rows("SELECT d FROM today")
    assert driver.rows("SELECT count(*) FROM t") == [[0]]
    with pytest.raises(SqlError):
        driver.sql("CREATE TABLE g(a, b AS (random()))")


def test_deterministic_date_functions_and_read_only_pragmas_work() -> None:
    driver = _table(Driver())
    found = driver.sql(
        "SELECT date(?), datetime('2024-02-28 10:00', '+1 day'), strftime('%Y', ?), "
        "julianday('2000-01-01'), unixepoch('1970-01-02')",
        "2024-03-01T12:00:00",
        "2024-03-01",
    )
    assert found.rows == [("2024-03-01", "2024-02-29 10:00:00", "2024", 2451544.5, 86400)]
    driver.sql("PRAGMA user_version = 7")
    assert driver.rows("PRAGMA user_version") == [[7]]
    assert [row[1] for row in driver.rows("PRAGMA table_info(t)")] == ["id", "v", "b", "f"]
    assert driver.rows("SELECT name FROM pragma_table_info('t') WHERE pk") == [["id"]]
    assert driver.rows("PRAGMA foreign_keys") == [[1]]
    with pytest.raises(SqlReadOnly):
        driver.db.read("PRAGMA user_version = 8", (), max_rows=1)
    # Stays deterministic through a continue-as-new (functions are set up again).
    assert driver.next_run().rows("SELECT date(?, '+1 day')", "2024-12-31") == [["2025-01-01"]]


def test_bad_statements_and_parameters_are_typed_errors_that_change_nothing() -> None:
    driver = _table(Driver(max_steps=100_000))
    driver.sql("INSERT INTO t(v) VALUES ('a')")
    cases: list[tuple[str, tuple[Any, ...], str]] = [
        ("SELEKT 1", (), "syntax error"),
        ("SELECT * FROM missing", (), "no such table"),
        ("INSERT INTO t(v) VALUES ('a')", (), "UNIQUE"),
        ("SELECT 1; SELECT 2", (), "one statement"),
        ("SELECT ?", (object(),), "parameter 1 is a object"),
        ("SELECT ?", (2**64,), "64 bits"),
        ("SELECT ?", ("\ud800",), "not valid text"),
        ("SELECT ?, ?", (1,), "bindings"),
        ("   ", (), "empty"),
        ("WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) SELECT max(x) FROM r",
         (), "max_sql_steps"),
        ("SELECT length(zeroblob(2000000000))", (), "longer than"),
    ]  # fmt: skip
    for query, params, message in cases:
        with pytest.raises(SqlError, match=message):
            driver.sql(query, *params)
    assert driver.rows("SELECT v FROM t") == [["a"]]
    assert driver.versions.version == 2
    with pytest.raises(SqlError, match="inside a turn"):
        driver.db.execute("SELECT 1", ())


def test_a_statement_past_max_sql_bytes_changes_nothing() -> None:
    driver = _table(Driver(max_bytes=64 * 1024))
    with pytest.raises(StateTooLarge, match="max_sql_bytes"):
        driver.sql(
            "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r WHERE x < 100) "
            "INSERT INTO t(v) SELECT hex(zeroblob(1000)) || x FROM r"
        )
    assert driver.count() == 0
    driver.sql("INSERT INTO t(v) VALUES ('still room')")
    assert driver.db.size_bytes <= 64 * 1024


def _grows(db: SqlDatabase) -> None:
    for n in range(100):  # one row at a time, until the database is full
        db.execute("INSERT INTO t(v) VALUES (?)", (_noise(n, 1000),))


def _runs_long(db: SqlDatabase) -> None:
    db.execute(
        "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r WHERE x < 100000) "
        "INSERT INTO t(v) SELECT x FROM r",
        (),
    )


@pytest.mark.parametrize(
    ("limits", "fails"), [({"max_bytes": 64 * 1024}, _grows), ({"max_steps": 200_000}, _runs_long)]
)
def test_a_turn_whose_changes_sqlite_rolled_back_can_only_fail(
    limits: dict[str, int], fails: Any
) -> None:
    # Full (SQLITE_FULL) or interrupted (the step limit), SQLite may roll back the whole
    # transaction: the turn may catch the error, but it cannot commit.
    driver = _table(Driver(**limits))
    driver.sql("INSERT INTO t(v) VALUES ('committed')")

    def keeps_going(db: SqlDatabase) -> None:
        db.execute("INSERT INTO t(v) VALUES ('earlier in the turn')", ())
        with pytest.raises((StateTooLarge, SqlError)):
            fails(db)
        assert db.read("SELECT count(*) FROM t", (), max_rows=1).rows == [[1]]
        with pytest.raises((StateTooLarge, SqlError), match="rolled back"):
            db.execute("INSERT INTO t(v) VALUES ('later')", ())

    with pytest.raises((StateTooLarge, SqlError), match="rolled back"):
        driver.turn(keeps_going)
    assert driver.rows("SELECT v FROM t") == [["committed"]]
    driver.sql("INSERT INTO t(v) VALUES ('next turn')")
    assert driver.next_run().count() == 2


def test_a_statement_that_sqlite_alone_rolled_back_lets_the_turn_go_on() -> None:
    driver = _table(Driver(max_bytes=64 * 1024))

    def goes_on(db: SqlDatabase) -> None:
        db.execute("INSERT INTO t(v) VALUES ('earlier in the turn')", ())
        with pytest.raises(StateTooLarge):  # many rows in one statement: only it is undone
            db.execute(
                "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r WHERE x < 100) "
                "INSERT INTO t(v) SELECT hex(zeroblob(1000)) || x FROM r",
                (),
            )
        db.execute("INSERT INTO t(v) VALUES ('later')", ())

    driver.turn(goes_on)
    assert driver.rows("SELECT v FROM t ORDER BY id") == [["earlier in the turn"], ["later"]]
    assert driver.next_run().count() == 2


def test_results_values_and_blobs() -> None:
    driver = _table(Driver())
    added = driver.sql("INSERT INTO t(v, b, f) VALUES (?, ?, ?)", "x", b"\x00\xff", float("inf"))
    assert (added.rowcount, added.lastrowid, added.columns, added.rows) == (1, 1, (), [])
    changed = driver.sql("UPDATE t SET f = 2.5")
    assert (changed.rowcount, changed.lastrowid) == (1, None)
    picked = driver.sql("SELECT v, b, f FROM t")
    assert picked.columns == ("v", "b", "f") and picked.rows == [("x", b"\x00\xff", 2.5)]
    assert picked.scalar() == "x" and (picked.rowcount, picked.lastrowid) == (0, None)
    returned = driver.sql("INSERT INTO t(v) VALUES ('y') RETURNING id, v")
    assert returned.rows == [(2, "y")] and returned.lastrowid == 2
    wire = driver.db.read("SELECT b FROM t WHERE id = 1", (), max_rows=5)
    assert wire.rows == [[SqlBlob.of(b"\x00\xff")]]
    assert driver.db.read("SELECT id FROM t", (), max_rows=1).truncated


def test_failed_turns_or_fail_and_failed_tool_calls_are_undone() -> None:
    driver = _table(Driver())
    driver.sql("INSERT INTO t(v) VALUES ('a')")

    def fails(db: SqlDatabase) -> None:
        db.execute("INSERT INTO t(v) VALUES ('b')", ())
        db.execute("DROP TABLE t", ())
        raise ValueError("boom")

    with pytest.raises(ValueError):
        driver.turn(fails)
    assert driver.rows("SELECT v FROM t") == [["a"]]

    def partial(db: SqlDatabase) -> None:  # OR FAIL keeps the rows before the conflict
        with pytest.raises(SqlError, match="UNIQUE"):
            db.execute("INSERT OR FAIL INTO t(v) VALUES ('c'), ('d'), ('a'), ('e')", ())
        db.execute("INSERT INTO t(v) VALUES ('kept')", ())
        try:
            with db.undo_on_error():  # a failed tool call
                db.execute("INSERT INTO t(v) VALUES ('undone')", ())
                raise KeyError("tool failed")
        except KeyError:
            pass
        with db.undo_on_error():
            db.execute("INSERT INTO t(v) VALUES ('tool')", ())

    driver.turn(partial)
    expected = [["a"], ["c"], ["d"], ["kept"], ["tool"]]
    assert driver.rows("SELECT v FROM t ORDER BY id") == expected
    # The log replays the partial statement exactly (a rebuilt database is the same).
    assert driver.next_run().rows("SELECT v FROM t ORDER BY id") == expected


def test_deferred_foreign_keys_fail_the_turn_at_commit() -> None:
    driver = Driver()
    driver.sql("CREATE TABLE p(id INTEGER PRIMARY KEY)")
    driver.sql("CREATE TABLE c(pid REFERENCES p(id) DEFERRABLE INITIALLY DEFERRED)")
    with pytest.raises(SqlError, match="cannot be committed"):
        driver.sql("INSERT INTO c VALUES (9)")
    assert driver.rows("SELECT count(*) FROM c") == [[0]]
    driver.sql("CREATE TABLE c2(pid REFERENCES p(id))")
    with pytest.raises(SqlError, match="FOREIGN KEY"):  # immediate ones fail at once
        driver.sql("INSERT INTO c2 VALUES (9)")


def test_every_kept_version_is_restored_by_rollback_and_across_continue_as_new() -> None:
    driver = _table(Driver(keep=6))
    counts = {driver.versions.version: 0}
    for n in range(8):
        driver.sql("INSERT INTO t(v, b) VALUES (?, ?)", f"row {n}", bytes([n]) * 3)
        counts[driver.versions.version] = driver.count()
    driver.turn(lambda db: db.execute("SELECT count(*) FROM t", ()))  # a version, no change
    counts[driver.versions.version] = driver.count()
    kept = driver.versions.kept()
    assert kept == list(range(5, 11))
    back = driver.rollback(5)
    assert driver.count() == counts[5]
    counts[back] = counts[5]
    driver.sql("DELETE FROM t WHERE id = 1")
    counts[driver.versions.version] = driver.count()
    driver.rollback(8)  # forward again, past the rollback
    counts[driver.versions.version] = counts[8]
    assert driver.count() == counts[8]
    for run in range(2):  # continue as new, twice: every kept version still restores
        driver = driver.next_run(keep=6)
        for version in driver.versions.kept():
            fork = driver.db.carried_at(version)
            check_carried(fork, version=version)
            alone = Driver(fork, snapshots=[driver.versions.get(version)])
            assert alone.count() == counts[version], (run, version)
        assert driver.count() == counts[driver.versions.version]
        blobs = driver.rows("SELECT b FROM t WHERE id = 2")
        assert blobs == [[SqlBlob.of(b"\x01" * 3)]]
    with pytest.raises(VersionNotKept):
        driver.db.carried_at(1)


def test_a_turn_that_does_not_touch_the_database_costs_nothing() -> None:
    driver = Driver()
    carried = driver.db.carry()
    assert carried == SqlCarried() and AgentStart(sql=carried).wire() == {}
    driver.turn(lambda db: None)
    assert driver.db.size_bytes == 0  # never opened
    _table(driver).sql("INSERT INTO t(v) VALUES ('a')")
    again = driver.next_run()
    again.turn(lambda db: None)
    assert again.db.carry() is again.db.carry()  # carried on as it came: no work


def test_the_log_budget_drops_the_oldest_versions_state_and_database_together() -> None:
    driver = _table(Driver(keep=10, max_log_bytes=4096))
    for n in range(6):
        driver.sql("INSERT INTO t(v) VALUES (?)", f"{n}" + "x" * 1000)
    driver.sql("SELECT 1")  # the next touch keeps the log within its budget
    kept = driver.versions.kept()
    assert kept[0] > 1 and kept[-1] == driver.versions.version
    with pytest.raises(VersionNotKept):
        driver.db.check_restorable(1)
    for version in kept:
        driver.db.carried_at(version)  # each kept version still restores

    def bulk(db: SqlDatabase) -> None:  # one turn past the budget: only it stays
        for n in range(10):
            db.execute("INSERT INTO t(v) VALUES (?)", (f"bulk {n}" + "y" * 600,))

    driver.turn(bulk)
    driver.sql("SELECT 1")
    assert driver.versions.kept() == [driver.versions.version - 1, driver.versions.version]
    assert driver.count() == 16


def test_the_carried_budget_keeps_only_the_current_database() -> None:
    driver = _table(Driver(keep=10, max_carried_bytes=3000))
    for n in range(5):
        driver.sql("INSERT INTO t(v) VALUES (?)", _noise(n, 900))
    carried = driver.db.carry()
    assert carried.log is None and carried.base_version == driver.versions.version
    assert driver.versions.kept() == [driver.versions.version]
    assert Driver(carried, snapshots=driver.versions.snapshots()).count() == 5


def test_reads_refuse_writes_even_through_a_prepared_statement() -> None:
    driver = _table(Driver())
    write = "INSERT INTO t(v) VALUES ('w')"
    driver.sql(write)  # prepared and cached by the connection
    for query in (write, "DELETE FROM t", "CREATE TABLE x(a)", "DROP TABLE t"):
        with pytest.raises(SqlReadOnly):
            driver.db.read(query, (), max_rows=1)
    assert driver.count() == 1


def test_a_read_while_a_turn_holds_changes_is_busy() -> None:
    driver = _table(Driver())

    def mid_turn(db: SqlDatabase) -> None:
        db.execute("INSERT INTO t(v) VALUES ('uncommitted')", ())
        with pytest.raises(AgentBusy):
            db.read("SELECT count(*) FROM t", (), max_rows=1)
        assert db.read("SELECT count(*) FROM t", (), max_rows=1, in_turn=True).rows == [[1]]

    driver.turn(mid_turn)
    assert driver.count() == 1


def test_bad_carried_databases_are_refused_at_start() -> None:
    good = _table(Driver())
    good.sql("INSERT INTO t(v) VALUES ('a')")
    carried = good.db.carry()
    bad = [
        carried.model_copy(update={"base_version": 99}),
        SqlCarried(base=base64.b64encode(b"not zlib").decode()),
        SqlCarried(base=base64.b64encode(__import__("zlib").compress(b"not sqlite")).decode()),
        SqlCarried(log="!!!"),
    ]
    for sql in bad:
        with pytest.raises(ValueError):
            check_carried(sql, version=good.versions.version)


# --------------------------------------------------------------------------- agents


def _digest(rows: list[list[Any]]) -> str:
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


@pytest.mark.usefixtures("worker")
async def test_sql_in_turns_rolled_back_with_the_state_and_read_from_outside(
    perennial: Perennial,
) -> None:
    agent = perennial.agent("test_sql_ledger", unique())
    assert (await agent.ask("add first")).reply == "1 entries"
    assert (await agent.ask("add second")).version == 2
    with pytest.raises(TurnFailed) as failed:
        await agent.ask("fail third")
    assert failed.value.error_type == "ValueError"
    assert (await agent.state()).state.entries == 2  # type: ignore[union-attr]
    assert (await agent.sql("SELECT text FROM entries ORDER BY id")).rows == [["first"], ["second"]]

    with pytest.raises(TurnFailed) as failed:
        await agent.call("execute", {"query": "SELECT random()"})
    assert failed.value.error_type == "SqlNotDeterministic"
    with pytest.raises(TurnFailed) as failed:
        await agent.call("execute", {"query": "INSERT INTO nowhere VALUES (1)"})
    assert failed.value.error_type == "SqlError"
    done = await agent.call("execute", {"query": "INSERT INTO entries(text) VALUES (?)",
                                        "params": ["third"]})  # fmt: skip
    assert done.result == {"columns": [], "rows": [], "rowcount": 1, "lastrowid": 3}

    # rollback restores the database with the state, back and forth
    restored = await agent.rollback(1)
    assert (await agent.sql("SELECT count(*) FROM entries")).rows == [[1]]
    assert (await agent.state()).state.entries == 1  # type: ignore[union-attr]
    await agent.rollback(restored.version - 1)
    assert (await agent.sql("SELECT count(*) FROM entries")).rows == [[3]]

    # the wire query, raw: {"query", "params", "max_rows"} -> {"columns", "rows", "truncated"}
    handle = perennial.client.get_workflow_handle(agent.id)
    raw = await handle.query("sql", {"query": "SELECT id, text, x'00ff' AS b FROM entries "
                                     "WHERE id > ? ORDER BY id", "params": [1], "max_rows": 1})  # fmt: skip
    assert raw == {"columns": ["id", "text", "b"], "rows": [[2, "second", {"blob": "AP8="}]],
                   "truncated": True}  # fmt: skip
    for request in ({"query": "DELETE FROM entries"}, {"query": "SELECT 1", "params": [[1]]},
                    {"query": ""}, {"query": "SELECT 1", "max_rows": 0}, {"nope": 1}):  # fmt: skip
        with pytest.raises(WorkflowQueryFailedError):
            await handle.query("sql", request)

    # the Python client: typed errors
    assert (await agent.sql("SELECT ? || ?, ?", "a", "b", b"\x01")).rows == [
        ["ab", SqlBlob.of(b"\x01")]
    ]
    with pytest.raises(SqlReadOnly):
        await agent.sql("UPDATE entries SET text = 'x'")
    with pytest.raises(SqlNotDeterministic):
        await agent.sql("SELECT current_timestamp")
    with pytest.raises(SqlError, match="no such table"):
        await agent.sql("SELECT * FROM nowhere")
    with pytest.raises(InvalidRequest):
        await agent.sql("SELECT 1", max_rows=0)
    with pytest.raises(AgentNotFound):
        await perennial.agent("test_sql_ledger", unique("never")).sql("SELECT 1")
    assert (await agent.sql("SELECT count(*) FROM entries")).rows == [[3]]

    # the history replays: the database is rebuilt by the same statements
    history = await handle.fetch_history()
    await Replayer(
        workflows=list(agent_types().values()), data_converter=pydantic_data_converter
    ).replay_workflow(history)


@pytest.mark.usefixtures("worker")
async def test_cli_and_gateway_read_the_database(
    perennial: Perennial, settings: Settings, gateway: GatewayServer
) -> None:
    name = unique()
    agent = perennial.agent("test_sql_ledger", name)
    for word in ("apple", "pear", "plum"):
        await agent.ask(f"add {word}")

    ref = f"test_sql_ledger/{name}"
    query = "SELECT id, text FROM entries WHERE id >= ? ORDER BY id"
    code, out, _ = await perennial_cli(settings, "sql", ref, query, "--param", "2")
    assert code == 0 and "pear" in out and "apple" not in out and "(2 rows)" in out
    code, out, _ = await perennial_cli(settings, "--json", "sql", ref, query, "--param", "1",
                                       "--max-rows", "1")  # fmt: skip
    assert code == 0
    assert json.loads(out) == {"columns": ["id", "text"], "rows": [[1, "apple"]], "truncated": True}
    code, _, err = await perennial_cli(settings, "--json", "sql", ref, "DELETE FROM entries")
    assert code == 2 and json.loads(err.splitlines()[-1])["error"]["type"] == "SqlReadOnly"
    code, _, err = await perennial_cli(settings, "sql", ref, "SELECT random()")
    assert code == 2 and "SqlNotDeterministic" in err

    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
        url = f"/agents/test_sql_ledger/{name}/sql"
        found = await http.post(url, json={"query": query, "params": [3]})
        assert found.status_code == 200
        assert found.json() == {
            "columns": ["id", "text"],
            "rows": [[3, "plum"]],
            "truncated": False,
        }
        refused = await http.post(url, json={"query": "DROP TABLE entries"})
        assert refused.status_code == 400 and refused.json()["error"]["type"] == "SqlReadOnly"
        bad = await http.post(url, json={"query": "SELECT 1", "extra": True})
        assert bad.status_code == 400
        missing = await http.post(
            f"/agents/test_sql_ledger/{unique()}/sql", json={"query": "SELECT 1"}
        )
        assert missing.status_code == 404
    assert (await agent.sql("SELECT count(*) FROM entries")).rows == [[3]]


@pytest.mark.usefixtures("worker")
async def test_a_turn_past_max_sql_bytes_fails_and_nothing_is_lost(perennial: Perennial) -> None:
    agent = perennial.agent("test_sql_ledger", unique())
    filled = await agent.call("fill", {"rows": 150, "size": 1000})
    assert filled.result == 150
    before = await agent.sql("SELECT id, text FROM entries ORDER BY id", max_rows=1000)
    with pytest.raises(TurnFailed) as failed:
        await agent.call("fill", {"rows": 150, "size": 1000, "first": 150})
    assert failed.value.error_type == "StateTooLarge"
    assert "max_sql_bytes" in str(failed.value)
    after = await agent.sql("SELECT id, text FROM entries ORDER BY id", max_rows=1000)
    assert _digest(after.rows) == _digest(before.rows)
    assert (await agent.state()).state.entries == 150  # type: ignore[union-attr]
    assert (await agent.ask("add one more")).reply == "151 entries"


@pytest.mark.usefixtures("worker")
async def test_continue_as_new_carries_a_database_near_its_budget(perennial: Perennial) -> None:
    agent = perennial.agent("test_sql_switching", unique())
    counts: dict[int, int] = {}
    for n in range(4):  # ~420 KB of incompressible rows, in a 512 KB budget
        reply = await agent.call("fill", {"rows": 100, "size": 1000, "first": 100 * n})
        counts[reply.version] = reply.result
    with pytest.raises(TurnFailed) as failed:  # the budget holds
        await agent.call("fill", {"rows": 150, "size": 1000, "first": 400})
    assert failed.value.error_type == "StateTooLarge"
    before = await agent.sql("SELECT id, text FROM entries ORDER BY id", max_rows=1000)
    n = 3  # past max_history_events: the agent switches once messages pause
    for word in range(1, n + 1):
        reply = await agent.ask(f"add word {word}")
        counts[reply.version] = int(reply.reply.split()[0])
    await eventually(lambda: has_events(agent, "continued_as_new"))
    after = await agent.sql("SELECT id, text FROM entries WHERE id <= 400 ORDER BY id",
                            max_rows=1000)  # fmt: skip
    assert _digest(after.rows) == _digest(before.rows)
    reply = await agent.ask("add after the switch")
    assert int(reply.reply.split()[0]) == 401 + n
    counts[reply.version] = 401 + n
    kept = (await agent.state_view()).versions_kept
    oldest = kept[0]
    await agent.rollback(oldest)
    expected = max((c for v, c in counts.items() if v <= oldest), default=0)
    assert (await agent.sql("SELECT count(*) FROM entries")).rows == [[expected]]
    # The new run, which started from the carried database, replays.
    history = await perennial.client.get_workflow_handle(agent.id).fetch_history()
    await Replayer(
        workflows=list(agent_types().values()), data_converter=pydantic_data_converter
    ).replay_workflow(history)


@pytest.mark.agents(llm=True)
@pytest.mark.usefixtures("worker")
async def test_the_model_uses_the_sql_tools_and_sees_the_schema(
    perennial: Perennial, scripted_llm: ScriptedLLM
) -> None:
    scripted_llm.script(
        tool_calls(
            call(
                "sql_execute",
                id="c1",
                statement="CREATE TABLE trips(id INTEGER PRIMARY KEY, city TEXT)",
            )
        ),  # fmt: skip
        tool_calls(
            call(
                "sql_execute",
                id="c2",
                statement="INSERT INTO trips(city) VALUES (?)",
                params=["Paris"],
            ),
            call("sql_execute", id="c3", statement="INSERT INTO trips(city) VALUES (random())"),
            call("sql_query", id="c4", query="DELETE FROM trips"),
        ),  # fmt: skip
        tool_calls(
            call("sql_query", id="c5", query="SELECT city FROM trips WHERE id = ?", params=[1])
        ),  # fmt: skip
        text("Paris is planned."),
        text("You have one trip."),
    )
    agent = perennial.agent("test_sql_analyst", unique())
    assert (await agent.ask("Plan Paris")).reply == "Paris is planned."
    first, second, third, fourth = scripted_llm.completions
    assert "It is empty" in first.messages[0]["content"]
    assert json.loads(second.tool_results()["c1"]) == {"changed": 0, "last_row_id": None}
    results = third.tool_results()
    assert json.loads(results["c2"]) == {"changed": 1, "last_row_id": 1}
    assert results["c3"].startswith("error:") and "random()" in results["c3"]
    assert results["c4"].startswith("error:") and "read-only" in results["c4"]
    assert json.loads(fourth.tool_results()["c5"]) == {"columns": ["city"], "rows": [["Paris"]],
                                                      "truncated": False}  # fmt: skip
    assert "CREATE TABLE trips(id INTEGER PRIMARY KEY, city TEXT);" in fourth.messages[0]["content"]

    assert (await agent.ask("How many trips?")).reply == "You have one trip."
    assert "CREATE TABLE trips" in scripted_llm.completions[-1].messages[0]["content"]
    assert (await agent.sql("SELECT city FROM trips")).rows == [["Paris"]]
