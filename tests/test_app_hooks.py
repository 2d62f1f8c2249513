"""An application's own hooks: routes the gateway serves (`gateway_routes`), services that
`perennial dev` and `perennial demo` run beside the worker (`dev_services`), the demo's
application part (`demo`), and modules the worker's sandbox passes through
(`passthrough_modules`). The application modules here are built in the test and put into
`sys.modules`, as `--app` would import them."""

from __future__ import annotations

import contextlib
import sys
import types
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Request
from temporalio.worker import Worker

from perennial.client import AgentNotFound, Perennial, Settings, UsageError
from perennial.client.app import app_dev_services, app_passthrough_modules
from perennial.client.demo import _app_demos
from perennial.client.gateway.app import create_app
from perennial.client.gateway.auth import Authenticator, hash_token
from perennial.client.gateway.extensions import ExtensionConflict, GatewayContext
from perennial.client.gateway.server import GatewayServer
from perennial.worker import workflow_runner

TOKEN = "extension-writer-0123456789abcdef"
#: The one notes agent the token may write (a name of this run's own: the server outlives it).
MINE = f"mine-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def app_module(**attributes: Any) -> Iterator[str]:
    """A module with `attributes`, importable under a fresh name while the block runs."""
    name = f"test_app_{uuid.uuid4().hex[:8]}"
    module = types.ModuleType(name)
    for key, value in attributes.items():
        setattr(module, key, value)
    sys.modules[name] = module
    try:
        yield name
    finally:
        del sys.modules[name]


def _notes_routes(context: GatewayContext) -> APIRouter:
    router = APIRouter()

    @router.post("/jot")
    async def jot(request: Request, body: dict[str, str]) -> dict[str, Any]:
        agent = context.agent(request, "write", "notes", body["name"])
        message_id = uuid.uuid4().hex
        reply = await context.paced(
            agent, message_id, lambda: agent.ask(body["text"], id=message_id)
        )
        return {"reply": reply.reply, "queue": context.settings.task_queue}

    @router.get("/missing")
    async def missing() -> None:
        raise AgentNotFound("nothing here")

    return router


@pytest.fixture
async def served(
    perennial: Perennial, settings: Settings, worker: Worker, tmp_path: Path
) -> AsyncIterator[str]:
    """A gateway with an application module that serves `/jot` and `/missing`, and a token
    that may write one notes agent, `MINE`."""
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(f'[[token]]\nname = "w"\nsha256 = "{hash_token(TOKEN)}"\n'
                      f'scopes = ["write:notes/{MINE}"]\n')  # fmt: skip
    with app_module(gateway_routes=_notes_routes) as name:
        config = settings.model_copy(update={"gateway_port": 0, "app": (name,),
                                             "gateway_tokens_file": tokens})  # fmt: skip
        async with GatewayServer(config, perennial=perennial) as gateway:
            yield gateway.url


async def test_an_application_route_is_served_with_the_gateways_auth_and_errors(
    served: str, settings: Settings
) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=served, timeout=30) as http:
        answered = await http.post("/jot", json={"name": MINE, "text": "buy figs"}, headers=auth)
        assert answered.status_code == 200, answered.text
        assert answered.json() == {"reply": "Noted (note #1).", "queue": settings.task_queue}

        anonymous = await http.post("/jot", json={"name": MINE, "text": "x"})
        assert anonymous.status_code == 401
        assert anonymous.json()["error"]["type"] == "Unauthorized"
        elsewhere = await http.post("/jot", json={"name": "yours", "text": "x"}, headers=auth)
        assert elsewhere.status_code == 403
        assert elsewhere.json()["error"]["type"] == "Forbidden"

        missing = await http.get("/missing")
        assert missing.status_code == 404
        assert missing.json() == {"error": {"type": "AgentNotFound", "message": "nothing here"}}
        health = await http.get("/health")  # the gateway's own routes are untouched
        assert health.status_code == 200


def _router(path: str, method: str = "GET") -> APIRouter:
    router = APIRouter()

    async def route() -> None:
        return None

    router.add_api_route(path, route, methods=[method])
    return router


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/health", "GET"),
        ("/agent-types", "GET"),
        ("/agents/notes/a/state", "GET"),
        ("/static/x.js", "GET"),
        ("/", "GET"),
    ],  # fmt: skip
)
async def test_an_application_route_cannot_replace_a_gateway_route(
    perennial: Perennial, settings: Settings, path: str, method: str
) -> None:
    with app_module(gateway_routes=lambda _: _router(path, method)) as name:
        config = settings.model_copy(update={"app": (name,)})
        with pytest.raises(ExtensionConflict, match=path):
            create_app(config, perennial, Authenticator.from_settings(config))


async def test_two_applications_cannot_take_one_route_and_a_hook_must_return_a_router(
    perennial: Perennial, settings: Settings
) -> None:
    with (
        app_module(gateway_routes=lambda _: _router("/chat", "POST")) as one,
        app_module(gateway_routes=lambda _: _router("/chat", "POST")) as two,
    ):
        config = settings.model_copy(update={"app": (one, two)})
        with pytest.raises(ExtensionConflict, match="/chat"):
            create_app(config, perennial, Authenticator.from_settings(config))
    with app_module(gateway_routes=lambda _: "not a router") as name:
        config = settings.model_copy(update={"app": (name,)})
        with pytest.raises(ExtensionConflict, match="not a fastapi.APIRouter"):
            create_app(config, perennial, Authenticator.from_settings(config))
    with app_module(other=1) as name:  # no hook: nothing added
        config = settings.model_copy(update={"app": (name,)})
        app = create_app(config, perennial, Authenticator.from_settings(config))
        assert not any(getattr(r, "path", "") == "/chat" for r in app.routes)


# --------------------------------------------------------------------------- dev services


def _dev(tag: str, log: list[str]) -> Any:
    @contextlib.asynccontextmanager
    async def dev_services(settings: Settings) -> AsyncIterator[Settings]:
        log.append(f"start {tag}")
        try:
            yield settings.model_copy(
                update={
                    "app_settings": {
                        **settings.app_settings,
                        tag: f"seen {len(settings.app_settings)}",
                    }
                }
            )
        finally:
            log.append(f"stop {tag}")

    return dev_services


async def test_dev_services_chain_in_order_and_stop_in_reverse() -> None:
    log: list[str] = []
    with (
        app_module(dev_services=_dev("one", log)) as one,
        app_module() as none,
        app_module(dev_services=_dev("two", log)) as two,
    ):
        async with app_dev_services(Settings(app=(one, none, two))) as served:
            assert served.app_settings == {"one": "seen 0", "two": "seen 1"}
            assert log == ["start one", "start two"]
        assert log == ["start one", "start two", "stop two", "stop one"]


async def test_dev_services_must_yield_settings_and_a_failure_stops_what_started() -> None:
    log: list[str] = []

    @contextlib.asynccontextmanager
    async def wrong(settings: Settings) -> AsyncIterator[object]:
        yield {"not": "settings"}

    with app_module(dev_services=_dev("one", log)) as one, app_module(dev_services=wrong) as bad:
        with pytest.raises(UsageError, match="yielded dict, not Settings"):
            async with app_dev_services(Settings(app=(one, bad))):
                pass
    assert log == ["start one", "stop one"]


async def test_the_demo_runs_each_applications_part() -> None:
    seen: list[tuple[str | None, str]] = []

    async def demo(perennial: Any, settings: Settings, *, gateway: str | None) -> None:
        seen.append((gateway, settings.task_queue))

    with app_module(demo=demo) as name, app_module() as other:
        await _app_demos(None, Settings(app=(other, name), task_queue="q"), "http://gw")  # type: ignore[arg-type]
    assert seen == [("http://gw", "q")]


# --------------------------------------------------------------------------- sandbox passthrough


def test_the_worker_passes_through_what_the_application_names() -> None:
    with (
        app_module(passthrough_modules=("myapp", "myapp.shared")) as one,
        app_module(passthrough_modules=["myapp", "other"]) as two,
        app_module() as none,
    ):
        settings = Settings(app=(one, two, none))
        assert app_passthrough_modules(settings) == ("myapp", "myapp.shared", "other")
        passed = workflow_runner(settings).restrictions.passthrough_modules
        assert {"myapp", "myapp.shared", "other", "perennial", "pydantic"} <= passed
    assert app_passthrough_modules(None) == ()
    assert "myapp" not in workflow_runner(Settings()).restrictions.passthrough_modules


@pytest.mark.parametrize("declared", ["myapp", ("myapp", ""), ("myapp", 3), 7])
def test_passthrough_modules_must_be_module_names(declared: object) -> None:
    with app_module(passthrough_modules=declared) as name:
        with pytest.raises(UsageError, match="must be a tuple of module names"):
            app_passthrough_modules(Settings(app=(name,)))
