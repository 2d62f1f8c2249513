"""Token streaming and stop: what following a turn costs, in one run. Prints figures.

    .venv/bin/python -m bench.bench_streaming            # ~2 minutes on 2 cores
    .venv/bin/python -m bench.bench_streaming --quick    # scaled down (under a minute)

Starts its own embedded dev server, a scripted Chat Completions server that streams its answer
at a fixed pace (a first chunk after `--ttft` ms, then a chunk every `--pace` ms), a worker in
its own process (`python worker.py`, as deployed) and, unless --no-gateway, a gateway in its own
process. Measures:

1. Time to first delta: reading the scripted server's stream directly (the `openai` client),
   through `AgentHandle.ask_stream`, and through the gateway (SSE on POST .../ask); the
   target is <= 50 ms added at p50 over the direct read.
2. History events per streamed turn for answers of 40 to 4,000 characters (10 to 1,000 chunks):
   must not grow with the number of tokens.
3. Stop: from `stop()` called mid-stream to the turn ended (stop returns), and to the model
   activity's cancellation recorded in history (the activity learnt it at a heartbeat).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

import httpx
from openai import AsyncOpenAI
from temporalio.api.enums.v1 import EventType

from bench.harness import ROOT, dev_server, percentile, run_main, start_worker, stop_process
from perennial.client import DeltaItem, Perennial, Settings, TurnStopped
from perennial.testing.scripted_llm import Reply, ScriptedLLM, usage

CANCELED = EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED


@dataclass
class Scale:
    asks: int = 60
    warmup: int = 5
    stops: int = 20
    sizes: tuple[int, ...] = (40, 400, 4000)


QUICK = Scale(asks=20, warmup=3, stops=8)


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _ms(samples: list[float]) -> str:
    return f"p50 {percentile(samples, 50) * 1000:6.1f} ms  p95 {percentile(samples, 95) * 1000:6.1f} ms"


class Bench:
    def __init__(self, args: argparse.Namespace, llm: ScriptedLLM, settings: Settings) -> None:
        self.scale = QUICK if args.quick else Scale()
        self.args = args
        self.llm = llm
        self.settings = settings
        self.results: dict[str, object] = {}

    def answer(self, chars: int) -> Reply:
        body = ("Streaming tokens one by one. " * (chars // 29 + 1))[:chars]
        return Reply(content=body, usage=usage(50, chars // 4), delay=self.args.ttft / 1000,
                     chunk_chars=4, chunk_delay=self.args.pace / 1000)  # fmt: skip

    # ------------------------------------------------------------------ 1. time to first delta

    async def direct(self) -> list[float]:
        client = AsyncOpenAI(base_url=self.llm.url, api_key="unused", max_retries=0)
        samples = []
        for i in range(self.scale.warmup + self.scale.asks):
            started = time.perf_counter()
            stream = await client.chat.completions.create(
                model="scripted", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            first = None
            async for chunk in stream:
                if first is None and chunk.choices and chunk.choices[0].delta.content:
                    first = time.perf_counter() - started
            if i >= self.scale.warmup and first is not None:
                samples.append(first)
        await client.close()
        return samples

    async def through_client(self, perennial: Perennial) -> list[float]:
        agent = perennial.agent("assistant", _unique("ttfd"))
        samples = []
        for i in range(self.scale.warmup + self.scale.asks):
            started = time.perf_counter()
            first = None
            async for item in agent.ask_stream(f"question {i}"):
                if first is None and isinstance(item, DeltaItem):
                    first = time.perf_counter() - started
            if i >= self.scale.warmup and first is not None:
                samples.append(first)
        return samples

    async def through_gateway(self, url: str) -> list[float]:
        name = _unique("ttfd-http")
        samples = []
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            for i in range(self.scale.warmup + self.scale.asks):
                started = time.perf_counter()
                first = None
                async with http.stream(
                    "POST", f"/agents/assistant/{name}/ask", json={"text": f"question {i}"},
                    headers={"Accept": "text/event-stream"},
                ) as response:  # fmt: skip
                    response.raise_for_status()
                    async for line in response.aiter_lines():
                        if first is None and line.startswith("event: delta"):
                            first = time.perf_counter() - started
                if i >= self.scale.warmup and first is not None:
                    samples.append(first)
        return samples

    # ------------------------------------------------------------------ 2. history per turn

    async def history_per_turn(self, perennial: Perennial) -> dict[int, int]:
        events: dict[int, int] = {}
        for chars in self.scale.sizes:
            self.llm.respond = lambda request, chars=chars: Reply(
                content=("x" * chars), usage=usage(50, chars // 4), chunk_chars=4
            )
            agent = perennial.agent("assistant", _unique("history"))
            await agent.ask("warm up")  # the first turn also starts the workflow
            handle = perennial.client.get_workflow_handle(agent.id)
            before = len((await handle.fetch_history()).events)
            deltas = 0
            async for item in agent.ask_stream("measure this one"):
                deltas += isinstance(item, DeltaItem)
            events[chars] = len((await handle.fetch_history()).events) - before
            print(f"  {chars:5} chars ({chars // 4:4} chunks, {deltas:3} deltas seen): "
                  f"{events[chars]} history events for the turn", flush=True)  # fmt: skip
        return events

    # ------------------------------------------------------------------ 3. stop

    async def stop_latency(self, perennial: Perennial) -> tuple[list[float], list[float]]:
        ended, cancelled = [], []
        self.llm.respond = lambda request: Reply(
            content="y" * 4000, usage=usage(50, 1000), chunk_chars=4, chunk_delay=0.01
        )  # a 10 s answer
        for _ in range(self.scale.stops):
            agent = perennial.agent("assistant", _unique("stop"))
            stream = agent.ask_stream("a long answer please")
            async for item in stream:
                if isinstance(item, DeltaItem):
                    break
            started = time.perf_counter()
            result = await agent.stop(reason="bench")
            ended.append(time.perf_counter() - started)
            assert result.stopped, result
            handle = perennial.client.get_workflow_handle(agent.id)
            while not any(e.event_type == CANCELED for e in (await handle.fetch_history()).events):
                await asyncio.sleep(0.01)
            cancelled.append(time.perf_counter() - started)
            try:
                async for _ in stream:
                    pass
            except TurnStopped:
                pass
        return ended, cancelled

    # ------------------------------------------------------------------ run

    async def run(self, perennial: Perennial, gateway_url: str | None) -> None:
        self.llm.respond = lambda request: self.answer(400)
        direct = await self.direct()
        client = await self.through_client(perennial)
        added = percentile(client, 50) - percentile(direct, 50)
        print(f"  time to first delta, direct from the model server   {_ms(direct)}")
        print(f"  time to first delta, AgentHandle.ask_stream          {_ms(client)}  "
              f"(+{added * 1000:.1f} ms at p50; target <= 50)")  # fmt: skip
        self.results.update(direct=direct, client=client, client_added_p50=added)
        if gateway_url is not None:
            http = await self.through_gateway(gateway_url)
            added_http = percentile(http, 50) - percentile(direct, 50)
            print(f"  time to first delta, gateway SSE                     {_ms(http)}  "
                  f"(+{added_http * 1000:.1f} ms at p50; target <= 50)")  # fmt: skip
            self.results.update(gateway=http, gateway_added_p50=added_http)
        self.results["history_events"] = await self.history_per_turn(perennial)
        ended, cancelled = await self.stop_latency(perennial)
        print(f"  stop called -> turn ended (stop returned)            {_ms(ended)}")
        print(f"  stop called -> model activity cancelled in history   {_ms(cancelled)}")
        self.results.update(stop_ended=ended, stop_cancelled=cancelled)


def _start_gateway(settings: Settings, port: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, TEMPORAL_ADDRESS=settings.address,
               PERENNIAL_TASK_QUEUE=settings.task_queue, PERENNIAL_LOG_LEVEL="WARNING")  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "perennial.client.cli", "gateway", "--port", str(port)],
        cwd=ROOT, env=env, start_new_session=True,
    )  # fmt: skip


async def _wait_healthy(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        for _ in range(300):
            try:
                if (await http.get("/health")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"the gateway at {url} did not become healthy")


async def amain(args: argparse.Namespace) -> int:
    from perennial.client.server import free_port

    with ScriptedLLM() as llm:
        async with dev_server("bench-stream-") as (_, base):
            settings = base.model_copy(
                update={"task_queue": _unique("bench-stream"), "openai_base_url": llm.url}
            )
            worker = start_worker(settings)
            gateway = None
            url = None
            if not args.no_gateway:
                port = free_port()
                gateway = _start_gateway(settings, port)
                url = f"http://127.0.0.1:{port}"
            try:
                perennial = await Perennial.connect(settings)
                if url is not None:
                    await _wait_healthy(url)
                bench = Bench(args, llm, settings)
                print(f"model: first chunk after {args.ttft} ms, then one every {args.pace} ms; "
                      f"stream interval {settings.stream_interval_ms} ms")  # fmt: skip
                await bench.run(perennial, url)
                print(json.dumps({k: v for k, v in bench.results.items()
                                  if not isinstance(v, list)}, default=str))  # fmt: skip
            finally:
                if gateway is not None:
                    await stop_process(gateway, grace=10)
                await stop_process(worker, grace=20)
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-gateway", action="store_true")
    parser.add_argument("--ttft", type=float, default=200.0, help="model's first chunk, ms")
    parser.add_argument("--pace", type=float, default=20.0, help="ms between chunks")
    return parser.parse_args()


if __name__ == "__main__":
    run_main(amain, parse_args)
