"""The model call: one Chat Completions request per activity attempt, through `openai`.

The activity's input is a reference (`ModelCall`): it reads the request from the waiting agent
with the `llm_context` query and checks its digest, so the conversation never enters history.
The OpenAI client's own retries are off; Temporal retries, and failures are classified:

    408, 409, 429, 5xx, timeouts, connection errors   retried (429/503 honour `retry-after`)
    400, 401, 403, 404, 422 and other 4xx             not retried, with a stable error type

The API key comes from the injected settings and is only ever sent to the model server; a
server that echoes it in an error (OpenAI does on a wrong key) has it redacted from the failure.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import openai
from openai import AsyncOpenAI
from temporalio import activity
from temporalio.client import WorkflowQueryFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from perennial.activities.heartbeat import heartbeating
from perennial.activities.pricing import priced
from perennial.client.redaction import NO_REDACTION, Redactor
from perennial.client.settings import Settings
from perennial.client.telemetry import model_call_span
from perennial.workflows.llm.wire import (
    LLM_CONTEXT_QUERY,
    MODEL_ACTIVITY,
    AssistantItem,
    ContextQuery,
    ModelCall,
    ModelFailure,
    ModelFailureDetail,
    ModelRequest,
    ModelResponse,
    StreamProgress,
    SystemItem,
    ToolCall,
    ToolItem,
    UserItem,
)
from perennial.workflows.messages import TokenUsage

#: Longest `retry-after` honoured; a server asking for more gets this.
MAX_RETRY_AFTER = timedelta(minutes=10)
#: How long reading the request from the agent may take.
CONTEXT_QUERY_TIMEOUT = timedelta(seconds=30)
#: Without a base URL and key there is nothing to call; local servers accept any key.
_PLACEHOLDER_KEY = "unused"


class ModelActivities:
    """The model activity, holding the worker's settings and one HTTP connection pool."""

    def __init__(self, settings: Settings, *, client: AsyncOpenAI | None = None) -> None:
        self._settings = settings
        self._client = client
        self._redact = Redactor.from_settings(settings)

    def _openai(self) -> AsyncOpenAI:
        if self._client is None:
            settings = self._settings
            if not settings.llm_configured:
                raise _failure(
                    ModelFailure.NOT_CONFIGURED,
                    "no model endpoint is configured on this worker: set OPENAI_API_KEY "
                    "(OpenAI) or OPENAI_BASE_URL (any OpenAI-compatible server)",
                )
            key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
            self._client = AsyncOpenAI(
                api_key=key or _PLACEHOLDER_KEY,
                base_url=settings.openai_base_url,
                max_retries=0,  # Temporal owns the retries: every attempt is in the history
            )
        return self._client

    @activity.defn(name=MODEL_ACTIVITY)
    async def complete(self, call: ModelCall) -> ModelResponse:
        """Call the model with the agent's current request and return its answer (streamed
        when the request says so: see `StreamProgress`)."""
        info = activity.info()
        request = call.request or await _read_request(call, self._redact)
        model = request.model or self._settings.openai_model
        client = self._openai()
        options = _options(request)
        started = time.monotonic()
        with model_call_span(model=model, server=str(client.base_url), options=options) as span:
            try:
                if request.settings.stream:
                    response = await _streamed(client, call, model, request, options)
                else:
                    async with heartbeating(f"waiting for {model}"):
                        completion = await client.chat.completions.create(
                            model=model,
                            messages=_messages(request),  # type: ignore[arg-type]
                            timeout=_http_timeout(info.start_to_close_timeout),
                            **options,
                        )
                    response = _response(completion, model=model)
            except openai.APIError as err:
                raise classify(err, attempt=info.attempt, redact=self._redact) from None
            response = response.model_copy(
                update={
                    "attempt": info.attempt,
                    "duration_ms": int((time.monotonic() - started) * 1000),
                }
            )
            response = priced(response, self._settings, requested=model)
            span.answered(response, usage_reported=response.usage != TokenUsage())
        return response


async def _streamed(
    client: AsyncOpenAI, call: ModelCall, model: str, request: ModelRequest, options: dict[str, Any]
) -> ModelResponse:
    """A streamed completion: each chunk updates the `StreamProgress` the activity heartbeats
    (the worker throttles what reaches the server), the whole answer is returned as usual."""
    attempt = activity.info().attempt
    progress = _Progress(StreamProgress(turn=call.turn, step=call.step, attempt=attempt))
    async with heartbeating(latest=progress.details):
        stream = await client.chat.completions.create(
            model=model,
            messages=_messages(request),  # type: ignore[arg-type]
            timeout=_http_timeout(activity.info().start_to_close_timeout),
            stream=True,
            stream_options={"include_usage": True},
            **options,
        )
        async for chunk in stream:
            if progress.feed(chunk):
                activity.heartbeat(progress.current)
    return progress.response(model)


class _Progress:
    """A streamed answer as it accumulates: text, tool calls by index, usage, finish."""

    def __init__(self, start: StreamProgress) -> None:
        self.current = start
        self._text: list[str] = []
        self._calls: dict[int, dict[str, str]] = {}
        self._usage: Any = None
        self._finish: str | None = None
        self._model: str | None = None

    def details(self) -> tuple[StreamProgress]:
        return (self.current,)

    def feed(self, chunk: Any) -> bool:
        """Take one chunk; True when the text or the tool calls changed."""
        self._model = getattr(chunk, "model", None) or self._model
        if getattr(chunk, "usage", None) is not None:
            self._usage = chunk.usage
        changed = False
        for choice in getattr(chunk, "choices", None) or []:
            if choice.index != 0:
                continue
            self._finish = choice.finish_reason or self._finish
            delta = choice.delta
            if delta is None:
                continue
            if delta.content:
                self._text.append(delta.content)
                changed = True
            for piece in delta.tool_calls or []:
                slot = self._calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
                slot["id"] = piece.id or slot["id"]
                if piece.function is not None:
                    slot["name"] += piece.function.name or ""
                    slot["arguments"] += piece.function.arguments or ""
                changed = True
        if changed:
            self.current = self.current.model_copy(
                update={"text": "".join(self._text), "tool_calls": self._tool_calls()}
            )
        return changed

    def _tool_calls(self) -> list[ToolCall]:
        return [
            ToolCall(id=slot["id"] or f"call_{index}", name=slot["name"],
                     arguments=slot["arguments"] or "{}")
            for index, slot in sorted(self._calls.items())
        ]  # fmt: skip

    def response(self, model: str) -> ModelResponse:
        if self._model is None and not self._text and not self._calls:
            raise _failure(ModelFailure.INVALID_RESPONSE, "the model server streamed no chunks")
        usage = self._usage
        return ModelResponse(
            message=AssistantItem(
                content="".join(self._text) or None, tool_calls=self._tool_calls()
            ),
            usage=_usage(usage),
            finish_reason=self._finish,
            model=self._model or model,
        )


# --------------------------------------------------------------------------- the request


async def _read_request(call: ModelCall, redact: Redactor) -> ModelRequest:
    handle = activity.client().get_workflow_handle(call.agent_id, run_id=call.run_id)
    try:
        request = await handle.query(
            LLM_CONTEXT_QUERY,
            ContextQuery(call_id=call.call_id),
            result_type=ModelRequest,
            rpc_timeout=CONTEXT_QUERY_TIMEOUT,
        )
    except (WorkflowQueryFailedError, RPCError) as err:
        raise _failure(
            ModelFailure.CONTEXT_UNAVAILABLE,
            f"could not read the request of model call {call.call_id} from {call.agent_id}: {err}",
            redact=redact,
        ) from None
    if request.digest() != call.digest:
        raise _failure(
            ModelFailure.CONTEXT_MISMATCH,
            f"the request read from {call.agent_id} does not match model call {call.call_id}",
        )
    return request


def _messages(request: ModelRequest) -> list[dict[str, Any]]:
    """The conversation in the Chat Completions wire format."""
    out: list[dict[str, Any]] = []
    for item in request.messages:
        if isinstance(item, SystemItem | UserItem):
            out.append({"role": item.role, "content": item.content})
        elif isinstance(item, AssistantItem):
            message: dict[str, Any] = {"role": "assistant", "content": item.content}
            if item.tool_calls:
                message["tool_calls"] = [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments},
                    }
                    for call in item.tool_calls
                ]
            out.append(message)
        elif isinstance(item, ToolItem):
            out.append({"role": "tool", "tool_call_id": item.tool_call_id, "content": item.content})
    return out


def _options(request: ModelRequest) -> dict[str, Any]:
    settings = request.settings
    options: dict[str, Any] = {
        name: value
        for name, value in (
            ("temperature", settings.temperature),
            ("top_p", settings.top_p),
            ("max_tokens", settings.max_tokens),
            ("seed", settings.seed),
            ("stop", settings.stop),
            ("extra_body", settings.extra_body),
        )
        if value is not None
    }
    if request.tools:
        options["tools"] = [tool.model_dump(mode="json") for tool in request.tools]
        if settings.parallel_tool_calls is not None:
            options["parallel_tool_calls"] = settings.parallel_tool_calls
        if settings.tool_choice is not None:
            options["tool_choice"] = settings.tool_choice
    return options


def _http_timeout(start_to_close: timedelta | None) -> float:
    """A little under the attempt's timeout, so a slow server ends as a classified timeout."""
    if start_to_close is None:
        return 600.0
    return max(1.0, start_to_close.total_seconds() - 2.0)


# --------------------------------------------------------------------------- the response


def _response(completion: Any, *, model: str) -> ModelResponse:
    choices = getattr(completion, "choices", None)
    if not choices:
        raise _failure(ModelFailure.INVALID_RESPONSE, "the model server returned no choices")
    choice = choices[0]
    message = choice.message
    calls = [
        ToolCall(
            id=tool_call.id or f"call_{index}",
            name=tool_call.function.name,
            arguments=tool_call.function.arguments or "{}",
        )
        for index, tool_call in enumerate(message.tool_calls or [])
        if getattr(tool_call, "type", "function") == "function"
    ]
    return ModelResponse(
        message=AssistantItem(content=message.content, tool_calls=calls),
        usage=_usage(completion.usage),
        finish_reason=choice.finish_reason,
        model=completion.model or model,
    )


def _usage(usage: Any) -> TokenUsage:
    if usage is None:
        return TokenUsage()
    return TokenUsage(
        prompt_tokens=usage.prompt_tokens or 0,
        completion_tokens=usage.completion_tokens or 0,
        total_tokens=usage.total_tokens or 0,
    )


# --------------------------------------------------------------------------- failures


def _status_failure(status: int) -> ModelFailure:
    if status == 408:
        return ModelFailure.TIMEOUT
    if status == 409:
        return ModelFailure.CONFLICT
    if status == 429:
        return ModelFailure.RATE_LIMITED
    if status >= 500:
        return ModelFailure.SERVER_ERROR
    if status in (401, 403):
        return ModelFailure.AUTHENTICATION
    if status == 404:
        return ModelFailure.NOT_FOUND
    return ModelFailure.BAD_REQUEST


def classify(
    err: openai.APIError, *, attempt: int = 1, redact: Redactor = NO_REDACTION
) -> ApplicationError:
    """An `openai` error as the activity's failure: retryable or not, with a stable type.

    Args:
        err: The error the `openai` client raised.
        attempt: The activity attempt that failed (it goes into the failure's detail).
        redact: Applied to the server's error text, which may echo the API key.
    """
    status: int | None = None
    delay: timedelta | None = None
    if isinstance(err, openai.APITimeoutError):
        failure = ModelFailure.TIMEOUT
    elif isinstance(err, openai.APIConnectionError):
        failure = ModelFailure.CONNECTION
    elif isinstance(err, openai.APIStatusError):
        status = err.status_code
        failure = _status_failure(status)
        if failure.retryable:
            delay = retry_after(err.response.headers)
    else:  # the body was not a valid completion
        failure = ModelFailure.INVALID_RESPONSE
    # The status travels in the detail (openai's message names it too).
    return _failure(failure, err.message, status_code=status, attempt=attempt,
                    next_retry_delay=delay, redact=redact)  # fmt: skip


def retry_after(headers: Any, *, now: datetime | None = None) -> timedelta | None:
    """The delay a `retry-after-ms` or `retry-after` (seconds or HTTP date) header asks for."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return min(timedelta(milliseconds=float(raw_ms)), MAX_RETRY_AFTER)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds <= 0:
        return None
    return min(timedelta(seconds=seconds), MAX_RETRY_AFTER)


def _failure(
    failure: ModelFailure,
    message: str,
    *,
    status_code: int | None = None,
    attempt: int | None = None,
    next_retry_delay: timedelta | None = None,
    redact: Redactor = NO_REDACTION,
) -> ApplicationError:
    # The detail holds numbers only; the message is the one text that can carry a secret.
    if attempt is None:
        attempt = activity.info().attempt if activity.in_activity() else 1
    detail = ModelFailureDetail(status_code=status_code, attempt=attempt)
    return ApplicationError(
        redact(message),
        detail.model_dump(),
        type=failure.value,
        non_retryable=not failure.retryable,
        next_retry_delay=next_retry_delay,
    )


__all__ = ["ModelActivities", "classify", "retry_after"]
