"""Perennial's search attributes: fleet-wide queries in the Web UI, the CLI and the client.

`temporal workflow list --query "AgentType='notes' AND AgentStatus='idle'"` works because every
agent keeps these current. The embedded server registers them at start; `perennial worker`
registers them on any other server where it may.
"""

from __future__ import annotations

from enum import StrEnum

from temporalio.common import SearchAttributeKey

AGENT_TYPE = SearchAttributeKey.for_keyword("AgentType")
AGENT_NAME = SearchAttributeKey.for_keyword("AgentName")
AGENT_STATUS = SearchAttributeKey.for_keyword("AgentStatus")
AGENT_VERSION = SearchAttributeKey.for_int("AgentVersion")
AGENT_LAST_ACTIVE = SearchAttributeKey.for_datetime("AgentLastActive")

ALL_KEYS = (AGENT_TYPE, AGENT_NAME, AGENT_STATUS, AGENT_VERSION, AGENT_LAST_ACTIVE)


class AgentStatus(StrEnum):
    IDLE = "idle"
    WORKING = "working"
    #: Idle, with schedules pending: the agent will wake on its own at the next alarm.
    WAITING_ALARM = "waiting_alarm"
    #: Idle, with calls waiting for a person to approve or reject them (update `decide`).
    WAITING_APPROVAL = "waiting_approval"


def agent_id(agent_type: str, name: str) -> str:
    """The workflow id of an agent: `{type}/{name}`."""
    return f"{agent_type}/{name}"


def split_agent_id(workflow_id: str, agent_type: str) -> str:
    """The agent's name from its workflow id (the whole id if it lacks the type prefix)."""
    prefix = f"{agent_type}/"
    return workflow_id[len(prefix) :] if workflow_id.startswith(prefix) else workflow_id
