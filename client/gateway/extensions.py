"""Application routes on the gateway: an application module serves HTTP routes of its own.

A module named by `--app` (or `PERENNIAL_APP`) may define

    def gateway_routes(context: GatewayContext) -> fastapi.APIRouter:
        router = APIRouter()

        @router.post("/chat")
        async def chat(request: Request, body: ChatBody) -> ChatReply:
            agent = context.agent(request, "write", "conversation", body.session_id)
            return await context.paced(agent, lambda: agent.ask(body.message))

        return router

and the gateway (`perennial gateway`, `perennial dev`, the tests' `GatewayServer`) includes the
router when it starts, after its own routes. The context gives the routes what the gateway's own
routes use: the connected client, the settings, the caller's identity and scopes (`principal`,
`agent`: the same tokens and scopes as every other route), and the edge's backpressure
(`paced`). Errors raised in an application route are answered like the gateway's own:
`{"error": {"type", "message"}}` with the status of the error's class (an application error
that subclasses `AgentNotFound` is a 404, `UsageError` a 400, ...).

An application route cannot take the place of a gateway route: a route with the method and
path of one of the gateway's, or under its `/agents/` and `/static/` prefixes, stops the
gateway at start with `ExtensionConflict`, as does a `gateway_routes` that does not return an
`APIRouter`.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from fastapi import APIRouter, FastAPI, Request, WebSocket
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute

from perennial.client.agents import AgentHandle, Perennial
from perennial.client.gateway.auth import Action, Principal
from perennial.client.settings import Settings
from perennial.workflows.errors import UsageError

if TYPE_CHECKING:
    from perennial.client.gateway.app import Gateway

T = TypeVar("T")

#: The module-level function of an application module that returns its routes.
HOOK = "gateway_routes"
#: Path prefixes that belong to the gateway (its agent routes and its static files).
RESERVED_PREFIXES = ("/agents/", "/static/")


class ExtensionConflict(UsageError):
    """An application's gateway routes cannot be served: one takes a gateway route's method
    and path (or a reserved prefix), or `gateway_routes` returned something else than an
    `APIRouter`."""


@dataclass(frozen=True)
class GatewayContext:
    """What an application's routes get from the gateway (see the module docstring)."""

    #: The gateway's connected client (its task queue is the settings').
    perennial: Perennial
    settings: Settings
    _gateway: Gateway

    def principal(self, request: Request | WebSocket) -> Principal:
        """Who calls (`Unauthorized` without valid credentials; everyone when open)."""
        return self._gateway.principal(request)

    def authorize(self, principal: Principal, action: Action, agent_type: str, name: str) -> None:
        """Pass if `principal` may do `action` (read, write, decide) on `agent_type/name`
        (`Forbidden` otherwise)."""
        self._gateway.auth.authorize(principal, action, agent_type, name)

    def agent(
        self, request: Request | WebSocket, action: Action, agent_type: str, name: str
    ) -> AgentHandle:
        """The handle of an agent the caller may act on, checked like every gateway route
        (`Unauthorized`, `Forbidden`, `UnknownAgentType`)."""
        return self._gateway.agent(self.principal(request), action, agent_type, name)

    async def paced(
        self, agent: AgentHandle, message_id: str, request: Callable[[], Awaitable[T]]
    ) -> T:
        """Run an ask or a call that puts message `message_id` into `agent`'s inbox, counted
        against the gateway's limit of unapplied messages per agent (`TooManyUnapplied`, a
        429 with Retry-After, past `gateway_max_unapplied`), as the gateway's own routes do."""
        return await self._gateway.hub.paced(agent.agent_type, agent.name, message_id, request)


def app_routers(context: GatewayContext, modules: Iterable[str]) -> list[APIRouter]:
    """The routers of the application modules that define `gateway_routes` (each imported:
    the worker and the gateway load the same `--app` modules)."""
    routers = []
    for name in modules:
        hook = getattr(importlib.import_module(name), HOOK, None)
        if hook is None:
            continue
        router = hook(context)
        if not isinstance(router, APIRouter):
            raise ExtensionConflict(
                f"{name}.{HOOK} returned {type(router).__name__}, not a fastapi.APIRouter"
            )
        routers.append(router)
    return routers


def include_app_routes(app: FastAPI, gateway: Gateway) -> None:
    """Include the application's routes in the gateway `app` (after the gateway's own)."""
    context = GatewayContext(perennial=gateway.perennial, settings=gateway.settings,
                             _gateway=gateway)  # fmt: skip
    taken = _route_keys(app.routes)
    for router in app_routers(context, gateway.settings.app):
        for key in _route_keys(router.routes):
            path = key[1]
            if key in taken or any(path.startswith(prefix) for prefix in RESERVED_PREFIXES):
                raise ExtensionConflict(
                    f"application route {key[0]} {path} would replace the gateway's own "
                    f"(its routes, and everything under {', '.join(RESERVED_PREFIXES)})"
                )
            taken.add(key)
        app.include_router(router)


def _route_keys(routes: Iterable[BaseRoute]) -> set[tuple[str, str]]:
    """(method, path) of each route; WebSocket routes as method `WS`, mounts as `MOUNT`."""
    keys: set[tuple[str, str]] = set()
    for route in routes:
        if isinstance(route, Route):
            keys.update((method, route.path) for method in route.methods or ())
        elif isinstance(route, WebSocketRoute):
            keys.add(("WS", route.path))
        elif isinstance(route, Mount):
            keys.add(("MOUNT", route.path))
    return keys


__all__ = [
    "HOOK",
    "RESERVED_PREFIXES",
    "ExtensionConflict",
    "GatewayContext",
    "app_routers",
    "include_app_routes",
]
