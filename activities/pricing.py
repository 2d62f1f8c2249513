"""What model calls cost: the worker's price table, applied by the model activity.

The table is a TOML file named by `PERENNIAL_PRICES_FILE` (`Settings.prices_file`), in USD per
million tokens:

    [models."gpt-4o-mini"]
    input = 0.15      # per 1M prompt tokens
    output = 0.60     # per 1M completion tokens

A response is priced by the model the agent asked for (or the worker's default model), else by
the model the server says answered (`gpt-4o-mini-2024-07-18`). A model in neither has no price:
its `cost_usd` is None, and budgets count its calls as unpriced (tokens still count).

The workflow never reads settings, so the activity prices each response and the price travels
in `ModelResponse.cost_usd`. The file is read once per worker process (`build_activities` reads
it at start-up, so a bad file stops the worker with `PricesFileInvalid` before it takes work).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from perennial.client.settings import Settings
from perennial.workflows.errors import PricesFileInvalid
from perennial.workflows.llm.wire import ModelResponse
from perennial.workflows.messages import TokenUsage

_PER = 1_000_000


class ModelPrice(BaseModel):
    """One model's prices, in USD per million tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    input: float = Field(ge=0, allow_inf_nan=False)
    output: float = Field(ge=0, allow_inf_nan=False)

    def cost(self, usage: TokenUsage) -> float:
        """The USD cost of a call that used `usage`."""
        return (usage.prompt_tokens * self.input + usage.completion_tokens * self.output) / _PER


class PriceTable(BaseModel):
    """The price table: prices by model name."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    models: dict[str, ModelPrice] = {}

    def price_of(self, *names: str | None) -> ModelPrice | None:
        """The price of the first of `names` that the table has."""
        for name in names:
            if name is not None and name in self.models:
                return self.models[name]
        return None

    def cost(self, usage: TokenUsage, *names: str | None) -> float | None:
        """What a call that used `usage` cost, priced as the first of `names` the table has;
        None when it has none of them."""
        price = self.price_of(*names)
        return None if price is None else round(price.cost(usage), 12)


def load_prices(path: Path) -> PriceTable:
    """Read and check a price file; `PricesFileInvalid` names the file and what is wrong
    (the line of a TOML syntax error, the model and field of a bad price)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise PricesFileInvalid(f"cannot read the price file {path}: {reason}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:  # its message gives the line and column
        raise PricesFileInvalid(f"the price file {path} is not valid TOML: {err}") from None
    try:
        return PriceTable.model_validate(raw)
    except ValidationError as err:
        raise PricesFileInvalid(f"the price file {path}: {_problem(err, text)}") from None


def _problem(err: ValidationError, text: str) -> str:
    """The first problem, by model and line: `model "gpt-4o" (line 3): input: ...`."""
    problem = err.errors(include_url=False, include_input=False)[0]
    loc = [str(part) for part in problem["loc"]]
    message = problem["msg"]
    if len(loc) >= 2 and loc[0] == "models":
        model = loc[1]
        where = f"model {model!r}" + _line_of(text, model)
        field = ".".join(loc[2:])
        if not field and problem["type"] == "model_type":
            return f"{where}: give it a table with `input` and `output` (USD per 1M tokens)"
        return f"{where}: {field + ': ' if field else ''}{message}"
    if loc:
        return f'{".".join(loc)}: {message} (the file holds one [models."NAME"] table per model)'
    return f'{message} (the file holds one [models."NAME"] table per model)'


def _line_of(text: str, model: str) -> str:
    """` (line N)`: the first line that names `model` as a table or key, or nothing."""
    names = (f'"{model}"', f"'{model}'", f".{model}]", f"{model} =", f"{model}=")
    for number, line in enumerate(text.splitlines(), start=1):
        if any(name in line for name in names):
            return f" (line {number})"
    return ""


_LOADED: dict[Path, PriceTable] = {}


def prices_for(settings: Settings) -> PriceTable | None:
    """The price table these settings name (read once per process), or None without one."""
    path = settings.prices_file
    if path is None:
        return None
    table = _LOADED.get(path)
    if table is None:
        table = _LOADED[path] = load_prices(path)
    return table


def priced(response: ModelResponse, settings: Settings, *, requested: str | None) -> ModelResponse:
    """`response` with its `cost_usd`, priced as the `requested` model, else as the model the
    server reported; unchanged without a price table or a price for either."""
    table = prices_for(settings)
    if table is None:
        return response
    cost = table.cost(response.usage, requested, response.model)
    return response if cost is None else response.model_copy(update={"cost_usd": cost})


__all__ = ["ModelPrice", "PriceTable", "load_prices", "priced", "prices_for"]
