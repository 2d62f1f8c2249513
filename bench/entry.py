"""How a benchmark script runs: console logging at WARNING, asyncio, and an exit that skips
interpreter teardown (where the SDK's runtime can abort with 134 and misreport a good run)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from perennial.client.logging import configure_logging
from perennial.client.process import exit_process


def run_main(
    amain: Callable[[argparse.Namespace], Coroutine[Any, Any, int]],
    parse_args: Callable[[], argparse.Namespace],
) -> None:
    configure_logging(fmt="console", level="WARNING")
    args = parse_args()
    try:
        code = asyncio.run(amain(args))
    except KeyboardInterrupt:
        code = 130
    # Workers, clients and the server are shut down by now.
    exit_process(code)
