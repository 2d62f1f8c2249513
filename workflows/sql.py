"""An SQL database per agent: SQLite, in memory, inside the workflow.

    @callable_method
    def add_item(self, name: str, qty: int) -> int:
        self.sql("INSERT INTO items(name, qty) VALUES (?, ?)", name, qty)
        return self.sql("SELECT count(*) FROM items").scalar()

`AgentWorkflow.sql` runs one statement in the current turn; the database is part of the
agent's state, like `self.state`:

* **Durable through history.** The live database is rebuilt by replay: a replayed turn runs
  its statements again, so no turn copies the database anywhere. A continue-as-new carries
  it (`SqlCarried`: the serialized file, zlib, base64), and the next run starts from it.
* **Deterministic.** What would not replay the same is refused with `SqlNotDeterministic`:
  clocks (`date('now')`, `current_timestamp`, a date function without a time value, the
  'localtime' and 'utc' modifiers), randomness (`random()`, `randomblob()`), the SQLite build
  (`sqlite_version()`), the connection's history (`changes()`, `last_insert_rowid()`), files
  (`ATTACH`, `VACUUM`, `load_extension`), transaction control (a turn is one transaction),
  temporary objects (not carried) and every PRAGMA but a read-only few. An authorizer
  refuses them when a statement is prepared; functions are also replaced by ones that refuse
  when run, which covers DEFAULT expressions and triggers.
* **Turns.** A turn's first statement opens a savepoint; a failed turn rolls back to it, a
  committed one releases it. A turn that does not touch the database pays nothing.
* **Versions.** Each committed version's write statements are kept in a log after a base
  image (the database at `base_version`), so every kept state version can be restored:
  `rollback` records a reset to the older version and the live database is rebuilt from the
  base at its next use. The base moves up (the oldest versions' statements applied to it)
  when the log grows, so the cost is proportional to the statements, not to the database.
  When the log outgrows `max_sql_log_bytes` (or the carried bytes `max_sql_carried_bytes`),
  the older versions are dropped, state and database together.
* **Budgets.** The database may not grow past `max_sql_bytes` (page_count * page_size): a
  statement that would is refused with `StateTooLarge` and changes nothing. A statement
  runs at most `max_sql_steps` SQLite steps (counted, so the limit replays the same).

Queries from outside (query `sql`, `SqlRequest` in, `SqlRows` out) are read-only: the
authorizer refuses writes and `PRAGMA query_only` stops what it cannot see. A query that
arrives while a turn has uncommitted changes gets `AgentBusy` (it would see them otherwise).
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from temporalio import workflow
from temporalio.exceptions import ApplicationError

from perennial.workflows.errors import (
    AgentBusy,
    PerennialError,
    SqlError,
    SqlNotDeterministic,
    SqlReadOnly,
    StateTooLarge,
    VersionNotKept,
)
from perennial.workflows.messages import SqlBlob, SqlCarried, SqlRows, SqlValue
from perennial.workflows.parts import AgentContext, Part
from perennial.workflows.versions import Versions

with workflow.unsafe.imports_passed_through():
    import sqlite3

__all__ = [
    "SqlDatabase",
    "SqlLimits",
    "SqlResult",
    "check_carried",
    "query_failure",
]

#: Pages are this size in every agent's database, whatever the SQLite build's default.
PAGE_SIZE = 4096
#: How often (in SQLite VM steps) the step counter runs.
_TICK = 1000
#: The first bytes of every SQLite database file.
_MAGIC = b"SQLite format 3\x00"
#: Retired log bytes (versions no longer kept) past which the base moves up, at least.
_RETIRE_MIN_BYTES = 64 * 1024
#: A reply to query `sql` stops adding rows past this many bytes of values.
_MAX_REPLY_BYTES = 1024 * 1024
#: Statement texts whose classification (writes or not) is remembered, at most.
_MAX_REMEMBERED = 2048

_ZLIB_LEVEL = 1  # 5 ms per MB; level 6 saves ~10% more for twice the time (bench/README.md)


# --------------------------------------------------------------------------- the guard

#: Functions refused wherever they appear, and why.
_CONNECTION = "it depends on the connection's history, which a rebuilt database does not share"
_BUILD = "it depends on the SQLite build of the worker"
_REFUSED_FUNCTIONS: dict[str, str] = {
    "random": "it returns other numbers when the agent is replayed",
    "randomblob": "it returns other bytes when the agent is replayed",
    "current_date": "it reads the clock; pass the time as a parameter",
    "current_time": "it reads the clock; pass the time as a parameter",
    "current_timestamp": "it reads the clock; pass the time as a parameter",
    "changes": f"{_CONNECTION}; use the result's rowcount",
    "total_changes": _CONNECTION,
    "last_insert_rowid": f"{_CONNECTION}; use the result's lastrowid",
    "sqlite_offset": "it depends on where rows lie in the file",
    "sqlite_version": _BUILD,
    "sqlite_source_id": _BUILD,
    "sqlite_compileoption_get": _BUILD,
    "sqlite_compileoption_used": _BUILD,
    "load_extension": "it loads code from files",
    "fts3_tokenizer": "it reaches into the SQLite library",
}
#: Date and time functions: refused when they would read the clock or the time zone.
_DATE_FUNCTIONS = ("date", "time", "datetime", "julianday", "strftime", "unixepoch", "timediff")
#: Read-only PRAGMAs allowed with an argument (a table or index name, a row limit).
_PRAGMA_ARGUMENT = frozenset(
    {"table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
     "foreign_key_list", "foreign_key_check", "integrity_check", "quick_check"}
)  # fmt: skip
#: Read-only PRAGMAs allowed without a value.
_PRAGMA_READ = _PRAGMA_ARGUMENT | {
    "page_count", "page_size", "freelist_count", "max_page_count", "data_version",
    "schema_version", "user_version", "application_id", "foreign_keys", "auto_vacuum",
    "encoding", "collation_list",
}  # fmt: skip
#: PRAGMAs that may be set: numbers in the database header, carried with it.
_PRAGMA_SETTABLE = frozenset({"user_version", "application_id"})

_S = sqlite3
#: Actions that change the schema (and so the database).
_SCHEMA_ACTIONS = frozenset(
    {_S.SQLITE_CREATE_INDEX, _S.SQLITE_CREATE_TABLE, _S.SQLITE_CREATE_TRIGGER,
     _S.SQLITE_CREATE_VIEW, _S.SQLITE_DROP_INDEX, _S.SQLITE_DROP_TABLE,
     _S.SQLITE_DROP_TRIGGER, _S.SQLITE_DROP_VIEW, _S.SQLITE_ALTER_TABLE, _S.SQLITE_REINDEX,
     _S.SQLITE_ANALYZE, _S.SQLITE_CREATE_VTABLE, _S.SQLITE_DROP_VTABLE}
)  # fmt: skip
_ROW_ACTIONS = frozenset({_S.SQLITE_INSERT, _S.SQLITE_UPDATE, _S.SQLITE_DELETE})
_TEMP_ACTIONS = frozenset(
    {_S.SQLITE_CREATE_TEMP_INDEX, _S.SQLITE_CREATE_TEMP_TABLE, _S.SQLITE_CREATE_TEMP_TRIGGER,
     _S.SQLITE_CREATE_TEMP_VIEW, _S.SQLITE_DROP_TEMP_INDEX, _S.SQLITE_DROP_TEMP_TABLE,
     _S.SQLITE_DROP_TEMP_TRIGGER, _S.SQLITE_DROP_TEMP_VIEW}
)  # fmt: skip
#: Schema tables: SQLite reports writes to them for DDL (which has its own actions) and
#: when it sets up table-valued PRAGMAs; neither is a row change.
_SCHEMA_TABLES = frozenset(
    {"sqlite_master", "sqlite_temp_master", "sqlite_schema", "sqlite_temp_schema"}
)


class _Guard:
    """The authorizer, the step counter and the refusing functions of one connection, and
    what they saw of the statement being run."""

    def __init__(self, *, max_steps: int | None) -> None:
        self.max_ticks = None if max_steps is None else max(1, max_steps // _TICK)
        #: Our own statements (savepoints, PRAGMAs) pass unchecked.
        self.internal = False
        self.read_only = False
        self._helper: sqlite3.Connection | None = None
        self.start(read_only=False)

    def start(self, *, read_only: bool) -> None:
        self.read_only = read_only
        self.prepared = False  # the authorizer ran: the statement was (re)prepared
        self.writes = False
        self.inserts = False  # an INSERT of its own (not a trigger's): lastrowid means something
        self.refusal: SqlError | None = None
        self.denied = False  # refused while prepared: SQLite keeps no prepared statement
        self.ticks = 0

    # The authorizer: called for each action while SQLite prepares a statement.
    def authorize(self, action: int, arg1: str | None, arg2: str | None, db: str | None,
                  source: str | None) -> int:  # fmt: skip
        if self.internal:
            return sqlite3.SQLITE_OK
        self.prepared = True
        if action == sqlite3.SQLITE_INSERT and source is None:
            self.inserts = (arg1 or "").lower() not in _SCHEMA_TABLES
        refusal = self._check(action, arg1, arg2)
        if refusal is not None:
            self.refusal, self.denied = refusal, True
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    def _check(self, action: int, arg1: str | None, arg2: str | None) -> SqlError | None:
        if action in _ROW_ACTIONS:
            if (arg1 or "").lower() in _SCHEMA_TABLES:
                return None
            return self._write()
        if action in _SCHEMA_ACTIONS:
            return self._write()
        if action == sqlite3.SQLITE_FUNCTION:
            why = _REFUSED_FUNCTIONS.get((arg2 or "").lower())
            return None if why is None else SqlNotDeterministic(f"{arg2}() is refused: {why}")
        if action == sqlite3.SQLITE_PRAGMA:
            return self._pragma((arg1 or "").lower(), arg2)
        if action in (sqlite3.SQLITE_TRANSACTION, sqlite3.SQLITE_SAVEPOINT):
            return SqlNotDeterministic(
                "transactions are the agent's: each turn is one (a failed turn is rolled back)"
            )
        if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
            return SqlNotDeterministic(
                "ATTACH, DETACH and VACUUM are refused: the database is one in-memory file "
                "(it shrinks by itself: auto_vacuum is on)"
            )
        if action in _TEMP_ACTIONS:
            return SqlNotDeterministic(
                "temporary tables, views, indexes and triggers are refused: they would not be "
                "carried over when the agent continues as new"
            )
        return None

    def _write(self) -> SqlError | None:
        self.writes = True
        if self.read_only:
            return SqlReadOnly("this is a read-only query: it may not change the database")
        return None

    def _pragma(self, name: str, value: str | None) -> SqlError | None:
        if value is not None and name in _PRAGMA_SETTABLE:
            return self._write()
        if name in _PRAGMA_ARGUMENT or (value is None and name in _PRAGMA_READ):
            return None
        allowed = ", ".join(sorted(_PRAGMA_READ))
        return SqlNotDeterministic(
            f"PRAGMA {name} is refused (read-only PRAGMAs: {allowed}; "
            "user_version and application_id may be set)"
        )

    # The step counter: a statement stops after max_steps VM steps (the same on replay).
    def tick(self) -> bool:
        self.ticks += 1
        return not self.internal and self.max_ticks is not None and self.ticks > self.max_ticks

    # The functions that replace SQLite's own (registered on every connection).
    def refusing(self, name: str) -> Callable[..., Any]:
        def refuse(*args: Any) -> Any:
            self.refusal = SqlNotDeterministic(f"{name}() is refused: {_REFUSED_FUNCTIONS[name]}")
            raise ValueError(name)

        return refuse

    def dating(self, name: str) -> Callable[..., Any]:
        def evaluate(*args: Any) -> Any:
            why = _reads_clock(name, args)
            if why is not None:
                self.refusal = SqlNotDeterministic(f"{name}() is refused: {why}")
                raise ValueError(name)
            return self._builtin(name, args)

        return evaluate

    def _builtin(self, name: str, args: tuple[Any, ...]) -> Any:
        """SQLite's own date function (shadowed on the agent's connections), evaluated on a
        plain connection of its own: pure computation, no data."""
        if self._helper is None:
            self._helper = sqlite3.connect(":memory:", isolation_level=None,
                                           check_same_thread=False)  # fmt: skip
        marks = ", ".join("?" * len(args))
        return self._helper.execute(f"SELECT {name}({marks})", args).fetchone()[0]


def _reads_clock(name: str, args: tuple[Any, ...]) -> str | None:
    """Why a date function call would read the clock or the time zone, if it would."""
    time_at = 1 if name == "strftime" else 0
    if len(args) <= time_at:
        return "without a time value it reads the clock; pass the time as a parameter"
    for arg in args:
        if isinstance(arg, str | bytes):
            word = arg.decode("utf-8", "replace") if isinstance(arg, bytes) else arg
            word = word.strip().lower()
            if word == "now":
                return "'now' reads the clock; pass the time as a parameter"
            if word in ("localtime", "utc"):
                return f"the {word!r} modifier depends on the worker's time zone"
    return None


#: The date functions this SQLite build has (unixepoch: 3.38, timediff: 3.43).
_AVAILABLE_DATE_FUNCTIONS = tuple(
    name
    for name in _DATE_FUNCTIONS
    if not (name == "unixepoch" and sqlite3.sqlite_version_info < (3, 38))
    and not (name == "timediff" and sqlite3.sqlite_version_info < (3, 43))
)


def _connect(image: bytes | None, guard: _Guard, *, max_value_bytes: int) -> sqlite3.Connection:
    """A connection to an in-memory database (a copy of `image`, or a new empty one) with the
    guard's functions and the settings every agent database has."""
    conn = sqlite3.connect(
        ":memory:", isolation_level=None, check_same_thread=False, cached_statements=256
    )
    try:
        if image is not None:
            conn.deserialize(image)
        else:
            conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
            conn.execute("PRAGMA auto_vacuum=FULL")  # deleted rows give their pages back
        conn.execute("PRAGMA foreign_keys=ON")
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, max_value_bytes)
        for name in _REFUSED_FUNCTIONS:
            conn.create_function(name, -1, guard.refusing(name))
        for name in _AVAILABLE_DATE_FUNCTIONS:
            conn.create_function(name, -1, guard.dating(name), deterministic=True)
    except sqlite3.Error as err:
        conn.close()
        raise SqlError(f"the carried database cannot be opened: {err}") from None
    return conn


#: The schema the model is shown: what was created, without SQLite's own tables and (from
#: 3.37, which lists them) the shadow tables of virtual tables.
_SCHEMA_QUERY = (
    "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%'"
    + (
        " AND name NOT IN (SELECT name FROM pragma_table_list WHERE type = 'shadow')"
        if sqlite3.sqlite_version_info >= (3, 37)
        else ""
    )
    + " ORDER BY rowid"
)

#: Statements the connection runs for itself, by exact text (see `_check_text`).
_INTERNAL = frozenset(
    {f"PRAGMA page_size={PAGE_SIZE}", "PRAGMA auto_vacuum=FULL", "PRAGMA foreign_keys=ON",
     "PRAGMA query_only=1", "PRAGMA query_only=0", "SAVEPOINT perennial_turn",
     "RELEASE perennial_turn", "ROLLBACK TO perennial_turn"}
)  # fmt: skip
_SCOPE_PREFIXES = ("SAVEPOINT perennial_", "RELEASE perennial_", "ROLLBACK TO perennial_",
                   "PRAGMA max_page_count=")  # fmt: skip


def _check_text(query: Any) -> str:
    if not isinstance(query, str):
        raise SqlError(f"the statement must be a str, not {type(query).__name__}")
    if not query.strip():
        raise SqlError("the statement is empty")
    # Python's sqlite3 reuses a prepared statement by its exact text, without asking the
    # authorizer again: texts of the connection's own statements are reserved.
    if query in _INTERNAL or query.startswith(_SCOPE_PREFIXES):
        raise SqlNotDeterministic(f"{query[:40]!r} is reserved: the agent manages transactions")
    try:
        query.encode()
    except UnicodeEncodeError:
        raise SqlError("the statement is not valid text (a lone surrogate)") from None
    return query


def _bind(params: Sequence[Any]) -> tuple[Any, ...]:
    """The parameters as SQLite takes them, or SqlError naming the one that does not fit."""
    values: list[Any] = []
    for number, value in enumerate(params, 1):
        if value is None or isinstance(value, float):
            values.append(value)
        elif isinstance(value, bool):
            values.append(int(value))
        elif isinstance(value, int):
            if not -(2**63) <= value < 2**63:
                raise SqlError(f"parameter {number} does not fit in 64 bits")
            values.append(value)
        elif isinstance(value, str):
            try:
                value.encode()
            except UnicodeEncodeError:
                raise SqlError(f"parameter {number} is not valid text") from None
            values.append(value)
        elif isinstance(value, bytes | bytearray | memoryview):
            values.append(bytes(value))
        elif isinstance(value, SqlBlob):
            values.append(value.data)
        else:
            raise SqlError(
                f"parameter {number} is a {type(value).__name__}; SQLite takes None, int, "
                "float, str and bytes"
            )
    return tuple(values)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class SqlResult:
    """What `self.sql(...)` returns: the columns and rows of a query (empty for a statement
    that returns none), how many rows an INSERT, UPDATE or DELETE changed (else 0), and the
    rowid of the last row an INSERT added (else None)."""

    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    rowcount: int
    lastrowid: int | None

    def scalar(self) -> Any:
        """The first column of the first row (None without rows)."""
        return self.rows[0][0] if self.rows else None


def _wire(value: Any) -> SqlValue:
    return SqlBlob.of(value) if isinstance(value, bytes) else value


def _value_bytes(value: Any) -> int:
    return len(value) if isinstance(value, str | bytes) else 8


# --------------------------------------------------------------------------- the log


class _Statement(BaseModel):
    # Infinity as a JSON constant: as null it would replay as NULL.
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")

    sql: str
    params: list[SqlValue] = []
    #: It raised, after changing rows (`OR FAIL`): replaying it changes them again.
    failed: bool = False


class _Entry(BaseModel):
    """What one version changed: its write statements, a reset to an older version (a
    rollback), or the whole database (an older version's image, kept for a reset)."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=0)
    statements: list[_Statement] | None = None
    reset_to: int | None = Field(default=None, ge=0)
    image: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> _Entry:
        kinds = [self.statements is not None, self.reset_to is not None, self.image is not None]
        if sum(kinds) != 1:
            raise ValueError("an entry has exactly one of statements, reset_to, image")
        if self.reset_to is not None and self.reset_to >= self.version:
            raise ValueError("a reset goes to an older version")
        return self


class _Log(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entries: list[_Entry]


@dataclass
class _Version:
    """One entry in memory: statements as SQLite takes them (bytes for blobs)."""

    version: int
    statements: list[tuple[str, tuple[Any, ...], bool]] | None = None
    reset_to: int | None = None
    image: bytes | None = None  # zlib-compressed
    size: int = 0

    @classmethod
    def of_statements(
        cls, version: int, statements: list[tuple[str, tuple[Any, ...], bool]]
    ) -> _Version:
        size = sum(len(sql) + sum(_value_bytes(v) for v in params) for sql, params, _ in statements)
        return cls(version, statements=statements, size=size)

    def model(self) -> _Entry:
        if self.statements is not None:
            return _Entry(version=self.version, statements=[
                _Statement(sql=sql, params=[_wire(v) for v in params], failed=failed)
                for sql, params, failed in self.statements
            ])  # fmt: skip
        if self.reset_to is not None:
            return _Entry(version=self.version, reset_to=self.reset_to)
        assert self.image is not None
        return _Entry(version=self.version, image=base64.b64encode(self.image).decode("ascii"))


def _from_model(entry: _Entry) -> _Version:
    if entry.statements is not None:
        return _Version.of_statements(entry.version, [
            (s.sql, _bind(s.params), s.failed) for s in entry.statements
        ])  # fmt: skip
    if entry.reset_to is not None:
        return _Version(entry.version, reset_to=entry.reset_to, size=16)
    assert entry.image is not None
    image = base64.b64decode(entry.image, validate=True)
    return _Version(entry.version, image=image, size=len(image))


def _encode(data: bytes) -> str:
    return base64.b64encode(zlib.compress(data, _ZLIB_LEVEL)).decode("ascii")


def _decode_log(text: str) -> list[_Version]:
    log = _Log.model_validate_json(zlib.decompress(base64.b64decode(text, validate=True)))
    return [_from_model(entry) for entry in log.entries]


def _encode_log(entries: list[_Version]) -> str | None:
    if not entries:
        return None
    log = _Log(entries=[entry.model() for entry in entries])
    return _encode(log.model_dump_json().encode())


def _unzip_image(data: bytes) -> bytes:
    image = zlib.decompress(data)
    if not image.startswith(_MAGIC):
        raise ValueError("not an SQLite database")
    return image


def check_carried(carried: SqlCarried, *, version: int) -> None:
    """Raise ValueError when `carried` cannot restore the database of an agent whose current
    version is `version` (corrupt data, versions that do not fit)."""
    if carried.base_version > version:
        raise ValueError(f"sql.base_version {carried.base_version} is past version {version}")
    try:
        if carried.base is not None:
            _unzip_image(base64.b64decode(carried.base, validate=True))
        entries = _decode_log(carried.log) if carried.log else []
    except ValidationError as err:
        raise ValueError(f"sql.log: {err.error_count()} problem(s)") from None
    except (ValueError, zlib.error) as err:
        raise ValueError(f"sql: {err}") from None
    previous = carried.base_version
    for entry in entries:
        if not previous < entry.version <= version:
            raise ValueError(f"sql.log: version {entry.version} is out of order or too new")
        if entry.reset_to is not None and entry.reset_to < carried.base_version:
            raise ValueError(f"sql.log: a reset to {entry.reset_to}, before the base")
        if entry.image is not None:
            _unzip_image(entry.image)
        previous = entry.version


# --------------------------------------------------------------------------- the part


@dataclass(frozen=True)
class SqlLimits:
    """An agent type's limits on its database (class attributes `max_sql_*`)."""

    max_bytes: int
    max_log_bytes: int
    max_carried_bytes: int
    max_steps: int


@dataclass
class _Scope:
    """A nested savepoint, opened at the first statement inside it."""

    name: str
    mark: int
    opened: bool = False


class SqlDatabase(Part):
    """The agent's SQLite database: see the module docstring."""

    def __init__(
        self, ctx: AgentContext, carried: SqlCarried, *, versions: Versions, limits: SqlLimits
    ) -> None:
        self._ctx = ctx
        self._versions = versions
        self._limits = limits
        #: Carried on as it came while this run changes nothing (no work at continue-as-new).
        self._carried_in: SqlCarried | None = carried
        self._base_version = carried.base_version
        self._base_text = carried.base  # zlib + base64, decoded when first needed
        self._base_zipped: bytes | None = None
        self._entries_text = carried.log
        self._entries: list[_Version] | None = None
        self._log_bytes = self._retired = self._retired_bytes = 0
        if not carried.log:
            self._set_entries([])
        self._live: sqlite3.Connection | None = None
        self._guard = _Guard(max_steps=limits.max_steps)
        self._in_turn = False
        self._turn_open = False
        self._turn_log: list[tuple[str, tuple[Any, ...], bool]] = []
        #: Why SQLite rolled this turn's changes back (then it can only fail).
        self._turn_lost: SqlError | StateTooLarge | None = None
        self._scopes: list[_Scope] = []
        self._compact_due = True
        self._writes_by_text: dict[str, tuple[bool, bool]] = {}
        self._schema: str | None = None
        if versions.oldest < self._base_version:  # older versions have no database
            versions.forget_before(self._base_version)

    # ------------------------------------------------------------------ agent code

    def execute(self, query: str, params: Sequence[Any]) -> SqlResult:
        """Run one statement in the current turn (`AgentWorkflow.sql`)."""
        if not self._in_turn:
            raise SqlError(
                "self.sql runs inside a turn (on_message, an on_* hook, a callable method or "
                "a tool); from outside, read with query `sql`"
            )
        if self._turn_lost is not None:
            raise self._lost()
        text, values = _check_text(query), _bind(params)
        conn = self._open(compact=True)
        self._open_savepoints(conn)
        before = conn.total_changes
        try:
            columns, rows, _, rowcount, lastrowid = self._run(conn, text, values, read_only=False)
        except (SqlError, StateTooLarge) as err:
            if not conn.in_transaction:  # SQLite rolled the whole turn back (full, interrupted)
                self._turn_open, self._turn_lost = False, err
                self._turn_log.clear()
                self._scopes.clear()
                self._schema = None
            elif conn.total_changes != before:  # rows changed before it failed (OR FAIL)
                self._logged(text, values, failed=True)
            raise
        writes, inserts = self._kind(text)
        if writes or conn.total_changes != before:
            self._logged(text, values, failed=False)
        rowcount = max(rowcount, 0)
        return SqlResult(columns, rows, rowcount, lastrowid if inserts and rowcount else None)

    def read(
        self, query: str, params: Sequence[Any], *, max_rows: int, in_turn: bool = False
    ) -> SqlRows:
        """One read-only statement, at most `max_rows` rows: query `sql` (from outside), or
        `sql_read` in a turn (`in_turn`: it sees the turn's own changes)."""
        if in_turn and not self._in_turn:
            raise SqlError("sql_read runs inside a turn")
        if in_turn and self._turn_lost is not None:
            raise self._lost()
        if not in_turn and self._turn_log:
            raise AgentBusy(
                "a turn is changing the database and has not committed yet; retry in a moment"
            )
        if max_rows < 1:
            raise SqlError("max_rows must be at least 1")
        text, values = _check_text(query), _bind(params)
        conn = self._open(compact=False)  # a query may not reorganize: it is not replayed
        self._internal(conn, "PRAGMA query_only=1")
        try:
            columns, rows, truncated, _, _ = self._run(
                conn, text, values, read_only=True, max_rows=max_rows
            )
        finally:
            self._internal(conn, "PRAGMA query_only=0")
        kept: list[list[SqlValue]] = []
        size = 0
        for row in rows:
            size += sum(_value_bytes(v) for v in row)
            if size > _MAX_REPLY_BYTES and kept:
                truncated = True
                break
            kept.append([_wire(v) for v in row])
        return SqlRows(columns=list(columns), rows=kept, truncated=truncated)

    def schema(self) -> str:
        """The database's tables, views, indexes and triggers as their CREATE statements, one
        per line ("" when there are none)."""
        if self._schema is None:
            conn = self._open(compact=False)
            self._guard.internal = True
            try:
                rows = conn.execute(_SCHEMA_QUERY).fetchall()
            finally:
                self._guard.internal = False
            self._schema = "\n".join(f"{sql};" for (sql,) in rows)
        return self._schema

    @property
    def size_bytes(self) -> int:
        """The database's size (page_count * page_size); 0 before it is first used."""
        if self._live is None:
            return 0
        self._guard.internal = True
        try:
            return int(self._live.execute("PRAGMA page_count").fetchone()[0]) * PAGE_SIZE
        finally:
            self._guard.internal = False

    @contextmanager
    def undo_on_error(self) -> Iterator[None]:
        """Inside a turn: what the block changes in the database is undone if it raises (a
        failed tool call); costs nothing unless the block runs a statement."""
        if not self._in_turn:
            yield
            return
        scope = _Scope(name=f"perennial_scope_{len(self._scopes) + 1}", mark=len(self._turn_log))
        self._scopes.append(scope)
        try:
            yield
        except BaseException:
            self._close_scope(scope, undo=True)
            raise
        self._close_scope(scope, undo=False)

    # ------------------------------------------------------------------ lifecycle

    def begin_turn(self) -> None:
        self._in_turn = True

    def commit_turn(self) -> None:
        """Commit the turn's changes (the last step of a turn that succeeds); SqlError when
        the database refuses (deferred foreign keys): the turn then fails and rolls back."""
        if self._turn_lost is not None:
            raise self._lost()
        if not self._turn_open:
            return
        assert self._live is not None
        try:
            self._internal(self._live, "RELEASE perennial_turn")
        except sqlite3.Error as err:
            raise SqlError(f"the turn's database changes cannot be committed: {err}") from None
        self._turn_open = False

    def end_turn(self, *, failed: bool) -> None:
        if self._turn_open:
            assert self._live is not None
            if not failed:  # not committed by commit_turn (the loop calls it): commit now
                try:
                    self.commit_turn()
                except SqlError as err:
                    _warn("sql: a turn's changes were dropped: %s", err)
                    failed = True
            if failed and self._live.in_transaction:
                self._internal(self._live, "ROLLBACK TO perennial_turn")
                self._internal(self._live, "RELEASE perennial_turn")
            self._turn_open = False
        self._turn_lost = None
        if self._turn_log:
            if failed:
                self._schema = None
            else:
                self._add(_Version.of_statements(self._ctx.version + 1, self._turn_log))
            self._turn_log = []
        self._scopes.clear()
        self._in_turn = False

    def _lost(self) -> SqlError | StateTooLarge:
        """The turn's changes are gone (SQLite rolled them back): it can only fail."""
        lost = self._turn_lost
        message = f"this turn's database changes were rolled back when a statement failed: {lost}"
        return StateTooLarge(message) if isinstance(lost, StateTooLarge) else SqlError(message)

    def check_restorable(self, version: int) -> None:
        """VersionNotKept when the database of `version` is not kept."""
        if version < self._base_version:
            raise VersionNotKept(
                f"version {version} is older than the oldest version of the database "
                f"({self._base_version})"
            )

    def restore(self, to_version: int, *, version: int) -> None:
        """A rollback: the database of `to_version` becomes that of the new `version`. The
        live database is rebuilt when next used (a rollback costs nothing until then)."""
        self.check_restorable(to_version)
        if not any(entry.version > to_version for entry in self._log()):
            return  # nothing changed the database since: it is already that version's
        self._add(_Version(version, reset_to=to_version, size=16))
        self._drop_live()

    def carry(self) -> SqlCarried:
        """What continue-as-new carries: the base and the log, or (past
        `max_sql_carried_bytes`) the current database alone, dropping older versions."""
        if self._carried_in is not None:
            return self._carried_in
        self._compact(retire_all=True)
        carried = self._carried_now()
        if _carried_bytes(carried) > self._limits.max_carried_bytes and self._entries:
            self._rebase_on_current()
            carried = self._carried_now()
        if _carried_bytes(carried) > self._limits.max_carried_bytes:
            _warn("sql: the carried database is %d bytes, past max_sql_carried_bytes (%d)",
                  _carried_bytes(carried), self._limits.max_carried_bytes)  # fmt: skip
        return carried

    def carried_at(self, version: int) -> SqlCarried:
        """The database as it was at kept `version`, alone (for a fork at that version: the
        new agent's current version must be `version`). Changes nothing (usable in a query)."""
        self.check_restorable(version)
        if version > self._ctx.version:
            raise VersionNotKept(f"version {version} is not committed yet")
        if self._live is not None and not self._turn_log and version == self._ctx.version:
            image = self._live.serialize()
        else:
            conn, _ = self._materialize(version)
            try:
                image = conn.serialize()
            finally:
                conn.close()
        return SqlCarried(base_version=version, base=_encode(image))

    def carried_whole(self) -> SqlCarried:
        """Every kept version's database as it stands, uncompacted (an export of all kept
        versions). Changes nothing (usable in a query)."""
        return self._carried_in if self._carried_in is not None else self._carried_now()

    # ------------------------------------------------------------------ running statements

    def _run(
        self,
        conn: sqlite3.Connection,
        text: str,
        values: tuple[Any, ...],
        *,
        read_only: bool,
        max_rows: int | None = None,
    ) -> tuple[tuple[str, ...], list[tuple[Any, ...]], bool, int, int | None]:
        guard = self._guard
        guard.start(read_only=read_only)
        cursor = None
        try:
            cursor = conn.execute(text, values)
            if max_rows is None:
                rows, truncated = cursor.fetchall(), False
            else:
                rows = cursor.fetchmany(max_rows + 1)
                truncated = len(rows) > max_rows
                del rows[max_rows:]
            columns = tuple(d[0] for d in cursor.description or ())
            return columns, rows, truncated, cursor.rowcount, cursor.lastrowid
        except sqlite3.Error as err:
            raise self._refusal(err, read_only=read_only) from None
        finally:
            if cursor is not None:
                cursor.close()
            self._remember(text)

    def _refusal(self, err: sqlite3.Error, *, read_only: bool) -> SqlError | StateTooLarge:
        guard = self._guard
        if guard.refusal is not None:
            return guard.refusal
        name = getattr(err, "sqlite_errorname", "")
        if guard.max_ticks is not None and guard.ticks > guard.max_ticks:
            return SqlError(
                f"the statement ran past {self._limits.max_steps} SQLite steps (max_sql_steps)"
            )
        if name == "SQLITE_FULL":
            return StateTooLarge(
                f"the database would grow past {self._limits.max_bytes} bytes (max_sql_bytes); "
                "the statement changed nothing"
            )
        if name == "SQLITE_READONLY" and read_only:
            return SqlReadOnly("this is a read-only query: it may not change the database")
        if name == "SQLITE_TOOBIG":
            return SqlError(f"a value would be longer than {self._max_value_bytes} bytes")
        return SqlError(f"{err} ({name})" if name else str(err))

    def _remember(self, text: str) -> None:
        """Remember whether `text` writes (and inserts), as the authorizer saw it when it was
        prepared: a prepared statement that is reused does not ask the authorizer again."""
        guard = self._guard
        if not guard.prepared:
            return
        if len(self._writes_by_text) >= _MAX_REMEMBERED:
            self._writes_by_text.clear()
            assert self._live is not None
            self._live.set_authorizer(guard.authorize)  # expires every prepared statement
        if not guard.denied:
            self._writes_by_text[text] = (guard.writes, guard.inserts)

    def _kind(self, text: str) -> tuple[bool, bool]:
        """(writes, inserts) of the statement just run."""
        guard = self._guard
        if guard.prepared:
            return guard.writes, guard.inserts
        return self._writes_by_text.get(text, (False, False))

    def _logged(self, text: str, values: tuple[Any, ...], *, failed: bool) -> None:
        self._turn_log.append((text, values, failed))
        self._schema = None

    def _internal(self, conn: sqlite3.Connection, sql: str) -> None:
        guard = self._guard
        guard.internal = True
        try:
            conn.execute(sql)
        finally:
            guard.internal = False

    def _open_savepoints(self, conn: sqlite3.Connection) -> None:
        if not self._turn_open:
            self._internal(conn, "SAVEPOINT perennial_turn")
            self._turn_open = True
        for scope in self._scopes:
            if not scope.opened:
                self._internal(conn, f"SAVEPOINT {scope.name}")
                scope.opened = True

    def _close_scope(self, scope: _Scope, *, undo: bool) -> None:
        if self._scopes and self._scopes[-1] is scope:
            self._scopes.pop()
        if not scope.opened or self._live is None or not self._live.in_transaction:
            return
        if undo:
            self._internal(self._live, f"ROLLBACK TO {scope.name}")
            del self._turn_log[scope.mark :]
            self._schema = None
        self._internal(self._live, f"RELEASE {scope.name}")

    # ------------------------------------------------------------------ the live database

    @property
    def _max_value_bytes(self) -> int:
        return max(self._limits.max_bytes, 1024 * 1024)

    def _open(self, *, compact: bool) -> sqlite3.Connection:
        if compact and self._compact_due:
            self._compact(retire_all=False)
        if self._live is None:
            conn, _ = self._materialize(None)
            self._arm(conn)
            self._live = conn
        return self._live

    def _arm(self, conn: sqlite3.Connection) -> None:
        """Turn a rebuilt connection into the live one: the guard and the size budget."""
        pages = max(1, self._limits.max_bytes // PAGE_SIZE)
        conn.execute(f"PRAGMA max_page_count={pages}")
        conn.set_authorizer(self._guard.authorize)
        conn.set_progress_handler(self._guard.tick, _TICK)
        for name in _REFUSED_FUNCTIONS:
            conn.create_function(name, -1, self._guard.refusing(name))
        for name in _AVAILABLE_DATE_FUNCTIONS:
            conn.create_function(name, -1, self._guard.dating(name), deterministic=True)

    def _drop_live(self) -> None:
        if self._live is not None:
            self._live.close()
            self._live = None
        self._writes_by_text.clear()
        self._schema = None

    # ------------------------------------------------------------------ versions

    def _log(self) -> list[_Version]:
        if self._entries is None:
            assert self._entries_text is not None
            self._set_entries(_decode_log(self._entries_text))
            assert self._entries is not None
        return self._entries

    def _set_entries(self, entries: list[_Version]) -> None:
        self._entries = entries
        self._log_bytes = sum(entry.size for entry in entries)
        self._retired = self._retired_bytes = 0  # counted again by the next `_compact`

    def _base_image(self) -> bytes | None:
        if self._base_zipped is None and self._base_text is not None:
            self._base_zipped = base64.b64decode(self._base_text)
        return None if self._base_zipped is None else _unzip_image(self._base_zipped)

    def _add(self, entry: _Version) -> None:
        self._log().append(entry)
        self._log_bytes += entry.size
        self._carried_in = None
        self._compact_due = True

    def _materialize(
        self, upto: int | None, keep: frozenset[int] = frozenset()
    ) -> tuple[sqlite3.Connection, dict[int, bytes]]:
        """A new connection holding the database of version `upto` (None: the current one),
        built from the base and the log; and images of the versions in `keep` on the way."""
        entries = [e for e in self._log() if upto is None or e.version <= upto]
        wanted = set(keep) | {e.reset_to for e in entries if e.reset_to is not None}
        guard = _Guard(max_steps=None)
        conn = _connect(self._base_image(), guard, max_value_bytes=self._max_value_bytes)
        images: dict[int, bytes] = {}
        try:
            for entry in entries:
                for at in sorted(v for v in wanted if v < entry.version and v not in images):
                    images[at] = conn.serialize()
                conn = self._apply(conn, entry, images, guard)
            for at in wanted:
                if at not in images and (upto is None or at <= upto):
                    images[at] = conn.serialize()
        except BaseException:
            conn.close()
            raise
        return conn, images

    def _apply(
        self, conn: sqlite3.Connection, entry: _Version, images: dict[int, bytes], guard: _Guard
    ) -> sqlite3.Connection:
        if entry.statements is not None:
            conn.execute("BEGIN")
            for sql, params, failed in entry.statements:
                try:
                    conn.execute(sql, params).fetchall()
                except sqlite3.Error as err:
                    if not failed:
                        raise RuntimeError(
                            f"the SQL log of version {entry.version} does not replay: {err}"
                        ) from None
            conn.execute("COMMIT")
            return conn
        image = images[entry.reset_to] if entry.reset_to is not None else None
        if image is None:
            assert entry.image is not None
            image = _unzip_image(entry.image)
        conn.close()
        return _connect(image, guard, max_value_bytes=self._max_value_bytes)

    def _compact(self, *, retire_all: bool) -> None:
        """Move the base up to the oldest kept version when the log of versions no longer
        kept has grown (`retire_all`: whenever there is one), and drop older versions (state
        and database) when the log outgrows `max_sql_log_bytes`."""
        self._compact_due = False
        entries = self._log()
        if not entries:
            return
        oldest = self._versions.oldest
        # The versions that left the ring since the last look (amortized: no scan per turn).
        while self._retired < len(entries) and entries[self._retired].version <= oldest:
            self._retired_bytes += entries[self._retired].size
            self._retired += 1
        base_bytes = len(self._base_text or "")
        if self._retired and (
            retire_all or self._retired_bytes > max(_RETIRE_MIN_BYTES, base_bytes)
        ):
            self._move_base(oldest)
        total = self._log_bytes - self._retired_bytes
        if total <= self._limits.max_log_bytes:
            return
        kept = self._log()[self._retired :]
        # Keep the newest versions whose log fits; the older ones go (state and database).
        keep_from = oldest
        for entry in kept:  # oldest first: the base moves past it
            if total <= self._limits.max_log_bytes:
                break
            total -= entry.size
            keep_from = entry.version
        if keep_from >= self._ctx.version:
            self._rebase_on_current()
            return
        self._move_base(keep_from)
        self._versions.forget_before(keep_from)
        _warn("sql: versions before %d dropped: the database log outgrew its budget", keep_from)

    def _move_base(self, version: int) -> None:
        later = [e for e in self._log() if e.version > version]
        resets = frozenset(
            e.reset_to for e in later if e.reset_to is not None and e.reset_to < version
        )
        conn, images = self._materialize(version, keep=resets)
        try:
            self._set_base(version, conn.serialize())
        finally:
            conn.close()
        for entry in later:
            if entry.reset_to is not None and entry.reset_to < version:
                image = zlib.compress(images[entry.reset_to], _ZLIB_LEVEL)
                entry.reset_to, entry.image, entry.size = None, image, len(image)
        self._set_entries(later)

    def _rebase_on_current(self) -> None:
        """The current database becomes the base: older versions are dropped (the state's
        too, so that every kept version can still be restored whole)."""
        current = self._ctx.version
        assert not self._turn_log, "only between turns, or before a turn's first change"
        # The live database, opened here if a query has not: the same bytes either way, and
        # workflow code must not depend on what queries did (they are not replayed).
        self._set_base(current, self._open(compact=False).serialize())
        self._set_entries([])
        self._versions.forget_before(current)
        _warn("sql: versions before %d dropped: the database log outgrew its budget", current)

    def _set_base(self, version: int, image: bytes) -> None:
        zipped = zlib.compress(image, _ZLIB_LEVEL)
        self._base_version = version
        self._base_zipped = zipped
        self._base_text = base64.b64encode(zipped).decode("ascii")
        self._carried_in = None

    def _carried_now(self) -> SqlCarried:
        return SqlCarried(
            base_version=self._base_version,
            base=self._base_text,
            log=_encode_log(self._log()),
        )


def query_failure(err: PerennialError) -> ApplicationError:
    """How query `sql` fails: the error's type leads its message ("SqlReadOnly: ..."). A
    failed query reaches the caller as its message alone (the SDK and server of this release
    drop the failure's type), and callers must tell SqlReadOnly from AgentBusy (retry)."""
    return ApplicationError(
        f"{type(err).__name__}: {err}", type=type(err).__name__, non_retryable=err.non_retryable
    )


def _carried_bytes(carried: SqlCarried) -> int:
    return len(carried.base or "") + len(carried.log or "")


def _warn(message: str, *args: Any) -> None:
    if workflow.in_workflow():  # the part is also driven outside workflows (tests, tools)
        workflow.logger.warning(message, *args)
