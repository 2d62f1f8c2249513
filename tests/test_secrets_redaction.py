"""Secrets never leave an activity in an error text: not into history, events, errors or logs.

Unit tests of the redactor and of the log formatter's redaction; end to end, a model endpoint
that answers 401 echoing the worker's API key (as OpenAI does), and tools that fail quoting it.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import string
import sys

import httpx2
import openai
import pytest
from pydantic import SecretStr
from temporalio.client import Client

import tests.llm_agents  # noqa: F401  (registers the test agent types)
from perennial.activities.llm import classify
from perennial.client import Perennial, Settings, TurnFailed
from perennial.client.logging import log_formatter
from perennial.client.redaction import NO_REDACTION, REDACTED, Redactor
from perennial.testing.scripted_llm import ScriptedLLM, call, error, text, tool_calls
from perennial.worker import build_worker

pytestmark = pytest.mark.agents(app=("tests.llm_agents",), llm=True)

_ALPHABET = string.ascii_letters + string.digits


def _new_key() -> str:
    return "sk-test-" + "".join(secrets.choice(_ALPHABET) for _ in range(40))


def _abbreviated(key: str) -> str:
    """How OpenAI echoes a wrong key: its start, asterisks, its last four characters."""
    return key[:8] + "*" * 28 + key[-4:]


# --------------------------------------------------------------------------- the redactor


def test_every_occurrence_of_every_secret_is_replaced() -> None:
    key, other = _new_key(), "temporal-cloud-key-0123456789"
    redact = Redactor([SecretStr(key), other, None, ""])
    assert (
        redact(f"{key} and {other}, then {key}!") == f"{REDACTED} and {REDACTED}, then {REDACTED}!"
    )
    assert redact(f"x{key}y") == f"x{REDACTED}y"  # inside a word too
    assert (
        redact("nothing secret here: task-123, ask-me") == "nothing secret here: task-123, ask-me"
    )


def test_a_secret_inside_json_or_a_repr_is_replaced() -> None:
    secret = 'pa"ss\\word-0123'
    redact = Redactor([secret], shapes=False)
    for rendered in (json.dumps({"key": secret}), repr([secret]), secret):
        assert "word-0123" not in redact(rendered), rendered


def test_echoes_of_a_part_of_a_secret_are_replaced() -> None:
    key = _new_key()
    redact = Redactor([key], shapes=False)
    starts_like = key[:10] + "..."  # a truncated echo
    ends_like = "****" + key[-4:]  # an abbreviation that shows the end only
    assert redact(f"key {_abbreviated(key)}. Next") == f"key {REDACTED}. Next"
    assert redact(f"api_key={starts_like}") == f"api_key={REDACTED}..."
    assert redact(f"shown as {ends_like}, sorry") == f"shown as {REDACTED}, sorry"
    # The end alone, without the asterisks of an abbreviation, is not an echo.
    assert redact(f"id {key[-4:]}") == f"id {key[-4:]}"


def test_short_secrets_are_replaced_only_whole() -> None:
    redact = Redactor(["hunter2"], shapes=False)
    assert redact("pw hunter2, hunter, ****ter2") == f"pw {REDACTED}, hunter, ****ter2"


def test_credential_shaped_tokens_are_replaced_unless_turned_off() -> None:
    text_ = "Authorization: Bearer eyJhbGciOi.eyJzdWIi.sig_-1 and key sk-proj-abcdefghijklmnop1234."
    assert Redactor()(text_) == f"Authorization: Bearer {REDACTED} and key {REDACTED}."
    assert Redactor(shapes=False)(text_) == text_
    assert Redactor()("Bearer token missing; sk-learn") == "Bearer token missing; sk-learn"


def test_no_redaction_is_a_no_op_and_settings_give_their_secrets() -> None:
    assert not NO_REDACTION and NO_REDACTION("Bearer abcdefghijkl") == "Bearer abcdefghijkl"
    settings = Settings(openai_api_key=SecretStr("model-key-0123"), api_key=SecretStr("tc-0123456"))
    redact = Redactor.from_settings(settings)
    assert redact("model-key-0123 tc-0123456") == f"{REDACTED} {REDACTED}"


def test_classify_redacts_the_servers_echo_of_the_key() -> None:
    key = _new_key()
    request = httpx2.Request("POST", "http://model.test/v1/chat/completions")
    body = {"error": {"message": f"Incorrect API key provided: {_abbreviated(key)} ({key})."}}
    err = openai.APIStatusError(
        f"Error code: 401 - {body}", response=httpx2.Response(401, request=request), body=body
    )
    failure = classify(err, attempt=2, redact=Redactor([key]))
    assert failure.type == "ModelAuthenticationFailed" and failure.non_retryable
    assert key not in failure.message and _abbreviated(key) not in failure.message
    assert f"Incorrect API key provided: {REDACTED} ({REDACTED})" in failure.message
    assert failure.details[0] == {"status_code": 401, "attempt": 2}
    assert key in classify(err).message  # the default redacts nothing (no settings at hand)


# --------------------------------------------------------------------------- the log formatter


def _record_with_secrets(key: str) -> logging.LogRecord:
    try:
        raise RuntimeError(f"the server said: wrong key {key}")
    except RuntimeError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "some.library", logging.WARNING, __file__, 1, "call failed: %s", (key,), exc_info
    )
    record.headers = {"authorization": f"Bearer {key}"}  # an `extra` field, nested
    record.error = ValueError(_abbreviated(key))  # a field rendered by `repr`
    return record


@pytest.mark.parametrize("as_json", [True, False])
def test_log_lines_are_redacted_tracebacks_and_fields_included(as_json: bool) -> None:
    key = _new_key()
    line = log_formatter(as_json=as_json, secrets=(SecretStr(key), None)).format(
        _record_with_secrets(key)
    )
    assert key not in line and _abbreviated(key) not in line and key[-12:] not in line
    assert "call failed: [redacted]" in line
    assert "RuntimeError: the server said: wrong key [redacted]" in line  # the traceback
    assert "Traceback (most recent call last)" in line


def test_log_lines_without_secrets_are_left_alone() -> None:
    key = _new_key()
    line = log_formatter(as_json=True).format(_record_with_secrets(key))
    assert f"call failed: {key}" in line


# --------------------------------------------------------------------------- end to end


@pytest.fixture
def key() -> str:
    return _new_key()


@pytest.fixture
def settings(settings: Settings, key: str) -> Settings:
    """A worker key the scripted model endpoint (the module's marker) echoes back."""
    return settings.model_copy(update={"openai_api_key": SecretStr(key)})


async def _history_text(client: Client, workflow_id: str) -> str:
    """Every run's history as JSON, with its payloads decoded (they are base64 in the JSON)."""
    texts: list[str] = []
    run_id: str | None = None
    while True:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        texts.append(history.to_json())
        started = history.events[0].workflow_execution_started_event_attributes
        run_id = started.continued_execution_run_id or None
        if run_id is None:
            break
    return "\n".join([*texts, *(_payloads(json.loads(t)) for t in texts)])


def _payloads(node: object) -> str:
    if isinstance(node, dict):
        if isinstance(node.get("data"), str) and "metadata" in node:
            return base64.b64decode(node["data"]).decode(errors="replace")
        return "\n".join(_payloads(v) for v in node.values())
    if isinstance(node, list):
        return "\n".join(_payloads(v) for v in node)
    return ""


def _logs(caplog: pytest.LogCaptureFixture) -> str:
    """Every captured record as a line, arguments and traceback included."""
    plain = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return "\n".join(plain.format(record) for record in caplog.records)


def _leaks(places: dict[str, str], *forms: str) -> dict[str, list[str]]:
    return {place: [f for f in forms if f in text_] for place, text_ in places.items()}


@pytest.mark.asyncio(loop_scope="session")
async def test_a_401_that_echoes_the_key_leaves_it_nowhere(
    perennial: Perennial,
    settings: Settings,
    scripted_llm: ScriptedLLM,
    key: str,
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    abbreviated = _abbreviated(key)
    scripted_llm.script(
        error(
            401,
            f"Incorrect API key provided: {key} (shown as {abbreviated}). You can find "
            "your API key at https://platform.openai.com/account/api-keys.",
        )
    )
    caplog.set_level(logging.DEBUG)
    agent = perennial.agent("test_llm", request.node.name.replace("_", "-"))
    async with build_worker(perennial.client, settings):
        with pytest.raises(TurnFailed) as failed:
            await agent.ask("hello")
        events = (await agent.events(limit=1000)).events
    [sent] = scripted_llm.completions
    assert sent.headers["authorization"] == f"Bearer {key}"  # the key was really used

    places = {
        "TurnFailed": str(failed.value),
        "events": "\n".join(e.model_dump_json() for e in events),
        "history": await _history_text(perennial.client, agent.id),
        "logs": _logs(caplog),
    }
    assert _leaks(places, key, abbreviated) == {place: [] for place in places}
    # Positive controls: the failure itself got everywhere, with the key redacted.
    assert failed.value.error_type == "ModelRequestRejected"
    assert "ModelAuthenticationFailed (HTTP 401)" in str(failed.value)
    assert [e.kind for e in events][-2:] == ["error", "turn_failed"]
    for place, text_ in places.items():
        assert f"Incorrect API key provided: {REDACTED}" in text_, place
    assert "Completing activity as failed" in places["logs"]


@pytest.mark.asyncio(loop_scope="session")
async def test_tool_errors_that_quote_the_key_leave_it_nowhere(
    perennial: Perennial,
    settings: Settings,
    scripted_llm: ScriptedLLM,
    key: str,
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    abbreviated = _abbreviated(key)
    scripted_llm.tool("get_weather", fail=f"weather API refused key {key}")  # retried, then fails
    scripted_llm.tool("book_table", tool_error=f"booking API refused key {abbreviated}")
    scripted_llm.script(
        tool_calls(
            call("get_weather", id="w1", city="Oslo"),
            call("book_table", id="b1", restaurant="Fjord"),
        ),  # fmt: skip
        text("Neither worked."),
    )
    caplog.set_level(logging.DEBUG)
    agent = perennial.agent("test_llm", request.node.name.replace("_", "-"))
    async with build_worker(perennial.client, settings):
        assert (await agent.ask("dinner in Oslo?")).reply == "Neither worked."
        events = (await agent.events(limit=1000)).events
    results = scripted_llm.completions[-1].tool_results()

    places = {
        "model": json.dumps(results),
        "events": "\n".join(e.model_dump_json() for e in events),
        "history": await _history_text(perennial.client, agent.id),
        "logs": _logs(caplog),
    }
    assert _leaks(places, key, abbreviated) == {place: [] for place in places}
    # Positive controls: both failures reached the model, redacted.
    assert results == {
        "w1": "error: get_weather failed after 3 attempt(s): "
        f"RuntimeError: weather API refused key {REDACTED}",
        "b1": f"error: booking API refused key {REDACTED}",
    }
    assert scripted_llm.executions("get_weather") == 3
    assert f"weather API refused key {REDACTED}" in places["logs"]
