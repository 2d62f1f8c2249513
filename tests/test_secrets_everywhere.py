"""No API key, token or secret tool argument appears in history, events, logs or the Web UI.

Unit tests of `ToolSecret` (schema, declaration errors, settings from the environment), then
one session that uses every secret the project knows, on a dev server of its own with its Web
UI: a worker with an OpenAI key, an activity tool that takes a `ToolSecret` (and echoes it in
an error and in its result), a gateway called with a bearer token from a tokens file and with a
JWT, and a codec token in the settings. Then all four places are scanned for every secret,
each with positive controls that prove the scan reads the session's data.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import logging
import re
import secrets
import string
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

import httpx
import jwt
import pytest
from google.protobuf.json_format import MessageToJson
from pydantic import SecretStr
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

import tests.secret_agents  # noqa: F401  (registers the test agent type)
from perennial import ToolContext, ToolSecret, activity_tool, workflow_tool
from perennial.activities.tools import tool_activity
from perennial.client import AgentHandle, Perennial, Settings
from perennial.client.gateway.server import GatewayServer
from perennial.client.redaction import REDACTED
from perennial.client.server import DevServer, free_port
from perennial.testing.scripted_llm import ScriptedLLM, call, text, tool_calls
from perennial.worker import build_worker
from perennial.workflows.llm.wire import ToolActivityInput, ToolActivityResult
from tests.browser import chromium_page, require_chromium
from tests.support import CONTINUED_AS_NEW, run_histories, unique

if TYPE_CHECKING:  # playwright is imported where a browser runs (see tests.browser)
    from playwright.async_api import Page, Response

_ALPHABET = string.ascii_letters + string.digits


def _random(n: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(n))


# --------------------------------------------------------------------------- ToolSecret


def test_a_secret_parameter_is_not_in_the_schema() -> None:
    @activity_tool
    async def star(
        ctx: ToolContext,
        repo: str,
        token: Annotated[str, ToolSecret("GitHub")],
        signing: Annotated[SecretStr | None, ToolSecret("signing_key")] = None,
    ) -> str:
        """Star a repository.

        Args:
            repo: owner/name.
        """
        return repo

    schema: Any = star.definition().function.parameters
    assert list(schema["properties"]) == ["repo"] and schema["required"] == ["repo"]
    assert "token" not in json.dumps(schema) and "signing" not in json.dumps(schema)
    token, signing = star.secret_params
    assert (token.param, token.secret.key, token.wrapped, token.optional) == (
        "token", "github", False, False,
    )  # fmt: skip
    assert (signing.param, signing.secret.key, signing.wrapped, signing.optional) == (
        "signing", "signing_key", True, True,
    )  # fmt: skip
    with pytest.raises(ValueError, match="token"):
        star.parse('{"repo": "a/b", "token": "the model made this up"}')


def test_secret_parameters_that_cannot_work_are_refused_at_declaration() -> None:
    with pytest.raises(TypeError, match="cannot go to a workflow tool"):

        @workflow_tool
        def remember(agent: Any, token: Annotated[str, ToolSecret("github")]) -> str:
            return ""

    with pytest.raises(TypeError, match="must be str or SecretStr"):

        @activity_tool
        async def count(pin: Annotated[int, ToolSecret("pin")]) -> int:
            return pin

    for bad in ("", "has-dash", "1st", "x" * 65):
        with pytest.raises(ValueError, match="must match"):
            ToolSecret(bad)


def test_tool_secrets_come_from_prefixed_variables_and_are_secrets() -> None:
    env = {
        "PERENNIAL_SECRET_GITHUB": "ghp_from_env",
        "PERENNIAL_SECRET_Chat_Webhook": "https://hooks.test/x",
        "PERENNIAL_SECRET_EMPTY": "",
        "PERENNIAL_SECRET_": "no name",
        "OPENAI_API_KEY": "sk-model-key",
    }
    settings = Settings.from_env(env)
    assert {k: v.get_secret_value() for k, v in settings.tool_secrets.items()} == {
        "github": "ghp_from_env",
        "chat_webhook": "https://hooks.test/x",
    }
    shown = {s.get_secret_value() for s in settings.secrets}
    assert shown == {"ghp_from_env", "https://hooks.test/x", "sk-model-key"}
    assert "ghp_from_env" not in repr(settings) and "ghp_from_env" not in str(settings)
    explicit = Settings(tool_secrets={"GitHub": SecretStr("x")})
    assert list(explicit.tool_secrets) == ["github"]


@activity_tool
async def _open_vault(
    room: str,
    token: Annotated[str, ToolSecret("vault")],
    signing: Annotated[SecretStr | None, ToolSecret("signing")] = None,
) -> str:
    """Open a room of the vault, and say what it was given (a careless tool)."""
    kind = type(signing).__name__
    return f"{room} opened with {token}; signing: {kind}"


async def _run_vault(settings: Settings) -> ToolActivityResult:
    run = tool_activity(_open_vault, settings)
    call_input = ToolActivityInput(agent_id="t/a", call_id="c1", arguments={"room": "north"})
    result = await ActivityEnvironment().run(run, call_input)
    assert isinstance(result, ToolActivityResult)
    return result


async def test_the_worker_injects_secrets_and_redacts_them_from_results() -> None:
    vault, signing = "vault-token-" + _random(24), "signing-key-" + _random(24)
    only_vault = Settings(tool_secrets={"vault": SecretStr(vault)})
    assert (
        await _run_vault(only_vault)
    ).content == f"north opened with {REDACTED}; signing: NoneType"
    both = Settings(tool_secrets={"vault": SecretStr(vault), "signing": SecretStr(signing)})
    assert (await _run_vault(both)).content.endswith("signing: SecretStr")

    for missing in (Settings(), Settings(tool_secrets={"vault": SecretStr("")})):
        with pytest.raises(ApplicationError) as failed:
            await _run_vault(missing)
        assert failed.value.type == "ToolSecretMissing" and failed.value.non_retryable
        assert (
            "'vault'" in failed.value.message and "PERENNIAL_SECRET_VAULT" in failed.value.message
        )


# --------------------------------------------------------------------------- one session


class _Secrets:
    """Every secret of the session, recognisable and random per run; the JWT may read the
    agent of type `test_secrets` named `agent_name`."""

    def __init__(self, agent_name: str) -> None:
        self.openai_key = "sk-test-" + _random(40)
        self.github_token = "ghp_" + _random(36)
        self.gateway_token = "gw-token-" + _random(32)
        self.jwt_secret = "jwt-secret-" + _random(40)
        self.codec_token = "codec-token-" + _random(32)
        claims = {"sub": "dashboard", "scope": f"read:test_secrets/{agent_name}"}
        self.jwt = jwt.encode(
            {**claims, "exp": int(time.time()) + 600}, self.jwt_secret, algorithm="HS256"
        )

    def forms(self) -> dict[str, str]:
        """What the scans look for: each secret whole, and a fragment of its random part (a
        truncated echo); for the JWT, its signature (header and claims are not secret)."""
        whole = {
            "OpenAI key": self.openai_key,
            "GitHub token (ToolSecret)": self.github_token,
            "gateway bearer token": self.gateway_token,
            "gateway JWT secret": self.jwt_secret,
            "codec token": self.codec_token,
            "gateway JWT": self.jwt,
        }
        forms = dict(whole)
        for name, value in whole.items():
            forms[f"{name}, a fragment"] = value[-24:-8]
        forms["gateway JWT, its signature"] = self.jwt.rsplit(".", 1)[1]
        return forms


def _leaks(places: dict[str, str], forms: dict[str, str]) -> dict[str, list[str]]:
    """For each place, the names of the secrets found in it."""
    return {place: [n for n, f in forms.items() if f in found] for place, found in places.items()}


async def _runs(client: Client, workflow_id: str) -> list[tuple[str, list[HistoryEvent]]]:
    """Every run of the workflow with its run id, oldest first."""
    runs = await run_histories(client, workflow_id)
    started = runs[0][0].workflow_execution_started_event_attributes
    ids = [started.first_execution_run_id]
    for events in runs[:-1]:
        assert events[-1].event_type == CONTINUED_AS_NEW
        ids.append(
            events[-1].workflow_execution_continued_as_new_event_attributes.new_execution_run_id
        )
    return list(zip(ids, runs, strict=True))


def _payload_texts(node: object) -> Iterable[str]:
    """The decoded data of every payload in protobuf JSON (bytes are base64 there)."""
    if isinstance(node, dict):
        data = node.get("data")
        if isinstance(data, str) and "metadata" in node:
            yield base64.b64decode(data).decode(errors="replace")
        for value in node.values():
            yield from _payload_texts(value)
    elif isinstance(node, list):
        for value in node:
            yield from _payload_texts(value)


def _history_text(runs: list[tuple[str, list[HistoryEvent]]]) -> tuple[str, bytes]:
    """The histories as JSON with their payloads decoded, and as raw protobuf bytes."""
    texts: list[str] = []
    raw = b""
    for _, events in runs:
        for event in events:
            as_json = MessageToJson(event)
            texts += [as_json, *_payload_texts(json.loads(as_json))]
            raw += event.SerializeToString()
    return "\n".join(texts), raw


async def _all_events(agent: AgentHandle) -> str:
    """The agent's whole event log, page by page (small pages, so paging is exercised)."""
    pages: list[str] = []
    after = 0
    while True:
        page = await agent.events(after=after, limit=3)
        if not page.events:
            return "\n".join(pages)
        assert page.missed == 0
        pages.append(page.model_dump_json())
        after = page.next_after


def _log_text(caplog: pytest.LogCaptureFixture, captured: pytest.CaptureResult[str]) -> str:
    """Every record (message, arguments, extra fields, traceback) and everything printed."""
    plain = logging.Formatter("%(name)s %(levelname)s %(message)s")
    lines = [f"{plain.format(r)} {vars(r)!r}" for r in caplog.records]
    return "\n".join([*lines, captured.out, captured.err])


#: Clicks every closed event row's "Expand details" button; returns how many it clicked.
_EXPAND_ALL = """() => {
    const closed = document.querySelectorAll('button[aria-label="Expand details"]');
    closed.forEach((button) => button.click());
    return closed.length;
}"""


#: The whole text of every code editor on the page: CodeMirror draws only the lines in view,
#: and keeps its view on the content element (`cmTile` since @codemirror/view 6.38, `cmView`
#: before), so these are the texts a person could scroll to.
_EDITOR_TEXTS = """() => Array.from(document.querySelectorAll('.cm-content')).map((content) => {
    const view = (content.cmTile || content.cmView || {}).view;
    return view ? view.state.doc.toString() : null;
})"""


class _UIScan:
    """What the Web UI showed a person, and what it loaded to show it (its API's answers)."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.shown: list[str] = []
        self.loaded: list[str] = []
        self._bodies: list[asyncio.Future[bytes]] = []
        page.on("response", self._on_response)

    def _on_response(self, response: Response) -> None:
        if "/api/" in response.url:
            self._bodies.append(asyncio.ensure_future(response.body()))

    async def goto(self, url: str, *, ready: str) -> None:
        """Open `url` (after reading what the last page loaded) and wait for `ready`."""
        await self._read_bodies()
        await self.page.goto(url)
        await self.wait_for(ready)

    async def tab(self, slug: str, *, ready: str, frame: str | None = None) -> None:
        """Open a tab of the workflow page (in the page: what it loaded stays readable)."""
        await self.page.locator(f'a[href$="/{slug}"]').first.click()
        await self.wait_for(ready, frame=frame)

    async def wait_for(self, text: str, *, frame: str | None = None) -> None:
        """Wait until `text` shows, in the page or in the frame `frame` (a CSS selector)."""
        where = self.page.frame_locator(frame) if frame else self.page
        await where.get_by_text(text).first.wait_for(timeout=30_000)

    async def keep(self) -> None:
        """Keep what the page shows now: the text and HTML of the page and of its frames (the
        UI renders markdown, like an agent's current details, in frames of their own)."""
        for frame in self.page.frames:
            self.shown += [await frame.inner_text("body"), await frame.content()]
        editors: list[str | None] = await self.page.evaluate(_EDITOR_TEXTS)
        assert None not in editors, "the Web UI's code editors changed: update _EDITOR_TEXTS"
        self.shown += [text for text in editors if text]

    async def expand_all_events(self) -> int:
        """Open every event's details in the Event History table; how many were opened."""
        opened = 0
        for _ in range(10):  # opening one row never adds rows; a few rounds catch late renders
            clicked = await self.page.evaluate(_EXPAND_ALL)
            if not clicked:
                return opened
            opened += clicked
        return opened

    async def run_query(self, name: str, *, ready: str) -> None:
        """Run a query from the Queries tab, as a person would, and wait for its answer."""
        if not self.page.url.endswith("/query"):
            await self.tab("query", ready="Run Query")
        await self.page.get_by_test_id("query-select-button").click()
        await self.page.get_by_role("option", name=name, exact=True).click()
        await self.page.get_by_role("button", name=re.compile("^(Run|Refresh) Query$")).click()
        await self.wait_for(ready)

    async def _read_bodies(self) -> None:
        from playwright.async_api import Error as PlaywrightError

        bodies, self._bodies = self._bodies, []
        for body in await asyncio.gather(*bodies, return_exceptions=True):
            if isinstance(body, PlaywrightError):
                continue  # no body to read: a redirect, or a poll the page dropped
            if isinstance(body, BaseException):
                raise body
            answer = body.decode(errors="replace")
            self.loaded.append(answer)
            try:
                self.loaded += _payload_texts(json.loads(answer))
            except json.JSONDecodeError:
                continue  # not JSON: nothing encoded inside

    async def texts(self) -> tuple[str, str]:
        """(What was shown, what was loaded, with the payloads in it decoded.)"""
        await self._read_bodies()
        return "\n".join(self.shown), "\n".join(self.loaded)


async def _scan_web_ui(server: DevServer, settings: Settings, agent: AgentHandle,
                       run_ids: list[str]) -> tuple[str, str]:  # fmt: skip
    """The agent in the Web UI: the workflow list, then for each run its Event History with
    every event expanded, its other tabs, and its `state` and `events` queries run from the
    Queries tab. Returns (what was shown, what the UI loaded)."""
    base = f"{server.ui_url}/namespaces/{settings.namespace}/workflows"
    async with chromium_page(viewport={"width": 1600, "height": 1200}) as page:
        ui = _UIScan(page)
        listing = quote(f'WorkflowId="{agent.id}"')
        await ui.goto(f"{base}?query={listing}", ready=agent.id)
        await ui.keep()
        for run_id in run_ids:
            workflow = f"{base}/{quote(agent.id, safe='')}/{run_id}"
            await ui.goto(f"{workflow}/history", ready="Workflow Execution Update Completed")
            assert await ui.expand_all_events() > 0
            await ui.wait_for("asked with token")  # the tool's result, in its event's details
            await ui.keep()
            for slug, ready, frame in (
                ("pending-activities", "No Pending Activities", None),
                ("user-metadata", "events up to", "#user-metadata-current-details"),
                ("search-attributes", "AgentStatus", None),
                ("call-stack", "Call Stack at", None),
            ):
                await ui.tab(slug, ready=ready, frame=frame)
                await ui.keep()
            for query, ready in (("state", '"context"'), ("events", '"received"')):
                await ui.run_query(query, ready=ready)
                await ui.keep()
        return await ui.texts()


def _stars_backend() -> Any:
    """The code host behind `repo_stars`: it refuses the first call, then answers."""
    calls = itertools.count(1)
    return lambda arguments: {"denied": True} if next(calls) == 1 else {"stars": 4242}


async def test_no_secret_of_a_whole_session_appears_anywhere(
    scripted_llm: ScriptedLLM,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    require_chromium()
    # This test's own HTTP client logs the URLs it calls, a query token included: it is the
    # caller, not the gateway, whose logs are scanned. (Set first: it lowers caplog's handler.)
    caplog.set_level(logging.WARNING, logger="httpx")
    caplog.set_level(logging.DEBUG)
    name = unique("secrets")
    s = _Secrets(name)
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(
        '[[token]]\nname = "web-app"\n'
        f'sha256 = "{hashlib.sha256(s.gateway_token.encode()).hexdigest()}"\n'
        f'scopes = ["*:test_secrets/{name}"]\n'
    )
    settings = Settings(
        state_dir=tmp_path / "temporal",
        server_port=free_port(),
        ui_port=free_port(),
        task_queue=unique("test"),
        sticky_timeout_seconds=1.0,
        openai_api_key=SecretStr(s.openai_key),
        openai_base_url=scripted_llm.url,
        tool_secrets={"github": SecretStr(s.github_token)},
        gateway_port=0,
        gateway_tokens_file=tokens,
        gateway_jwt_secret=SecretStr(s.jwt_secret),
        codec_token=SecretStr(s.codec_token),
    )
    question = "How popular is octo/perennial? Tell the team."
    answer = "octo/perennial has 4242 stars; I could not post to the team chat."
    scripted_llm.tool("repo_stars", result=_stars_backend())
    scripted_llm.script(
        tool_calls(
            call("repo_stars", id="s1", repo="octo/perennial"),
            call("post_status", id="p1", text="octo/perennial is popular"),
        ),
        text(answer),
    )

    async with DevServer(settings) as server:
        settings = settings.model_copy(update={"temporal_address": server.address})
        perennial = await Perennial.connect(settings)
        agent = perennial.agent("test_secrets", name)
        path = f"/agents/test_secrets/{name}"
        async with (
            build_worker(perennial.client, settings),
            GatewayServer(settings, perennial=perennial) as gateway,
            httpx.AsyncClient(base_url=gateway.url, timeout=60) as http,
        ):
            refused = await http.post(f"{path}/ask", json={"text": question})
            asked = await http.post(
                f"{path}/ask",
                json={"text": question},
                headers={"Authorization": f"Bearer {s.gateway_token}"},
            )
            read = await http.get(f"{path}/events", params={"access_token": s.jwt})
            # With the worker still up: it answers the queries (events, the UI's call stack).
            runs = await _runs(perennial.client, agent.id)
            events = await _all_events(agent)
            ui_shown, ui_loaded = await _scan_web_ui(server, settings, agent, [r for r, _ in runs])
        server_log = server.log_path.read_text(errors="replace")

    history, history_bytes = _history_text(runs)
    places = {
        "history": history,
        "events": events,
        "logs": "\n".join([_log_text(caplog, capsys.readouterr()), server_log]),
        "Web UI (shown)": ui_shown,
        "Web UI (loaded)": ui_loaded,
    }
    # No secret, whole or in part, in any of the four places.
    forms = s.forms()
    assert _leaks(places, forms) == {place: [] for place in places}
    assert [n for n, f in forms.items() if f.encode() in history_bytes] == []

    # Every secret was really used.
    assert refused.status_code == 401 and asked.status_code == 200, asked.text
    assert asked.json()["reply"] == answer
    assert read.status_code == 200 and read.json()["events"]
    first, last = scripted_llm.completions[0], scripted_llm.completions[-1]
    assert first.headers["authorization"] == f"Bearer {s.openai_key}"
    star_calls = [h for h in scripted_llm.tool_hits if h.name == "repo_stars"]
    assert [h.arguments for h in star_calls] == [
        {"repo": "octo/perennial", "token": s.github_token}
    ] * 2
    # The model never saw a secret parameter, and read the tool's outcomes redacted.
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in first.body["tools"]}
    assert list(schemas["repo_stars"]["properties"]) == ["repo"]
    assert list(schemas["post_status"]["properties"]) == ["text"]
    results = last.tool_results()
    assert results["s1"] == f"octo/perennial has 4242 stars (asked with token {REDACTED})"
    assert results["p1"].startswith("error: post_status failed after 1 attempt(s): tool "
                                    "post_status needs the secret 'chat_webhook'")  # fmt: skip
    assert "PERENNIAL_SECRET_CHAT_WEBHOOK" in results["p1"]
    assert scripted_llm.executions("post_status") == 0

    # Positive controls: each place holds this session's non-secret parts, the secrets' uses
    # included (redacted), so the scans above read the right data.
    result = f"octo/perennial has 4242 stars (asked with token {REDACTED})"
    failure = f"PermissionError: the code host refused token {REDACTED}"  # the first attempt
    missing = "ToolSecretMissing"
    in_every_ui = [question, "repo_stars", result, failure, missing, "chat_webhook", answer]
    controls = {
        "history": [question, "repo_stars", result, failure, missing, "chat_webhook", answer],
        "events": [question, "repo_stars", result, "chat_webhook", answer],
        "logs": ["repo_stars", failure, missing, result, f"{path}/ask", f"{path}/events"],
        "Web UI (shown)": in_every_ui,
        "Web UI (loaded)": in_every_ui,
    }
    absent = {
        place: [c for c in wanted if c not in places[place]] for place, wanted in controls.items()
    }
    assert absent == {place: [] for place in controls}
