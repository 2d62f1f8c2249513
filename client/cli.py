"""`perennial`: run the server and worker, and talk to agents from a shell.

    perennial init my-app                 a new application: an agent type, its tests, a README
    perennial dev                         embedded Temporal server + worker + gateway (Ctrl-C stops)
    perennial gateway [--host H] [--port P]  agents over HTTP, SSE and WebSocket (web apps)
    perennial codec-server [--port P]     the Web UI decrypts encrypted payloads through it
    perennial server | worker             each on its own
    perennial demo [--exit] [--fresh]     dev, plus agents talking (--fresh: start over)
    perennial send notes/alice "buy milk"
    perennial ask notes/alice "what now?" [--stream] [--on-busy reject]
    perennial stop assistant/alice [--reason R] [--turn ID]   stop the turn it is running
    perennial call cart/home add_item --arg sku=apple --arg qty=2
    perennial state notes/alice
    perennial sql notes/alice "SELECT * FROM items WHERE qty > ?" --param 2
    perennial events notes/alice --follow
    perennial list --type notes
    perennial usage [--type assistant]  what LLM agents' model calls spent, and budgets left
    perennial replay FILE... | --query    before a deploy: do the histories replay?
    perennial rollback notes/alice 3
    perennial recover notes/alice        bring back an agent whose run was terminated or failed
    perennial fork notes/alice bob [--version 3] [--with-schedules]   a new agent from alice's state
    perennial export notes/alice > alice.json     state, kept versions (and --with-schedules)
    perennial import alice.json [--name carol]    start it again (here, or on another server)
    perennial schedule notes/alice --id standup --payload "stand up" --every 3600
    perennial schedules notes/alice
    perennial unschedule notes/alice standup
    perennial approvals [assistant/alice]  calls waiting for a person (all agents, or one)
    perennial decide assistant/alice appr-1a2b --approve|--reject [--comment "why"]

`--app MODULE[,MODULE]` (or PERENNIAL_APP) loads an application's agent types first; any
agent type is reachable without it, untyped. Human-readable output by default, `--json` for
scripts (errors then go to stderr as {"error": {"type", "message"}}). Exit status: 0 ok, 1
the agent could not do it (RunError), 2 the request was wrong (UsageError).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from perennial.client.settings import Settings

# Only the standard library at import time: the commands (and Temporal, pydantic) are
# imported once the arguments are parsed, so `perennial --help` answers at once.


def _add_common_options(
    parser: argparse.ArgumentParser, default: object = None, *, skip: tuple[str, ...] = ()
) -> None:
    """The options every command takes, before or after the command's name (`skip`: those a
    command uses for itself, e.g. a server's own `--port`)."""
    parser.add_argument(
        "--json", action="store_true", default=default or False,
        help="machine-readable output (errors too)",
    )  # fmt: skip
    for flag, kind, text in _COMMON_OPTIONS:
        if flag not in skip:
            parser.add_argument(flag, type=kind, default=default, help=text)


#: `workflows.messages.BusyPolicy` (spelled out: only the standard library is imported here).
BUSY_POLICIES = ("queue", "interrupt", "steer", "merge", "reject")

#: (flag, type, help) of the options every command takes (besides --json).
_COMMON_OPTIONS: tuple[tuple[str, type, str], ...] = (
    ("--app", str, "application modules to load, MODULE[,MODULE] (env PERENNIAL_APP)"),
    ("--address", str, "Temporal server host:port (env TEMPORAL_ADDRESS)"),
    ("--namespace", str, "Temporal namespace (env TEMPORAL_NAMESPACE)"),
    ("--task-queue", str, "task queue (env PERENNIAL_TASK_QUEUE)"),
    ("--state-dir", Path, "embedded server state (.perennial)"),
    ("--db", Path, "embedded server SQLite file"),
    ("--port", int, "embedded server gRPC port (7233)"),
    ("--ui-port", int, "embedded Web UI port (gRPC port + 1000)"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="perennial", description=__doc__.split("\n")[0])
    _add_common_options(parser)
    # The same options after a command's name (`perennial dev --app myapp`): suppressed
    # defaults, so what was given before the name is kept.
    common = argparse.ArgumentParser(add_help=False)
    _add_common_options(common, default=argparse.SUPPRESS)
    # A service's `--port` after its name is its own (`perennial gateway --port 8001`).
    service = argparse.ArgumentParser(add_help=False)
    _add_common_options(service, default=argparse.SUPPRESS, skip=("--port",))
    sub = _Commands(parser.add_subparsers(dest="command", required=True), common, service)

    for name, fn, helptext in (
        ("server", "cmd_server", "run the embedded Temporal dev server"),
        ("dev", "cmd_dev", "run the embedded server, a worker and the gateway"),
        ("demo", "cmd_demo", "run the server, a worker and the gateway; show agents talking"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--headless", action="store_true", help="no Web UI")
        if name != "server":
            p.add_argument("--no-gateway", action="store_true", help="do not start the gateway")
        if name == "demo":
            p.add_argument("--exit", action="store_true", help="stop after the demo")
            p.add_argument(
                "--fresh",
                action="store_true",
                help="delete the embedded server's database first (start over)",
            )
        p.set_defaults(command_fn=fn)
    sub.add_parser("worker", help="run a worker").set_defaults(command_fn="cmd_worker")

    p = sub.add_parser("gateway", service=True, help="serve agents over HTTP, SSE and WebSocket")
    p.add_argument("--host", help="address to listen on (127.0.0.1; env PERENNIAL_GATEWAY_HOST)")
    p.add_argument("--port", dest="gateway_port", type=int,
                   help="port to listen on (8000; env PERENNIAL_GATEWAY_PORT)")  # fmt: skip
    p.set_defaults(command_fn="cmd_gateway")

    p = sub.add_parser("codec-server", service=True,
                       help="decrypt payloads for the Web UI (Temporal's codec protocol)")  # fmt: skip
    p.add_argument("--host", dest="codec_host",
                   help="address to listen on (127.0.0.1; env PERENNIAL_CODEC_HOST)")  # fmt: skip
    p.add_argument("--port", dest="codec_port", type=int,
                   help="port to listen on (8081; env PERENNIAL_CODEC_PORT)")  # fmt: skip
    p.add_argument("--new-key", metavar="ID",
                   help="print a new key file line `ID:base64-key` and exit")  # fmt: skip
    p.set_defaults(command_fn="cmd_codec_server")

    for name, fn in (("send", "cmd_send"), ("ask", "cmd_ask")):
        p = sub.add_parser(name, help=f"{name} a message (creates the agent if needed)")
        p.add_argument("agent", help="TYPE/NAME, like notes/alice")
        p.add_argument("text")
        p.add_argument("--sender")
        p.add_argument("--id", help="message id (a repeated id is applied once)")
        p.add_argument("--data", help="JSON data to attach")
        p.add_argument("--on-busy", choices=BUSY_POLICIES,
                       help="if a turn is running: queue, interrupt it, steer it, merge, reject")  # fmt: skip
        if name == "ask":
            p.add_argument("--timeout", type=float, default=60.0, help="seconds (60)")
            p.add_argument("--stream", action="store_true",
                           help="print the reply as it is written (--json: one line per item)")  # fmt: skip
        p.set_defaults(command_fn=fn)

    p = sub.add_parser("stop", help="stop the turn an agent is running (its asker: TurnStopped)")
    p.add_argument("agent")
    p.add_argument("--reason", help="recorded in the event log")
    p.add_argument("--turn", metavar="ID", help="only if the running turn is this message id's")
    p.set_defaults(command_fn="cmd_stop")

    p = sub.add_parser("call", help="call a callable method (creates the agent if needed)")
    p.add_argument("agent", help="TYPE/NAME, like cart/home")
    p.add_argument("method")
    p.add_argument(
        "--arg", action="append", default=[], metavar="NAME=VALUE",
        help="one argument, repeatable; VALUE is read as JSON if it is JSON, else as a string",
    )  # fmt: skip
    p.add_argument("--args", metavar="JSON", help="the arguments as one JSON object")
    p.add_argument("--sender")
    p.add_argument("--id", help="call id (a repeated id is applied once)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds (60)")
    p.set_defaults(command_fn="cmd_call")

    p = sub.add_parser("state", help="show an agent's state and version")
    p.add_argument("agent")
    p.set_defaults(command_fn="cmd_state")

    p = sub.add_parser("sql", help="run a read-only SQL query on an agent's database")
    p.add_argument("agent")
    p.add_argument("query", help='one statement, like "SELECT * FROM items WHERE qty > ?"')
    p.add_argument(
        "--param", action="append", default=[], metavar="VALUE",
        help="a ? value, repeatable; read as a JSON number, true/false or null if it is one, "
        "else as text",
    )  # fmt: skip
    p.add_argument("--max-rows", type=int, default=100, help="at most this many rows (100)")
    p.set_defaults(command_fn="cmd_sql")

    p = sub.add_parser("events", help="show (or --follow) an agent's event log")
    p.add_argument("agent")
    p.add_argument("--after", type=int, default=0, help="only events after this offset")
    p.add_argument("--limit", type=int)
    p.add_argument("--follow", "-f", action="store_true", help="keep following, live")
    p.set_defaults(command_fn="cmd_events")

    p = sub.add_parser("rollback", help="restore a kept version")
    p.add_argument("agent")
    p.add_argument("version", type=int)
    p.set_defaults(command_fn="cmd_rollback")

    p = sub.add_parser("fork", help="start a new agent from another's state (it is not touched)")
    p.add_argument("agent", help="TYPE/NAME of the source")
    p.add_argument("new_name", help="the new agent's NAME (same type)")
    p.add_argument("--version", type=int, help="a kept version (default: the current one)")
    p.add_argument("--with-schedules", action="store_true", help="copy its schedules too")
    p.set_defaults(command_fn="cmd_fork")

    p = sub.add_parser("export", help="print an agent as an export file (JSON) on stdout")
    p.add_argument("agent")
    p.add_argument("--version", type=int, help="only this kept version (default: all kept)")
    p.add_argument("--with-schedules", action="store_true", help="include its schedules")
    p.set_defaults(command_fn="cmd_export")

    p = sub.add_parser("import", help="start an agent from an export file (`-`: stdin)")
    p.add_argument("file", type=Path)
    p.add_argument("--name", help="NAME (or TYPE/NAME, TYPE the file's) (default: the source's)")
    p.set_defaults(command_fn="cmd_import")

    p = sub.add_parser("recover", help="bring back an agent whose run was terminated or failed")
    p.add_argument("agent")
    p.set_defaults(command_fn="cmd_recover")

    p = sub.add_parser("schedule", help="create or replace a schedule (creates the agent)")
    p.add_argument("agent")
    p.add_argument("--id", required=True, help="schedule id (an existing id is replaced)")
    p.add_argument("--payload", required=True, help="what the agent is woken with")
    timing = p.add_mutually_exclusive_group(required=True)
    timing.add_argument("--after", type=float, metavar="SECONDS", help="once, after a delay")
    timing.add_argument("--at", metavar="ISO", help="once, at an ISO-8601 time")
    timing.add_argument("--every", type=float, metavar="SECONDS", help="recurring interval")
    timing.add_argument("--cron", metavar="EXPR", help="recurring, 5 fields (or 6, seconds last)")
    p.add_argument("--timezone", metavar="TZ", help="IANA zone for --cron / a naive --at (UTC)")
    p.add_argument("--created-by", default="cli", help="recorded with the schedule (cli)")
    p.set_defaults(command_fn="cmd_schedule")

    p = sub.add_parser("schedules", help="list an agent's pending schedules")
    p.add_argument("agent")
    p.set_defaults(command_fn="cmd_schedules")

    p = sub.add_parser("unschedule", help="cancel a schedule")
    p.add_argument("agent")
    p.add_argument("id")
    p.set_defaults(command_fn="cmd_unschedule")

    p = sub.add_parser("approvals", help="list calls waiting for a person's approval")
    p.add_argument("agent", nargs="?", help="TYPE/NAME (default: every waiting agent)")
    p.set_defaults(command_fn="cmd_approvals")

    p = sub.add_parser("decide", help="approve or reject a pending call (first decision wins)")
    p.add_argument("agent")
    p.add_argument("id", help="the approval id")
    verdict = p.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--approve", dest="approve", action="store_true")
    verdict.add_argument("--reject", dest="approve", action="store_false")
    p.add_argument("--comment")
    p.add_argument("--by", default="cli", help="who decides (recorded; cli)")
    p.set_defaults(command_fn="cmd_decide")

    p = sub.add_parser("init", help="start a new application: an agent type, its tests, README")
    p.add_argument("directory", type=Path)
    p.set_defaults(command_fn="cmd_init")

    p = sub.add_parser(
        "replay",
        help="replay histories on this code before a deploy (finds non-determinism)",
        description="Replay exported histories (FILE: `temporal workflow show --output json` "
        "or a saved {workflow_id, history}) or, with --query, the agents on the server: the "
        "latest run of each (runs that continued as new are left out), as a worker replays "
        "them after a deploy. Exit 1 if any history does not replay.",
    )
    p.add_argument("files", nargs="*", type=Path, metavar="FILE", help="exported histories")
    p.add_argument(
        "--query",
        nargs="?",
        const="",
        help="visibility query, running and closed agents (alone: AgentType IS NOT NULL)",
    )
    p.add_argument("--limit", type=int, default=100, help="at most this many agents (100)")
    p.set_defaults(command_fn="cmd_replay")

    p = sub.add_parser("list", help="list agents (visibility API)")
    p.add_argument("--type")
    p.add_argument("--status")
    p.add_argument("--all", action="store_true", help="include agents that are not running")
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(command_fn="cmd_list")

    p = sub.add_parser("usage", help="tokens and cost LLM agents spent, and their budgets")
    p.add_argument("--type", help="one agent type")
    p.add_argument("--all", action="store_true", help="include agents that are not running")
    p.add_argument("--limit", type=int, default=1000, help="at most this many agents (1000)")
    p.set_defaults(command_fn="cmd_usage")
    return parser


class _Commands:
    """The subparsers, each taking the common options too."""

    def __init__(self, actions: argparse._SubParsersAction[argparse.ArgumentParser],
                 common: argparse.ArgumentParser, service: argparse.ArgumentParser) -> None:  # fmt: skip
        self._actions = actions
        self._common = common
        self._service = service

    def add_parser(self, name: str, *, service: bool = False, **kwargs: object) -> argparse.ArgumentParser:
        """A command; `service`: one with its own `--port` (the common ones but that)."""
        parent = self._service if service else self._common
        return self._actions.add_parser(name, parents=[parent], **kwargs)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from perennial.client.logging import configure_logging
    from perennial.client.process import exit_process
    from perennial.client.settings import Settings

    settings = Settings.from_env(
        temporal_address=args.address,
        namespace=args.namespace,
        task_queue=args.task_queue,
        state_dir=args.state_dir,
        db_filename=args.db,
        server_port=args.port,
        ui_port=args.ui_port,
        app=args.app,
        gateway_host=getattr(args, "host", None),
        gateway_port=getattr(args, "gateway_port", None),
        codec_host=getattr(args, "codec_host", None),
        codec_port=getattr(args, "codec_port", None),
    )
    quiet = args.command == "demo" and "log_level" not in settings.model_fields_set
    configure_logging(
        fmt=settings.log_format,
        level="WARNING" if quiet else settings.log_level,
        secrets=settings.secrets,
    )
    exit_process(_run(args, settings))


def _run(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from perennial.client import commands
    from perennial.client.app import load_app
    from perennial.client.server import ServerError
    from perennial.workflows.errors import PerennialError, UsageError

    try:
        load_app(settings)
        asyncio.run(getattr(commands, args.command_fn)(args, settings))
    except KeyboardInterrupt:
        return 130
    except UsageError as err:
        return _error(args, err, 2)
    except (PerennialError, ServerError) as err:
        return _error(args, err, 1)
    except RuntimeError as err:  # e.g. cannot connect to the server
        return _error(args, err, 1)
    return 0


def _error(args: argparse.Namespace, err: Exception, status: int) -> int:
    """Report an error on stderr (JSON with `--json`) and return the exit status."""
    if args.json:
        print(json.dumps({"error": {"type": type(err).__name__, "message": str(err)}}),
              file=sys.stderr)  # fmt: skip
    else:
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
    return status


if __name__ == "__main__":
    main()
