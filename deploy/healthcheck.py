#!/usr/bin/env python3
"""Health checks of the Perennial containers (docker-compose.yml), installed in the image as
`perennial-healthcheck`. Exit 0 when healthy; otherwise 1, with the reason on stderr (Docker
keeps it: `docker inspect --format '{{json .State.Health}}' <container>`).

    perennial-healthcheck gateway        GET /health of the gateway in this container: 200 when
                                         Temporal answers and a worker polls the task queue
    perennial-healthcheck codec-server   POST /decode of no payloads, with the codec token: the
                                         server runs, has its keys and takes the token
    perennial-healthcheck worker         the worker in this container polls its task queue
                                         (Temporal's poller list names it `<pid>@<hostname>`)

Each check reads the same environment as the service it checks (PERENNIAL_GATEWAY_PORT,
PERENNIAL_CODEC_PORT, PERENNIAL_CODEC_TOKEN, TEMPORAL_ADDRESS, PERENNIAL_TASK_QUEUE, ...).
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

from perennial.client.settings import Settings

TIMEOUT_SECONDS = 5.0
#: A worker whose last poll is older than this is not polling (the gateway's /health uses the
#: same window: a poll is a long poll of up to a minute).
POLLER_FRESH = timedelta(seconds=90)


def _local(host: str) -> str:
    """Where this container reaches a server listening on `host`."""
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def check_gateway(settings: Settings) -> str | None:
    url = f"http://{_local(settings.gateway_host)}:{settings.gateway_port}/health"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS):
            return None
    except urllib.error.HTTPError as err:  # 503: its body says why
        return f"{url}: {err.code} {err.read().decode(errors='replace')[:300]}"
    except (OSError, ValueError) as err:
        return f"{url}: {err}"


def check_codec_server(settings: Settings) -> str | None:
    url = f"{settings.codec_url}/decode"
    headers = {"Content-Type": "application/json"}
    if settings.codec_token is not None:
        headers["Authorization"] = f"Bearer {settings.codec_token.get_secret_value()}"
    request = urllib.request.Request(url, data=b'{"payloads": []}', headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as err:
        return f"{url}: {err.code} {err.read().decode(errors='replace')[:300]}"
    except (OSError, ValueError) as err:
        return f"{url}: {err}"
    if answer.get("payloads", []) != []:
        return f"{url}: unexpected answer {answer!r:.200}"
    return None


async def _worker_pollers(settings: Settings) -> list[str]:
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    from perennial.client.connection import connect

    client = await connect(settings)
    described = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=settings.namespace,
            task_queue=TaskQueue(name=settings.task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        ),
        timeout=timedelta(seconds=TIMEOUT_SECONDS),
    )
    fresh = datetime.now(UTC) - POLLER_FRESH
    return [p.identity for p in described.pollers if p.last_access_time.ToDatetime(UTC) >= fresh]


def check_worker(settings: Settings) -> str | None:
    # The SDK's default identity is `<pid>@<hostname>`; each container has its own hostname.
    me = f"@{socket.gethostname()}"
    try:
        pollers = asyncio.run(asyncio.wait_for(_worker_pollers(settings), 3 * TIMEOUT_SECONDS))
    except Exception as err:  # Temporal unreachable, a bad key file, a timeout: not healthy
        return f"cannot ask Temporal at {settings.address} about its pollers: {err}"
    if not any(identity.endswith(me) for identity in pollers):
        return (
            f"no worker of this container ({me}) polls task queue {settings.task_queue!r}; "
            f"pollers: {pollers}"
        )
    return None


CHECKS = {"gateway": check_gateway, "codec-server": check_codec_server, "worker": check_worker}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in CHECKS:
        print(f"usage: perennial-healthcheck {{{'|'.join(CHECKS)}}}", file=sys.stderr)
        return 2
    try:
        settings = Settings.from_env()
    except Exception as err:  # a bad setting: the service itself would not start either
        print(f"bad settings: {err}", file=sys.stderr)
        return 1
    problem = CHECKS[argv[0]](settings)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    from perennial.client.process import exit_process

    # Not sys.exit: the Temporal SDK's runtime can abort the interpreter's finalization
    # (exit 134), which would read as unhealthy.
    exit_process(main(sys.argv[1:]))
