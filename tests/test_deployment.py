"""docker-compose.yml and the Dockerfile, checked statically (no Docker engine runs here)."""

from __future__ import annotations

from pathlib import Path

import yaml

from perennial.client.settings import _ENV
from perennial.workflows.visibility import ALL_KEYS

ROOT = Path(__file__).resolve().parent.parent


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_the_whole_stack() -> None:
    services = _compose()["services"]
    assert {"postgresql", "temporal", "temporal-ui", "worker", "temporal-setup"} <= set(services)
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        for dep in service.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"


def test_worker_reaches_temporal_by_service_name() -> None:
    services = _compose()["services"]
    env = services["worker"]["environment"]
    host, port = env["TEMPORAL_ADDRESS"].split(":")
    assert host == "temporal" and port == "7233"
    known = set(_ENV.values()) | {"OPENAI_API_KEY", "OPENAI_BASE_URL"}
    assert set(env) <= known, f"unknown settings in compose: {set(env) - known}"


def test_setup_registers_every_search_attribute() -> None:
    command = " ".join(_compose()["services"]["temporal-setup"]["command"])
    for key in ALL_KEYS:
        assert f"{key.name}=" in command, key.name


def test_dockerfile_copies_every_folder_the_distribution_maps() -> None:
    """The image installs the one package, `perennial`, from the folders pyproject.toml maps
    into it (and worker.py, which perennial/worker.py links to)."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dockerfile = (ROOT / "Dockerfile").read_text()
    for folder in set(project["tool"]["setuptools"]["package-dir"].values()):
        assert f"COPY {folder} ./{folder}" in dockerfile, folder
    assert "COPY worker.py ./" in dockerfile