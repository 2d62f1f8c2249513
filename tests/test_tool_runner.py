"""Agent code runs activity tools itself (`perennial.run_tool`), with the worker's application
settings (`Settings.app_settings`, `PERENNIAL_SETTING_<NAME>`) reaching the tool through its
`ToolContext`: the public way an application's agents do I/O without a model."""

from __future__ import annotations

import pytest
from temporalio.worker import Worker

import tests.tool_runner_agents  # noqa: F401  (registers the test agent type before a worker is built)
from perennial import activity_tool
from perennial.activities.tools import collect_activity_tools
from perennial.client import Perennial, Settings, TurnFailed
from tests.support import unique
from tests.tool_runner_agents import Price


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"app_settings": {"price_list": "apple=120,pear=95"}})


def test_application_settings_come_from_prefixed_variables() -> None:
    settings = Settings.from_env({
        "PERENNIAL_SETTING_Price_List": "apple=1",
        "PERENNIAL_SETTING_EMPTY": "",
        "PERENNIAL_SETTING_": "no name",
        "PERENNIAL_SECRET_TOKEN": "a secret, not a setting",
    })  # fmt: skip
    assert settings.app_settings == {"price_list": "apple=1"}
    assert settings.app_setting("PRICE_LIST") == "apple=1"  # names are case-insensitive
    assert settings.app_setting("missing") is None
    assert settings.app_setting("missing", "fallback") == "fallback"
    assert Settings(app_settings={"Mixed_Case": "x"}).app_settings == {"mixed_case": "x"}


async def test_an_agent_runs_a_tool_and_gets_its_typed_result(
    perennial: Perennial, worker: Worker
) -> None:
    pricer = perennial.agent("test_pricer", unique())
    reply = await pricer.call("price", {"sku": "apple"})
    assert Price.model_validate(reply.result) == Price(sku="apple", cents=120, attempt=1)
    text = (await pricer.call("price_text", {"sku": "pear"})).result
    assert Price.model_validate_json(text) == Price(sku="pear", cents=95, attempt=1)
    # a failed attempt is retried by the tool's retry policy; the result says which attempt won
    assert Price.model_validate((await pricer.call("price", {"sku": "flaky"})).result).attempt == 2
    assert (await pricer.state()).state.priced == ["apple", "flaky"]


async def test_a_tool_that_fails_for_good_raises_tool_failed_with_its_type(
    perennial: Perennial, worker: Worker
) -> None:
    pricer = perennial.agent("test_pricer", unique())
    # a non-retryable failure keeps the type the tool raised, after one attempt
    assert (
        await pricer.call("why_not", {"sku": "caviar"})
    ).result == "lookup_price UnknownSku after 1"
    # a failure the tool reported (ToolError) is not retried either
    assert (
        await pricer.call("why_not", {"sku": "broken"})
    ).result == "lookup_price ToolError after 1"
    # uncaught, it fails the turn: the state is as it was
    with pytest.raises(TurnFailed) as failed:
        await pricer.call("price", {"sku": "caviar"})
    assert failed.value.error_type == "ToolFailed"
    assert "no price for caviar" in str(failed.value)
    assert (await pricer.state()).state.priced == []


async def test_misuse_is_refused_before_any_activity_runs(
    perennial: Perennial, worker: Worker
) -> None:
    pricer = perennial.agent("test_pricer", unique())
    with pytest.raises(TurnFailed) as undeclared:
        await pricer.call("misuse", {"how": "undeclared"})
    assert undeclared.value.error_type == "TypeError"
    assert "not in this agent type's `tools`" in str(undeclared.value)
    with pytest.raises(TurnFailed) as bad:
        await pricer.call("misuse", {"how": "bad_arguments"})
    assert bad.value.error_type == "ToolArgumentsError"
    assert "sku: Input should be a valid string" in str(bad.value)
    history = await perennial.client.get_workflow_handle(
        f"test_pricer/{pricer.name}"
    ).fetch_history()
    assert not [e for e in history.events if e.HasField("activity_task_scheduled_event_attributes")]


def test_tools_of_one_name_run_as_activities_of_their_own() -> None:
    async def weather(city: str) -> str:
        return city

    async def forecast(city: str) -> str:
        return city

    mine = activity_tool(name="get_weather")(weather)
    theirs = activity_tool(name="get_weather", activity_name="travel.get_weather")(forecast)
    assert mine.definition() == theirs.definition()  # the model sees the same tool
    assert (mine.activity_type, theirs.activity_type) == ("get_weather", "travel.get_weather")
    found = collect_activity_tools([_holding((mine,)), _holding((theirs,))])
    assert {t.activity_type for t in found} == {"get_weather", "travel.get_weather"}
    clash = activity_tool(name="get_weather")(forecast)
    with pytest.raises(ValueError, match="give one of them another `activity_name=`"):
        collect_activity_tools([_holding((mine,)), _holding((clash,))])
    with pytest.raises(ValueError, match="activity name 'no spaces' must match"):
        activity_tool(activity_name="no spaces")


def _holding(tools: tuple[object, ...]) -> type:
    return type("Holding", (), {"tools": tools})
