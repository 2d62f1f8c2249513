"""What the benchmark scripts share: how one runs (`run_main`), its own dev server
(`dev_server`), workers in their own processes, percentiles, a table, and the results file
with what was measured (`environment`, `save_results`)."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import temporalio

from perennial.client import Settings
from perennial.client.logging import configure_logging
from perennial.client.process import exit_process
from perennial.client.server import DevServer, free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"


def run_main(
    amain: Callable[[argparse.Namespace], Coroutine[Any, Any, int]],
    parse_args: Callable[[], argparse.Namespace],
) -> None:
    """Console logging at WARNING, asyncio, and an exit that skips interpreter teardown
    (where the SDK's runtime can abort with 134 and misreport a good run)."""
    configure_logging(fmt="console", level="WARNING")
    args = parse_args()
    try:
        code = asyncio.run(amain(args))
    except KeyboardInterrupt:
        code = 130
    # Workers, clients and the server are shut down by now.
    exit_process(code)


# --------------------------------------------------------------------------- server, workers


@asynccontextmanager
async def dev_server(prefix: str, **settings: Any) -> AsyncIterator[tuple[DevServer, Settings]]:
    """A dev server of the benchmark's own (a temp dir, free ports, SQLite in WAL mode),
    removed at the end: the server, and `Settings(**settings)` pointing at it."""
    with tempfile.TemporaryDirectory(prefix=prefix, ignore_cleanup_errors=True) as tmp:
        base = Settings(
            state_dir=Path(tmp), server_port=free_port(), ui_port=free_port(), **settings
        )
        async with DevServer(base, headless=True) as server:
            yield server, base.model_copy(update={"temporal_address": server.address})


def start_worker(
    settings: Settings, *, module: str | None = None, log: Path | None = None, **env: str
) -> subprocess.Popen[bytes]:
    """A worker in its own process, as deployed: `python worker.py` (or `python -m module`)
    configured by environment from `settings`, plus `env`; its output to `log` if given."""
    command = [sys.executable, "-m", module] if module else [sys.executable, "worker.py"]
    environ = dict(os.environ)
    environ.update(
        TEMPORAL_ADDRESS=settings.address,
        PERENNIAL_TASK_QUEUE=settings.task_queue,
        PERENNIAL_MAX_CACHED_WORKFLOWS=str(settings.max_cached_workflows),
        PERENNIAL_LOG_LEVEL="WARNING",
    )
    if settings.openai_base_url:
        environ["OPENAI_BASE_URL"] = settings.openai_base_url
    environ.update(env)
    if log is None:
        return subprocess.Popen(command, cwd=ROOT, env=environ, start_new_session=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            command, cwd=ROOT, env=environ, stdout=out, stderr=out, start_new_session=True
        )


async def stop_process(proc: subprocess.Popen[bytes], *, grace: float = 120.0) -> float:
    """SIGTERM (the worker shuts down cleanly), SIGKILL after `grace`. Returns the seconds."""
    started = time.perf_counter()
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return time.perf_counter() - started


def rss_mb(pid: int) -> float:
    """A process's resident memory (VmRSS), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


# --------------------------------------------------------------------------- figures


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, `q` in 0..100: the smallest sample with at least q% of the
    samples at or below it."""
    ordered = sorted(samples)
    rank = -(-q * len(ordered) // 100)  # ceil, exact for integer q
    return ordered[min(len(ordered), max(1, int(rank))) - 1]


def print_table(
    rows: Sequence[Sequence[str]],
    *,
    align: str,
    widths: Sequence[int] | None = None,
    sep: str = "  ",
    rule: bool = False,
) -> None:
    """Print `rows` (the first is the header) in columns: `align` has a `<` (left) or `>`
    (right) per column; each column as wide as its widest cell unless `widths` says; `rule`
    draws dashes under the header."""
    widths = widths or [max(len(row[i]) for row in rows) for i in range(len(align))]

    def line(cells: Sequence[str]) -> str:
        return sep.join(
            f"{cell:{a}{w}}" for cell, a, w in zip(cells, align, widths, strict=True)
        ).rstrip()

    print(line(rows[0]))
    if rule:
        print(sep.join("-" * w for w in widths))
    for row in rows[1:]:
        print(line(row))


# --------------------------------------------------------------------------- results


def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip()


def source_digest() -> str:
    """A hash of the measured code (the tree may have uncommitted changes)."""
    digest = hashlib.sha256()
    for path in sorted(ROOT.glob("*.py")) + sorted(
        p for d in ("workflows", "client", "activities", "bench") for p in (ROOT / d).rglob("*.py")
    ):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def environment() -> dict[str, Any]:
    """What the figures were measured on, including uncommitted changes to measured code."""
    dirty = _git("status", "--short", "--", "workflows", "client", "worker.py", "activities")
    return {
        "source": str(ROOT),
        "source_digest": source_digest(),
        "python": platform.python_version(),
        "temporalio": temporalio.__version__,
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_uncommitted": dirty.splitlines(),
        "platform": platform.platform(),
    }


def save_results(name: str, results: dict[str, Any], *, out: Path | None = None) -> Path:
    """Write `results` as JSON to `out`, or to `bench/results/<name>-<UTC time>.json`."""
    path = out or RESULTS_DIR / f"{name}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str))
    return path


__all__ = [
    "RESULTS_DIR",
    "ROOT",
    "dev_server",
    "environment",
    "percentile",
    "print_table",
    "rss_mb",
    "run_main",
    "save_results",
    "start_worker",
    "stop_process",
]
