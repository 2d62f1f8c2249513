"""The gateway's ASGI application: HTTP, SSE and WebSocket in front of the Python client.

    GET  /health                                   Temporal reachable, workers polling
    GET  /agent-types                              the types served, with their callable methods
    GET  /agents?type=&status=&all=                agents (visibility API)
    POST /agents/{type}/{name}/messages            202 {"id"}: into the inbox, creating it
    POST /agents/{type}/{name}/ask                 {"id", "reply", "version"}; or the turn as SSE
                                                   (Accept: text/event-stream; Last-Event-ID resumes)
    POST /agents/{type}/{name}/stop                {"reason"?, "turn"?}: stop the running turn
    POST /agents/{type}/{name}/call/{method}       {"id", "method", "result", "version"}
    GET  /agents/{type}/{name}/state               the `state` query's view
    POST /agents/{type}/{name}/sql                 {"query", "params", "max_rows"}: a read-only
                                                   query's {"columns", "rows", "truncated"}
    GET  /agents/{type}/{name}/events?after=&limit=  a page, or SSE (Accept: text/event-stream)
    POST /agents/{type}/{name}/rollback            {"version"}
    POST /agents/{type}/{name}/fork                {"name", "version"?, "with_schedules"?}
    GET  /agents/{type}/{name}/export?version=&with_schedules=  an export file (JSON)
    POST /agents/import?name=                      an export file as the body: start it
    GET|POST /agents/{type}/{name}/schedules, DELETE .../schedules/{id}
    GET  /agents/{type}/{name}/approvals, POST .../approvals/{id} {"approve", "comment"}
    WS   /agents/{type}/{name}/ws?after=           state + patches + events; ask/send/call

Every agent route checks the caller's scope for the agent (read, write or decide); clients
never write state: it changes only through the agent's turns.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import structlog
from fastapi import Body, FastAPI, Query, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.service import RPCError

from perennial.client.agents import AgentHandle, Perennial
from perennial.client.gateway.auth import Action, Authenticator, Principal
from perennial.client.gateway.errors import BodyTooLarge, classify
from perennial.client.gateway.extensions import include_app_routes
from perennial.client.gateway.hub import Hub, Subscriber, SubscriberTooSlow, follow
from perennial.client.gateway.models import (
    Accepted,
    AgentList,
    AgentTypeInfo,
    AgentTypes,
    AskBody,
    CallBody,
    DecideBody,
    ErrorBody,
    ForkBody,
    Health,
    MessageBody,
    MethodInfo,
    RollbackBody,
    StopBody,
)
from perennial.client.gateway.socket import serve_socket
from perennial.client.gateway.streams import KEEPALIVE, ask_events, with_keepalives
from perennial.client.settings import Settings
from perennial.client.transfer import (
    TransferResult,
    check_bundle,
    export_text,
    read_export,
    start_from_export,
)
from perennial.workflows.errors import InvalidRequest, PerennialError, UnknownAgentType
from perennial.workflows.messages import (
    AskReply,
    Decision,
    EventsPage,
    PendingApproval,
    RollbackResult,
    Schedule,
    ScheduleRequest,
    ScheduleResult,
    SqlBlob,
    SqlRequest,
    SqlRows,
    StateView,
    StopResult,
)
from perennial.workflows.registry import agent_types

log = structlog.get_logger("perennial.gateway")

STATIC = Path(__file__).parent / "static"
#: A poller seen this recently counts as a live worker (a worker's long poll lasts ~70 s).
POLLER_FRESH = timedelta(seconds=90)
#: An SSE stream sends a comment this often, so proxies keep an idle stream open.
KEEPALIVE_SECONDS = 15.0

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody} for status in (400, 401, 403, 404, 409, 413, 429, 500, 503, 504)
}


class Gateway:
    """What the routes share: the client, the watchers, the authenticator."""

    def __init__(self, settings: Settings, perennial: Perennial, auth: Authenticator) -> None:
        self.settings = settings
        self.perennial = perennial
        self.auth = auth
        self.hub = Hub(perennial, max_unapplied=settings.gateway_max_unapplied)
        #: Set when the server is shutting down: streams and sockets end.
        self.closing = asyncio.Event()

    def principal(self, request: Request | WebSocket) -> Principal:
        return self.auth.authenticate(
            request.headers.get("authorization"), request.query_params.get("access_token")
        )

    def agent(self, principal: Principal, action: Action, agent_type: str, name: str) -> AgentHandle:
        """The handle of an agent the caller may act on (UnknownAgentType, Forbidden)."""
        if agent_type not in agent_types():
            known = ", ".join(sorted(agent_types())) or "none"
            raise UnknownAgentType(f"no agent type {agent_type[:100]!r} here (known: {known})")
        self.auth.authorize(principal, action, agent_type, name)
        return self.hub.handle(agent_type, name)


def create_app(settings: Settings, perennial: Perennial, auth: Authenticator) -> FastAPI:
    """The gateway for `settings`, on a connected client."""
    gateway = Gateway(settings, perennial, auth)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        gateway.closing.set()
        await gateway.hub.close()

    app = FastAPI(
        title="Perennial gateway",
        summary="Durable agents on Temporal over HTTP, SSE and WebSocket",
        lifespan=lifespan,
        responses=_ERRORS,
    )
    app.state.gateway = gateway
    _install_errors(app)
    _add_agent_routes(app, gateway)
    _add_service_routes(app, gateway)
    include_app_routes(app, gateway)  # an application's own routes (gateway_routes)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(_BodyLimit, max_bytes=settings.gateway_max_body_bytes)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(settings.gateway_cors_origins),
        allow_methods=["GET", "POST", "DELETE"],
        allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
        expose_headers=["Retry-After"],
    )
    app.add_middleware(_AccessLog)
    return app


def _install_errors(app: FastAPI) -> None:
    async def typed(_: Request, err: Exception) -> Response:
        status, body, headers = classify(err)
        return JSONResponse(body, status_code=status, headers=headers)

    async def invalid(_: Request, err: Exception) -> Response:
        assert isinstance(err, RequestValidationError)
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}"[:120]
            for e in err.errors()[:3]
        )
        body = {"error": {"type": InvalidRequest.__name__, "message": problems}}
        return JSONResponse(body, status_code=400)

    app.add_exception_handler(RequestValidationError, invalid)
    # Ours and Temporal's are answered here; anything else too, but Starlette logs it as a bug.
    for kind in (PerennialError, RPCError, Exception):
        app.add_exception_handler(kind, typed)


def _add_service_routes(app: FastAPI, gateway: Gateway) -> None:
    @app.get("/health", response_model=Health, responses={503: {"model": Health}})
    async def health() -> Response:
        """200 when Temporal answers and a worker polls the task queue, else 503."""
        settings = gateway.settings
        request = DescribeTaskQueueRequest(
            namespace=settings.namespace,
            task_queue=TaskQueue(name=settings.task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
        try:
            described = await gateway.perennial.client.workflow_service.describe_task_queue(
                request, timeout=timedelta(seconds=5)
            )
        except Exception as err:  # any failure here means: Temporal is not answering
            body = Health(status="unavailable", temporal="unreachable", workers=0,
                          reason=f"{type(err).__name__}: {err}"[:300])  # fmt: skip
            return JSONResponse(body.model_dump(), status_code=503)
        fresh = datetime.now(UTC) - POLLER_FRESH
        workers = {p.identity for p in described.pollers
                   if p.last_access_time.ToDatetime(UTC) >= fresh}  # fmt: skip
        if not workers:
            body = Health(status="unavailable", temporal="ok", workers=0,
                          reason=f"no worker polls task queue {settings.task_queue!r}")  # fmt: skip
            return JSONResponse(body.model_dump(), status_code=503)
        return JSONResponse(Health(status="ok", temporal="ok", workers=len(workers)).model_dump())

    @app.get("/agent-types", response_model=AgentTypes)
    async def list_types(request: Request) -> AgentTypes:
        """The agent types this gateway serves, with their callable methods."""
        gateway.principal(request)
        return AgentTypes(types=[_type_info(name, cls) for name, cls in sorted(agent_types().items())])

    @app.get("/agents", response_model=AgentList)
    async def list_agents(
        request: Request,
        type: str | None = None,
        status: str | None = None,
        all: bool = False,
        limit: int = Query(default=100, ge=1, le=1000),
    ) -> AgentList:
        """Agents from the visibility API (running ones unless `all`), those the caller may read."""
        principal = gateway.principal(request)
        found = await gateway.perennial.list_agents(
            agent_type=type, status=status, running_only=not all, limit=limit
        )
        return AgentList(agents=[a for a in found if principal.allows("read", a.agent_type, a.name)])

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")


def _type_info(name: str, cls: type) -> AgentTypeInfo:
    methods = getattr(cls, "callable_methods", {})
    return AgentTypeInfo(
        name=name,
        description=(cls.__doc__ or "").strip().split("\n\n")[0] or None,
        callable_methods=[
            MethodInfo(name=m.name, description=m.description,
                       parameters=m.parameters_schema, returns=m.returns_schema)  # fmt: skip
            for m in methods.values()
        ],
    )


def _add_agent_routes(app: FastAPI, gateway: Gateway) -> None:  # noqa: C901 (one route each)
    prefix = "/agents/{agent_type}/{name}"

    def handle(request: Request, action: Action, agent_type: str, name: str) -> AgentHandle:
        return gateway.agent(gateway.principal(request), action, agent_type, name)

    @app.post(f"{prefix}/messages", status_code=202, response_model=Accepted)
    async def send(request: Request, agent_type: str, name: str, body: MessageBody) -> Accepted:
        """Into the agent's inbox (created if needed); applied in its turn."""
        agent = handle(request, "write", agent_type, name)
        message_id = body.id or str(uuid.uuid4())
        await gateway.hub.paced(agent_type, name, message_id, lambda: agent.send(
            body.text, sender=body.sender, id=message_id, data=body.data, on_busy=body.on_busy
        ), until_applied=True)  # fmt: skip
        return Accepted(id=message_id)

    @app.post(f"{prefix}/ask", response_model=AskReply, responses={200: {"content": {
        "text/event-stream": {"schema": {"type": "string", "description": "the turn's items"}}
    }}})  # fmt: skip
    async def ask(
        request: Request, agent_type: str, name: str, body: AskBody
    ) -> AskReply | Response:
        """A message, and the agent's reply once its turn is committed; with `Accept:
        text/event-stream`, the turn as it is written (see `gateway.streams`)."""
        agent = handle(request, "write", agent_type, name)
        if "text/event-stream" in request.headers.get("accept", ""):
            return ask_events(gateway, agent, body, keepalive=KEEPALIVE_SECONDS,
                              last_event_id=request.headers.get("last-event-id"))  # fmt: skip
        message_id = body.id or str(uuid.uuid4())
        return await gateway.hub.paced(agent_type, name, message_id, lambda: agent.ask(
            body.text, sender=body.sender, id=message_id, data=body.data, timeout=body.timeout,
            on_busy=body.on_busy,
        ))  # fmt: skip

    @app.post(f"{prefix}/stop", response_model=StopResult)
    async def stop(
        request: Request, agent_type: str, name: str, body: StopBody | None = None
    ) -> StopResult:
        """Stop the running turn (only if it is `turn`); its caller gets 409 TurnStopped."""
        body = body or StopBody()
        agent = handle(request, "write", agent_type, name)
        return await agent.stop(reason=body.reason, turn=body.turn)

    @app.post(f"{prefix}/call/{{method}}")
    async def call(
        request: Request, agent_type: str, name: str, method: str, body: CallBody
    ) -> Any:
        """Call one of the agent type's callable methods (a turn, like a message)."""
        agent = handle(request, "write", agent_type, name)
        call_id = body.id or str(uuid.uuid4())
        return await gateway.hub.paced(agent_type, name, call_id, lambda: agent.call(
            method, body.args, id=call_id, sender=body.sender, timeout=body.timeout
        ))  # fmt: skip

    @app.get(f"{prefix}/state", response_model=StateView)
    async def state(request: Request, agent_type: str, name: str) -> StateView:
        return await handle(request, "read", agent_type, name).state_view()

    @app.post(f"{prefix}/sql", response_model=SqlRows)
    async def sql(request: Request, agent_type: str, name: str, body: SqlRequest) -> SqlRows:
        """One read-only statement on the agent's database (400 SqlReadOnly for a write)."""
        agent = handle(request, "read", agent_type, name)
        params = [p.data if isinstance(p, SqlBlob) else p for p in body.params]
        return await agent.sql(body.query, *params, max_rows=body.max_rows)

    @app.get(f"{prefix}/events", response_model=EventsPage)
    async def events(
        request: Request,
        agent_type: str,
        name: str,
        after: int = Query(default=0, ge=0),
        limit: int | None = Query(default=None, ge=1, le=1000),
    ) -> Response:
        """A page of events after `after`; with `Accept: text/event-stream`, the events after
        `after` (or the `Last-Event-ID`) live, each with `id: <offset>`."""
        agent = handle(request, "read", agent_type, name)
        if "text/event-stream" in request.headers.get("accept", ""):
            resume = request.headers.get("last-event-id", "")
            start = int(resume) if resume.isdigit() else after
            return StreamingResponse(
                _sse(gateway, agent_type, name, start),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        page = await agent.events(after=after, limit=limit)
        return JSONResponse(page.model_dump(mode="json"))

    @app.post(f"{prefix}/rollback", response_model=RollbackResult)
    async def rollback(
        request: Request, agent_type: str, name: str, body: RollbackBody
    ) -> RollbackResult:
        """Restore a kept version (itself a new version)."""
        return await handle(request, "write", agent_type, name).rollback(body.version)

    @app.post(f"{prefix}/fork", response_model=TransferResult)
    async def fork(request: Request, agent_type: str, name: str, body: ForkBody) -> TransferResult:
        """A new agent from this one's state (write scope on both); 409 if it exists."""
        principal = gateway.principal(request)
        source = gateway.agent(principal, "write", agent_type, name)
        target = gateway.agent(principal, "write", agent_type, body.name)
        bundle = await source.export(version=body.version, with_schedules=body.with_schedules)
        return await start_from_export(gateway.perennial.client, bundle, name=target.name,
                                       task_queue=gateway.settings.task_queue, kind="forked")  # fmt: skip

    @app.get(f"{prefix}/export")
    async def export(
        request: Request,
        agent_type: str,
        name: str,
        version: int | None = Query(default=None, ge=0),
        with_schedules: bool = False,
    ) -> Response:
        """The agent as an export file: kept versions (or `version`), schedules if asked."""
        agent = handle(request, "read", agent_type, name)
        bundle = await agent.export(version=version, with_schedules=with_schedules)
        return Response(export_text(bundle), media_type="application/json")

    @app.post("/agents/import", response_model=TransferResult)
    async def import_agent(
        request: Request, body: Annotated[dict[str, Any], Body()], name: str | None = None
    ) -> TransferResult:
        """Start an agent from an export file (the body) as `{its type}/{name}` (default: the
        source's name); write scope on it; 409 if it exists."""
        principal = gateway.principal(request)  # who asks, before what the body says
        bundle = read_export(body)
        target = gateway.agent(principal, "write", bundle.agent_type,
                               name or bundle.source_id.partition("/")[2])  # fmt: skip
        check_bundle(bundle, agent_types()[bundle.agent_type])
        return await start_from_export(gateway.perennial.client, bundle, name=target.name,
                                       task_queue=gateway.settings.task_queue, kind="imported")  # fmt: skip

    @app.get(f"{prefix}/schedules", response_model=list[Schedule])
    async def schedules(request: Request, agent_type: str, name: str) -> list[Schedule]:
        return await handle(request, "read", agent_type, name).schedules()

    @app.post(f"{prefix}/schedules", response_model=ScheduleResult)
    async def schedule(
        request: Request, agent_type: str, name: str, body: Annotated[dict[str, Any], Body()]
    ) -> ScheduleResult:
        """Create or replace a schedule (the body is a ScheduleRequest)."""
        agent = handle(request, "write", agent_type, name)
        fields = {"created_by": "gateway", **body}
        unknown = set(fields) - set(ScheduleRequest.model_fields)
        if unknown:
            raise InvalidRequest(f"unknown schedule fields: {', '.join(sorted(unknown))[:200]}")
        return await agent.schedule(**fields)

    @app.delete(f"{prefix}/schedules/{{schedule_id}}", response_model=Schedule)
    async def unschedule(request: Request, agent_type: str, name: str, schedule_id: str) -> Schedule:
        return await handle(request, "write", agent_type, name).cancel_schedule(schedule_id)

    @app.get(f"{prefix}/approvals", response_model=list[PendingApproval])
    async def approvals(request: Request, agent_type: str, name: str) -> list[PendingApproval]:
        return await handle(request, "read", agent_type, name).approvals()

    @app.post(f"{prefix}/approvals/{{approval_id}}", response_model=Decision)
    async def decide(
        request: Request, agent_type: str, name: str, approval_id: str, body: DecideBody
    ) -> Decision:
        """Approve or reject a pending call; the first decision wins (409 after it)."""
        principal = gateway.principal(request)
        agent = gateway.agent(principal, "decide", agent_type, name)
        return await agent.decide(
            approval_id, approve=body.approve, comment=body.comment,
            decided_by=body.decided_by or (principal.name if principal.via != "open" else "gateway"),
        )  # fmt: skip

    @app.websocket(f"{prefix}/ws")
    async def socket(websocket: WebSocket, agent_type: str, name: str) -> None:
        await serve_socket(gateway, websocket, agent_type, name)


async def _sse(gateway: Gateway, agent_type: str, name: str, after: int) -> AsyncIterator[str]:
    async with gateway.hub.use(agent_type, name) as watcher:
        frames = with_keepalives(
            follow(watcher, Subscriber(events=True, state=False), after=after),
            KEEPALIVE_SECONDS, until=gateway.closing,
        )  # fmt: skip
        try:
            async for frame in frames:
                if frame is None:
                    yield KEEPALIVE
                elif frame.kind == "event":
                    yield f"id: {frame.offset}\nevent: event\ndata: {frame.event}\n\n"
                elif frame.kind == "events_missed":
                    yield f"id: {frame.offset}\nevent: events_missed\ndata: {frame.data}\n\n"
        except SubscriberTooSlow:
            return  # the client reconnects with Last-Event-ID and gets the rest
        finally:
            await frames.aclose()


class _BodyLimit:
    """413 for a request body over the limit, declared or streamed."""

    def __init__(self, app: Any, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        # Read here, up to the limit, and replayed: a framework that parses the body itself
        # would turn an error raised while reading into its own 400.
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()  # type: ignore[no-any-return]
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    def _text(self) -> str:
        return f"the request body is larger than {self.max_bytes} bytes (gateway_max_body_bytes)"

    async def _refuse(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        status, body, _ = classify(BodyTooLarge(self._text()))
        await JSONResponse(body, status_code=status)(scope, receive, send)


class _AccessLog:
    """One log line per request: method, path (never the query: it may hold a token),
    status and time."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            log.info("request", method=scope["method"], path=scope["path"], status=status,
                     ms=round((time.perf_counter() - started) * 1000, 1))  # fmt: skip


__all__ = ["Gateway", "create_app"]
