"""The CLI's commands: what `perennial COMMAND` does once its arguments are parsed.

Imported only after parsing (`perennial.client.cli`), so `perennial --help` stays fast.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from perennial.client.agents import READ_TIMEOUT, AgentHandle, EventsMissed, Perennial
from perennial.client.llm_events import format_llm_event
from perennial.client.server import DevServer
from perennial.client.settings import Settings
from perennial.workflows.errors import InvalidSchedule, RunError, UsageError
from perennial.workflows.messages import (
    DeltaItem,
    Event,
    ReplyItem,
    RestartItem,
    Schedule,
    SqlBlob,
    SqlRows,
    StreamItem,
    ToolCallItem,
    ToolResultItem,
)
from perennial.workflows.schedules import describe

T = TypeVar("T")


def _parse_agent(ref: str) -> tuple[str, str]:
    agent_type, sep, name = ref.partition("/")
    if not sep or not agent_type or not name:
        raise UsageError(f"agent must be written TYPE/NAME (like notes/alice), not {ref!r}")
    return agent_type, name


def _json_arg(raw: str | None) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as err:
        raise UsageError(f"--data is not valid JSON: {err}") from None


def _emit(args: argparse.Namespace, value: Any, human: str) -> None:
    if args.json:
        payload = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
        print(json.dumps(payload, default=str))
    else:
        print(human)


def venv_command(program: str) -> str:
    """How to run this environment's `program` (perennial, pip, temporal) from the current
    directory, for hints that work as printed: `.venv/bin/perennial` from a checkout's root
    (its virtualenv is not on PATH), the bare name when PATH finds that same file."""
    path = Path(sys.executable).parent / program
    if not path.exists():
        return program
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        found = shutil.which(program)
        return program if found and Path(found) == path else str(path)


def format_event(event: Event) -> str:
    """One line per event, for people."""
    if (line := format_llm_event(event)) is not None:  # runs, steps, texts, tools, errors
        return line
    at = f"{event.at:%H:%M:%S}"
    match event.kind:
        case "received":
            who = event.sender or "anonymous"
            how = "ask" if event.awaited else "message"
            return f"#{event.offset} {at} {how} {event.message_id} from {who}: {event.text}"
        case "turn":
            return f"#{event.offset} {at} turn v{event.version} ({event.message_id}): {event.reply}"
        case "turn_failed":
            return (
                f"#{event.offset} {at} FAILED turn ({event.message_id}) {event.error_type}: "
                f"{event.error}; state kept at v{event.version}"
            )
        case "rolled_back":
            return f"#{event.offset} {at} rolled back to v{event.to_version} as v{event.version}"
        case "rejected":
            return f"#{event.offset} {at} rejected signal: {event.error}"
        case "continued_as_new":
            return (
                f"#{event.offset} {at} continued as new ({event.reason}), "
                f"{event.carried_wakes} wakes carried"
            )
        case "scheduled":
            how = "replaced" if event.replaced else "scheduled"
            return (
                f"#{event.offset} {at} {how} {event.schedule_id} ({event.timing}, next "
                f"{_when(event.next_due)}) by {event.created_by or '-'}: {event.payload}"
            )
        case "schedule_cancelled":
            return f"#{event.offset} {at} cancelled schedule {event.schedule_id}"
        case "alarm":
            late = (event.fired_at - event.due_at).total_seconds()
            missed = f", {event.missed} earlier missed" if event.missed else ""
            following = f", next {_when(event.next_due)}" if event.next_due else ", done"
            return (
                f"#{event.offset} {at} alarm {event.schedule_id} due {_when(event.due_at)} "
                f"({late:.2f}s late{missed}{following}): {event.payload}"
            )
        case "forked" | "imported":
            copied = f", {event.schedules} schedules" if event.schedules else ""
            return (
                f"#{event.offset} {at} {event.kind} from {event.source_id} v{event.version}{copied}"
            )
    return f"#{event.offset} {at} {event.kind}"


def _when(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def _format_schedule(schedule: Schedule) -> str:
    return (
        f"{schedule.id:20} next {_when(schedule.next_due)}  {describe(schedule):28} "
        f"fired {schedule.fired:<4} by {schedule.created_by or '-'}: {schedule.payload}"
    )


# --------------------------------------------------------------------------- agent commands


async def _agent(args: argparse.Namespace, settings: Settings) -> tuple[Perennial, AgentHandle]:
    agent_type, name = _parse_agent(args.agent)
    perennial = await Perennial.connect(settings)
    return perennial, perennial.agent(agent_type, name)


async def cmd_send(args: argparse.Namespace, settings: Settings) -> None:
    _, agent = await _agent(args, settings)
    message_id = await agent.send(
        args.text, sender=args.sender, id=args.id, data=_json_arg(args.data), on_busy=args.on_busy
    )
    _emit(args, {"id": message_id}, f"sent {message_id} to {agent.id}")


async def cmd_ask(args: argparse.Namespace, settings: Settings) -> None:
    _, agent = await _agent(args, settings)
    fields: dict[str, Any] = {"sender": args.sender, "id": args.id, "data": _json_arg(args.data),
                              "timeout": args.timeout, "on_busy": args.on_busy}  # fmt: skip
    if args.stream:
        printer = _TurnPrinter(json_lines=args.json)
        try:
            async for item in agent.ask_stream(args.text, **fields):
                printer.show(item)
        finally:
            printer.end_line()  # an error is reported after the text that came before it
        return
    reply = await agent.ask(args.text, **fields)
    _emit(args, reply, f"{reply.reply}\n  (v{reply.version}, message {reply.id})")


class _TurnPrinter:
    """`ask --stream`: the text on stdout as it is written, tool calls, results and restarts
    as short lines on stderr, the version last as `ask` prints it (`--json`: each item as one
    JSON line on stdout)."""

    def __init__(self, *, json_lines: bool) -> None:
        self._json = json_lines
        self._step = 0  # the step whose text is being printed (0: none yet)
        self._open = False  # stdout has text not ended by a newline

    def show(self, item: StreamItem) -> None:
        if self._json:
            print(item.model_dump_json(), flush=True)
            return
        match item:
            case DeltaItem():
                if self._step and item.step != self._step:
                    self.end_line()  # each step's text on its own line
                self._step = item.step
                self._text(item.text)
            case RestartItem():
                self.end_line()
                self._note(f"[step {item.step} restarts (attempt {item.attempt}): "
                           "its text above is void]")  # fmt: skip
            case ToolCallItem():
                self.end_line()
                self._note(f"[tool {item.name}({_clip(item.arguments)})]")
            case ToolResultItem():
                outcome = "ok" if item.ok else "failed"
                self._note(f"[tool {item.name} {outcome}: {_clip(item.result)}]")
            case ReplyItem():
                if not self._step:  # nothing was streamed (an agent that calls no model)
                    self._text(str(item.reply))
                self.end_line()
                print(f"  (v{item.version}, message {item.id})", flush=True)

    def end_line(self) -> None:
        if self._open:
            print(flush=True)
            self._open = False

    def _text(self, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()
        self._open = self._open or bool(text)
        if text.endswith("\n"):
            self._open = False

    def _note(self, line: str) -> None:
        print(line, file=sys.stderr, flush=True)


def _clip(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def cmd_stop(args: argparse.Namespace, settings: Settings) -> None:
    _, agent = await _agent(args, settings)
    result = await agent.stop(reason=args.reason, turn=args.turn)
    if result.stopped:
        human = f"stopped turn {result.turn} of {agent.id}; it is at v{result.version}"
    else:
        which = f"turn {args.turn}" if args.turn else "turn"
        human = f"no {which} was running on {agent.id} (v{result.version}): nothing stopped"
    _emit(args, result, human)


async def cmd_call(args: argparse.Namespace, settings: Settings) -> None:
    _, agent = await _agent(args, settings)
    reply = await agent.call(
        args.method,
        _call_args(args.args, args.arg),
        id=args.id,
        sender=args.sender,
        timeout=args.timeout,
    )
    human = f"{json.dumps(reply.result, indent=2)}\n  (v{reply.version}, call {reply.id})"
    _emit(args, reply, human)


def _call_args(whole: str | None, pairs: list[str]) -> dict[str, Any]:
    """`--args` (a JSON object) and each `--arg NAME=VALUE` together; a name given twice is
    refused, not silently overwritten."""
    found: dict[str, Any] = {}
    if whole is not None:
        try:
            found = json.loads(whole, parse_constant=_not_json)
        except ValueError as err:
            raise UsageError(f"--args is not valid JSON: {err}") from None
        if not isinstance(found, dict):
            raise UsageError("--args must be a JSON object of arguments by name")
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"--arg {pair!r}: write NAME=VALUE")
        if name in found:
            raise UsageError(f"argument {name!r} is given twice")
        found[name] = _json_or_text(value)
    return found


def _json_or_text(value: str) -> Any:
    """A `--arg` value: JSON when it parses as JSON (`2`, `true`, `[1]`, `"007"`), else the
    text itself (`apple`)."""
    try:
        return json.loads(value, parse_constant=_not_json)
    except ValueError:
        return value


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")  # Python's json reads NaN and Infinity


async def _answered(read: Awaitable[T], settings: Settings) -> T:
    """A read, saying what it waits for when no worker answers at once."""
    task = asyncio.ensure_future(read)
    done, _ = await asyncio.wait({task}, timeout=1.0)
    if not done:
        print(f"waiting for a worker on task queue {settings.task_queue!r} to answer "
              f"(up to {READ_TIMEOUT.total_seconds():.0f} s)...", file=sys.stderr)  # fmt: skip
    return await task


async def cmd_state(args: argparse.Namespace, settings: Settings) -> None:
    _, agent = await _agent(args, settings)
    view = await _answered(agent.state_view(), settings)
    human = (
        f"{agent.id} v{view.version}{' (busy)' if view.busy else ''}, {view.inbox} queued, "
        f"versions kept {view.versions_kept}\n{json.dumps(view.state, indent=2)}"
    )
    _emit(args, view, human)


async def cmd_sql(args: argparse.Namespace, settings: Settings) -> None:
    _, agent = await _agent(args, settings)
    params = [_sql_param(value) for value in args.param]
    found = await _answered(agent.sql(args.query, *params, max_rows=args.max_rows), settings)
    _emit(args, found, format_rows(found))


def _sql_param(value: str) -> Any:
    """A `--param`: a JSON scalar when it is one (`2`, `1.5`, `true`, `null`), else the text
    (`apple`, `007`). A JSON string (`"2"`) is the text inside the quotes."""
    parsed = _json_or_text(value)
    return parsed if parsed is None or isinstance(parsed, str | int | float | bool) else value


def format_rows(found: SqlRows) -> str:
    """Rows as an aligned table, for people (BLOBs as their size)."""
    cells = [[_cell(value) for value in row] for row in found.rows]
    widths = [
        max([len(name), *(len(row[i]) for row in cells)]) for i, name in enumerate(found.columns)
    ]
    lines = ["  ".join(name.ljust(w) for name, w in zip(found.columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    more = " (truncated: more rows matched)" if found.truncated else ""
    lines.append(f"({len(found.rows)} row{'s' if len(found.rows) != 1 else ''}{more})")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, SqlBlob):
        return f"<blob {len(value.data)} bytes>"
    return str(value)


async def cmd_events(args: argparse.Namespace, settings: Settings) -> None:
    _, agent = await _agent(args, settings)
    if not args.follow:
        page = await _answered(agent.events(after=args.after, limit=args.limit), settings)
        human = "\n".join(format_event(e) for e in page.events) or "(no events)"
        _emit(args, page, human)
        return
    after = args.after
    while True:
        try:
            async for event in agent.watch(after=after):
                _emit(args, event, format_event(event))
                sys.stdout.flush()
        except EventsMissed as err:  # say so, and go on from the oldest event kept
            print(f"warning: {err}", file=sys.stderr)
            after = err.resume_after


async def cmd_export(args: argparse.Namespace, settings: Settings) -> None:
    from perennial.client.transfer import export_text

    _, agent = await _agent(args, settings)
    bundle = await _answered(
        agent.export(version=args.version, with_schedules=args.with_schedules), settings
    )
    print(export_text(bundle))  # the file itself, `--json` or not: `> agent.json`
    if not args.json:
        print(f"exported {agent.id} v{bundle.version}: {len(bundle.snapshots)} kept versions, "
              f"{len(bundle.schedules)} schedules", file=sys.stderr)  # fmt: skip


async def cmd_import(args: argparse.Namespace, settings: Settings) -> None:
    from perennial.client.transfer import read_export

    text = sys.stdin.read() if str(args.file) == "-" else args.file
    bundle = read_export(text)
    agent_type, name = None, args.name
    if name is not None and "/" in name:  # --name TYPE/NAME: the type must be the bundle's
        agent_type, name = _parse_agent(name)
    perennial = await Perennial.connect(settings)
    agent = await perennial.import_agent(bundle, name=name, agent_type=agent_type)
    _emit(args, {"id": agent.id, "source_id": bundle.source_id, "version": bundle.version,
                 "versions": len(bundle.snapshots), "schedules": len(bundle.schedules)},
          f"imported {bundle.source_id} v{bundle.version} as {agent.id} "
          f"({len(bundle.snapshots)} kept versions, {len(bundle.schedules)} schedules)")  # fmt: skip


async def cmd_fork(args: argparse.Namespace, settings: Settings) -> None:
    from perennial.client.transfer import start_from_export

    perennial, source = await _agent(args, settings)
    target = perennial.agent(source.agent_type, args.new_name)  # a bad name: refused here
    bundle = await _answered(
        source.export(version=args.version, with_schedules=args.with_schedules), settings
    )
    done = await start_from_export(perennial.client, bundle, name=target.name,
                                   task_queue=settings.task_queue, kind="forked")  # fmt: skip
    _emit(args, done, f"forked {source.id} v{done.version} as {done.id} ({done.versions} kept "
                      f"versions, {done.schedules} schedules)")  # fmt: skip


async def cmd_rollback(args: argparse.Namespace, settings: Settings) -> None:
    _, agent = await _agent(args, settings)
    result = await agent.rollback(args.version)
    _emit(args, result, f"restored v{result.restored_version} as v{result.version}")


async def cmd_recover(args: argparse.Namespace, settings: Settings) -> None:
    _, agent = await _agent(args, settings)
    done = await agent.recover()
    skipped = f"; {done.skipped_signals} oversized signals left out" if done.skipped_signals else ""
    _emit(args, {"id": agent.id, **done._asdict()},
          f"recovered {agent.id}: run {done.run_id} resumes from its last good workflow task; "
          f"{done.reapplied_signals} later signals applied again{skipped}")  # fmt: skip


async def cmd_schedule(args: argparse.Namespace, settings: Settings) -> None:
    _, agent = await _agent(args, settings)
    at = None
    if args.at is not None:
        try:
            at = datetime.fromisoformat(args.at)
        except ValueError:
            raise InvalidSchedule(f"--at {args.at!r} is not an ISO-8601 time") from None
    result = await agent.schedule(
        args.id,
        args.payload,
        after_seconds=args.after,
        at=at,
        every_seconds=args.every,
        cron=args.cron,
        timezone=args.timezone,
        created_by=args.created_by,
    )
    how = "replaced" if result.replaced else "scheduled"
    _emit(args, result, f"{how} on {agent.id}: {_format_schedule(result.schedule)}")


async def cmd_schedules(args: argparse.Namespace, settings: Settings) -> None:
    _, agent = await _agent(args, settings)
    schedules = await _answered(agent.schedules(), settings)
    if args.json:
        print(json.dumps([s.model_dump(mode="json") for s in schedules]))
        return
    print("\n".join(_format_schedule(s) for s in schedules) or "(no schedules)")


async def cmd_unschedule(args: argparse.Namespace, settings: Settings) -> None:
    _, agent = await _agent(args, settings)
    cancelled = await agent.cancel_schedule(args.id)
    _emit(args, cancelled, f"cancelled on {agent.id}: {_format_schedule(cancelled)}")


async def cmd_init(args: argparse.Namespace, settings: Settings) -> None:
    from perennial.client.scaffold import scaffold

    written = scaffold(args.directory)
    package = next(p.parent.name for p in written if p.name == "agents.py")
    human = "\n".join(
        [f"created {args.directory}/ with an agent type in {package}/agents.py. Next:",
         f"  cd {args.directory}",
         "  pip install -e '.[test]'                  # it, and pytest for its tests",
         f"  perennial dev --app {package}.agents      # run it (server, worker, Web UI)",
         "  python -m pytest                          # test it"]
    )  # fmt: skip
    _emit(args, {"files": [str(p) for p in written], "package": package}, human)


async def cmd_list(args: argparse.Namespace, settings: Settings) -> None:
    perennial = await Perennial.connect(settings)
    agents = await perennial.list_agents(
        agent_type=args.type, status=args.status, running_only=not args.all, limit=args.limit
    )
    if args.json:
        print(json.dumps([a.model_dump(mode="json") for a in agents]))
        return
    if not agents:
        print("(no agents)")
    for a in agents:
        active = f"{a.last_active:%Y-%m-%d %H:%M:%S}" if a.last_active else "-"
        print(f"{a.workflow_id:40} {a.status or '-':18} v{a.version or 0:<6} last active {active}")


async def cmd_usage(args: argparse.Namespace, settings: Settings) -> None:
    from perennial.client.usage import collect_usage, format_usage

    perennial = await Perennial.connect(settings)
    summary = await collect_usage(
        perennial, agent_type=args.type, running_only=not args.all, limit=args.limit
    )
    for agent in summary.agents:
        if agent.status == "failed":
            print(f"warning: {agent.agent_id}: {agent.error}", file=sys.stderr)
    _emit(args, summary, format_usage(summary))


async def cmd_replay(args: argparse.Namespace, settings: Settings) -> None:
    from perennial.client.replay import (
        DEFAULT_QUERY,
        ReplayReport,
        replay_files,
        replay_from_server,
    )

    if not args.files and args.query is None:
        raise UsageError("nothing to replay: name history FILEs, or --query the server's agents")
    from perennial.client.connection import data_converter

    converter = data_converter(settings)  # decrypts exported histories when a key file is set
    report = (
        await replay_files(args.files, converter=converter) if args.files else ReplayReport()
    )
    if args.query is not None:
        perennial = await Perennial.connect(settings)
        live = await replay_from_server(
            perennial.client, query=args.query or DEFAULT_QUERY, limit=args.limit
        )
        report = ReplayReport(results=[*report.results, *live.results], truncated=live.truncated)
    failed = len(report.failed)
    summary = f"{len(report.results)} replayed, {failed} failed"
    if report.truncated:  # a deploy check that silently skipped agents would mislead
        summary += f"; only the first {args.limit} agents (--limit): more match"
        if args.json:
            print(f"warning: {summary}", file=sys.stderr)
    lines = [
        f"{'ok' if r.ok else 'FAILED':6} {r.workflow_id:40} run {r.run_id}"
        + (f"\n       {r.error}" if r.error else "")
        for r in report.results
    ]
    _emit(args, [r.model_dump(mode="json") for r in report.results], "\n".join([*lines, summary]))
    if failed:
        raise RunError(f"{failed} of {len(report.results)} histories do not replay on this code")


async def cmd_approvals(args: argparse.Namespace, settings: Settings) -> None:
    from perennial.client.approvals import pending_approvals, waiting_for_approval

    perennial = await Perennial.connect(settings)
    if args.agent:
        agent = perennial.agent(*_parse_agent(args.agent))
        found = [(agent.id, await pending_approvals(agent))]
    else:
        listed = await waiting_for_approval(perennial)
        found = [(s.workflow_id, approvals) for s, approvals, error in listed if error is None]
        for _, _, error in listed:
            if error is not None:
                print(f"warning: {error}", file=sys.stderr)
    if args.json:
        print(json.dumps({aid: [a.model_dump(mode="json") for a in pending]
                          for aid, pending in found}))  # fmt: skip
        return
    lines = [
        f"{aid:32} {a.approval_id:18} {a.tool}({a.arguments}) asked {_when(a.requested_at)}"
        + (f", deadline {_when(a.deadline)}" if a.deadline else "")
        for aid, pending in found
        for a in pending
    ]
    print("\n".join(lines) or "(no pending approvals)")


async def cmd_decide(args: argparse.Namespace, settings: Settings) -> None:
    from perennial.client.approvals import decide

    _, agent = await _agent(args, settings)
    decision = await decide(
        agent, args.id, approve=args.approve, comment=args.comment, decided_by=args.by
    )
    verdict = "approved" if decision.approved else "rejected"
    _emit(args, decision, f"{verdict} {decision.approval_id} on {agent.id}")


# --------------------------------------------------------------------------- runtime commands


async def _until_stopped() -> None:
    from perennial.worker import stop_on_signals

    await stop_on_signals().wait()


async def cmd_server(args: argparse.Namespace, settings: Settings) -> None:
    if not settings.embedded:
        raise UsageError("TEMPORAL_ADDRESS is set: a server is already configured, none started")
    async with DevServer(settings, headless=args.headless) as server:
        print(f"Temporal server: {server.address}  (namespace {settings.namespace})")
        if not args.headless:
            print(f"Web UI:          {server.ui_url}")
        print(f"Database:        {settings.database}\nCtrl-C to stop.", flush=True)
        await _until_stopped()


async def cmd_worker(args: argparse.Namespace, settings: Settings) -> None:
    from perennial.worker import run_worker

    await run_worker(settings)


async def cmd_gateway(args: argparse.Namespace, settings: Settings) -> None:
    from perennial.client.gateway.server import GatewayServer

    async with GatewayServer(settings) as gateway:
        _print_gateway(gateway.url, gateway.auth.open)
        print("Ctrl-C to stop.", flush=True)
        await _until_stopped()


async def cmd_codec_server(args: argparse.Namespace, settings: Settings) -> None:
    from perennial.client.codec import new_key_line
    from perennial.client.codec_server import CodecServer

    if args.new_key is not None:
        line = new_key_line(args.new_key)
        _emit(args, {"line": line}, line)
        return
    async with CodecServer(settings) as codec:
        keys = codec.codec.keys.key_ids
        access = "token required" if settings.codec_token else "no token: this machine only"
        print(f"Codec server:    {codec.url}  ({access})\n"
              f"Keys:            {keys[0]} (current){''.join(', ' + k for k in keys[1:])}\n"
              f"Browser origins: {', '.join(settings.codec_origins)}\nCtrl-C to stop.",
              flush=True)  # fmt: skip
        await _until_stopped()


def _print_gateway(url: str, open: bool) -> None:
    access = "  (open: no auth, this machine only)" if open else ""
    print(f"Gateway:         {url}/{access}\nAPI docs:        {url}/docs", flush=True)


async def _with_runtime(
    settings: Settings, headless: bool, body: Callable[[Settings], Awaitable[None]],
    *, gateway: bool = True,
) -> None:  # fmt: skip
    """Start the embedded server (unless TEMPORAL_ADDRESS is set), a worker and the gateway
    (unless `gateway` is False), run `body`."""
    from perennial.client.codec_server import CodecServer
    from perennial.client.gateway.server import GatewayServer
    from perennial.worker import run_worker

    # Built first: it reads the key file, and a bad one stops here with nothing started.
    codec = CodecServer(settings) if settings.encrypted else None
    server = DevServer(settings, headless=headless) if settings.embedded else None
    if server:
        await server.start()
        print(f"Temporal server: {server.address}", flush=True)
        if not headless:
            print(f"Web UI:          {server.ui_url}", flush=True)
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(settings, stop=stop))
    web = GatewayServer(settings) if gateway else None
    try:
        if codec:
            await codec.start()
            print(f"Codec server:    {codec.url}  (the Web UI decrypts through it)", flush=True)
        if web:
            await web.start()
            _print_gateway(web.url, web.auth.open)
            settings = settings.model_copy(update={"gateway_port": web.port})  # if it was 0
        await body(settings)
    finally:
        if web:
            await web.stop()
        if codec:
            await codec.stop()
        stop.set()
        await worker
        if server:
            await server.stop()


async def cmd_dev(args: argparse.Namespace, settings: Settings) -> None:
    async def body(_: Settings) -> None:
        print("Worker running. Ctrl-C to stop.", flush=True)
        await _until_stopped()

    from perennial.client.app import app_dev_services

    async with app_dev_services(settings) as settings:  # the application's local stand-ins
        await _with_runtime(settings, args.headless, body, gateway=not args.no_gateway)


async def cmd_demo(args: argparse.Namespace, settings: Settings) -> None:
    from perennial.client.demo import delete_state, run_demo
    from perennial.client.local_model import local_model_if_needed

    if args.fresh:
        deleted = delete_state(settings)
        wal = " and its WAL files" if len(deleted) > 1 else ""
        done = f"deleted {settings.database}{wal}" if deleted else "no database to delete"
        print(f"Fresh start: {done}", flush=True)

    async def body(s: Settings) -> None:
        await run_demo(s, gateway=None if args.no_gateway else f"http://{s.gateway_host}:{s.gateway_port}")
        if args.exit:
            running = ["server"] * s.embedded + ["worker"] + ["gateway"] * (not args.no_gateway)
            stopped = ", ".join(running[:-1]) + f" and {running[-1]}"
            again = "dev" if s.embedded or not args.no_gateway else "worker"
            print(f"\nThe {stopped} stop here (--exit). For the commands above, run "
                  f"`{venv_command('perennial')} {again}` in another terminal first.")  # fmt: skip
            return
        print("\nThey keep running; try the commands above. Ctrl-C stops.")
        await _until_stopped()

    from perennial.client.app import app_dev_services

    # No model endpoint configured: the optional tiny local model, if it is installed.
    async with local_model_if_needed(settings) as settings, app_dev_services(settings) as settings:
        await _with_runtime(settings, args.headless, body, gateway=not args.no_gateway)
