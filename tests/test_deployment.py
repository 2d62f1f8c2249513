"""The deployable stack: docker-compose.yml, the Dockerfile and deploy/, checked without a
Docker engine (none runs here):

- the compose file statically: every service, health checks, restarts, start order, secrets,
  published ports (against docs/deployment.md), every setting name (against the settings);
- the settings the gateway and the codec server get there, given to the real classes: they
  would start (auth present where they listen beyond loopback);
- `docker compose config`, where a Compose v2 client is installed;
- the image's build context, installed into a fresh virtualenv: a complete package;
- the health-check command against real services (Temporal dev server, worker, gateway,
  codec server), and the Web UI's codec proxy (nginx, where installed) in a real Chromium.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import pytest_asyncio
import yaml
from temporalio.worker import Worker

from perennial.client import Perennial, Settings
from perennial.client.codec import new_key_line
from perennial.client.codec_server import CodecServer
from perennial.client.gateway.auth import (
    Authenticator,
    InsecureGateway,
    check_binding,
    hash_token,
    new_token,
)
from perennial.client.gateway.server import GatewayServer
from perennial.client.server import DevServer, free_port
from perennial.client.settings import _ENV
from perennial.worker import build_worker
from perennial.workflows.visibility import ALL_KEYS
from tests.conftest import ROOT
from tests.support import unique

COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DEPLOYMENT_DOC = ROOT / "docs" / "deployment.md"
HEALTHCHECK = ROOT / "deploy" / "healthcheck.py"
PROXY_TEMPLATE = ROOT / "deploy" / "codec-proxy.conf.template"

#: The services that run the Perennial image.
PERENNIAL_SERVICES = ("worker", "gateway", "codec-server")
#: Services that run once and exit; every other one runs for good.
ONE_SHOT = ("temporal-setup",)
#: The environment names temporalio/ui's image reads (server/config/docker.yaml of
#: temporalio/ui), so a misspelt one is caught here rather than silently ignored there.
UI_ENV = frozenset({
    "TEMPORAL_ADDRESS", "TEMPORAL_UI_PORT", "TEMPORAL_UI_PUBLIC_PATH", "TEMPORAL_UI_ENABLED",
    "TEMPORAL_BANNER_TEXT", "TEMPORAL_CLOUD_UI", "TEMPORAL_DEFAULT_NAMESPACE",
    "TEMPORAL_FEEDBACK_URL", "TEMPORAL_NOTIFY_ON_NEW_VERSION", "TEMPORAL_CONFIG_REFRESH_INTERVAL",
    "TEMPORAL_SHOW_TEMPORAL_SYSTEM_NAMESPACE", "TEMPORAL_DISABLE_WRITE_ACTIONS",
    "TEMPORAL_WORKFLOW_TERMINATE_DISABLED", "TEMPORAL_WORKFLOW_CANCEL_DISABLED",
    "TEMPORAL_WORKFLOW_SIGNAL_DISABLED", "TEMPORAL_WORKFLOW_UPDATE_DISABLED",
    "TEMPORAL_WORKFLOW_RESET_DISABLED", "TEMPORAL_BATCH_ACTIONS_DISABLED",
    "TEMPORAL_START_WORKFLOW_DISABLED", "TEMPORAL_HIDE_WORKFLOW_QUERY_ERRORS",
    "TEMPORAL_REFRESH_WORKFLOW_COUNTS_DISABLED", "TEMPORAL_ACTIVITY_COMMANDS_DISABLED",
    "TEMPORAL_CSRF_COOKIE_INSECURE", "TEMPORAL_CORS_UNSAFE_ALLOW_ALL_ORIGINS",
    "TEMPORAL_CORS_ORIGINS", "TEMPORAL_TLS_CA", "TEMPORAL_TLS_CERT", "TEMPORAL_TLS_KEY",
    "TEMPORAL_TLS_CA_DATA", "TEMPORAL_TLS_CERT_DATA", "TEMPORAL_TLS_KEY_DATA",
    "TEMPORAL_TLS_ENABLE_HOST_VERIFICATION", "TEMPORAL_TLS_SERVER_NAME",
    "TEMPORAL_UI_SERVER_TLS_CERT", "TEMPORAL_UI_SERVER_TLS_KEY", "TEMPORAL_AUTH_ENABLED",
    "TEMPORAL_AUTH_LABEL", "TEMPORAL_AUTH_TYPE", "TEMPORAL_AUTH_PROVIDER_URL",
    "TEMPORAL_AUTH_ISSUER_URL", "TEMPORAL_AUTH_CLIENT_ID", "TEMPORAL_AUTH_CLIENT_SECRET",
    "TEMPORAL_AUTH_CALLBACK_URL", "TEMPORAL_AUTH_USE_ID_TOKEN_AS_BEARER", "TEMPORAL_AUTH_CA",
    "TEMPORAL_AUTH_CA_DATA", "TEMPORAL_AUTH_SCOPES", "TEMPORAL_CODEC_ENDPOINT",
    "TEMPORAL_CODEC_PASS_ACCESS_TOKEN", "TEMPORAL_CODEC_INCLUDE_CREDENTIALS",
    "TEMPORAL_CODEC_DEFAULT_ERROR_MESSAGE", "TEMPORAL_CODEC_DEFAULT_ERROR_LINK",
    "TEMPORAL_FORWARD_HEADERS", "TEMPORAL_HIDE_LOGS",
})  # fmt: skip
#: `${NAME}`, `${NAME:-default}`, `${NAME:?error}` in the compose file.
INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
SETTING_PREFIXES = ("PERENNIAL_", "TEMPORAL_", "OPENAI_")


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _services() -> dict[str, dict[str, Any]]:
    return _compose()["services"]


def _env(service: str) -> dict[str, str]:
    env = _services()[service].get("environment", {})
    assert isinstance(env, dict), f"{service}: environment as a mapping, please"
    return {name: str(value) for name, value in env.items()}


def _secrets(service: str) -> set[str]:
    return {
        s if isinstance(s, str) else s["source"] for s in _services()[service].get("secrets", [])
    }


def _published(service: str) -> list[tuple[str, str, str]]:
    """(host ip, host port, container port) of each published port (short syntax)."""
    found = []
    for spec in _services()[service].get("ports", []):
        parts = str(spec).split(":")
        host_ip = parts[0] if len(parts) == 3 else "0.0.0.0"
        found.append((host_ip, parts[-2], parts[-1]))
    return found


def _interpolations() -> list[tuple[str, str | None, str]]:
    return [(m[1], m[2], m[3]) for m in INTERPOLATION.finditer(COMPOSE.read_text())]


# --------------------------------------------------------------------------- the compose file


def test_compose_has_the_whole_stack() -> None:
    services = _services()
    assert set(services) == {
        "postgresql", "temporal", "temporal-setup", "temporal-ui",
        "worker", "gateway", "codec-server", "codec-proxy",
    }  # fmt: skip
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        for dep in service.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"
    for name in PERENNIAL_SERVICES:
        assert services[name]["build"] == ".", name
        assert services[name]["image"] == services["worker"]["image"], "one image for all three"
    assert services["worker"]["command"] == ["perennial", "worker"]
    assert services["gateway"]["command"] == ["perennial", "gateway"]
    assert services["codec-server"]["command"] == ["perennial", "codec-server"]


def test_every_long_running_service_has_a_health_check_and_a_restart_policy() -> None:
    for name, service in _services().items():
        if name in ONE_SHOT:
            assert service.get("restart") == "no", name
            continue
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no health check"
        assert service.get("restart") in ("unless-stopped", "always"), name


def test_the_perennial_services_check_themselves_with_the_images_command() -> None:
    services = _services()
    for name in PERENNIAL_SERVICES:
        assert services[name]["healthcheck"]["test"] == ["CMD", "perennial-healthcheck", name]
    # The image installs that command from deploy/healthcheck.py.
    assert (
        "COPY deploy/healthcheck.py /usr/local/bin/perennial-healthcheck" in DOCKERFILE.read_text()
    )
    assert "wget" in services["temporal-ui"]["healthcheck"]["test"]
    assert "/healthz" in services["temporal-ui"]["healthcheck"]["test"][-1]


def test_start_order_gateway_after_temporal_and_a_worker() -> None:
    services = _services()
    gateway = services["gateway"]["depends_on"]
    assert gateway["temporal"]["condition"] == "service_healthy"
    assert gateway["worker"]["condition"] == "service_healthy"
    assert services["worker"]["depends_on"]["temporal-setup"]["condition"] == (
        "service_completed_successfully"
    )
    assert services["temporal-setup"]["depends_on"]["temporal"]["condition"] == "service_healthy"
    assert services["temporal"]["depends_on"]["postgresql"]["condition"] == "service_healthy"
    assert services["codec-proxy"]["depends_on"]["codec-server"]["condition"] == "service_healthy"
    # Temporal is healthy once the workers' namespace exists, not only once it answers.
    temporal_check = services["temporal"]["healthcheck"]["test"]
    assert "namespace" in temporal_check and "default" in temporal_check


def test_workers_scale() -> None:
    worker = _services()["worker"]
    assert worker["deploy"]["replicas"] >= 2
    assert "container_name" not in worker and "ports" not in worker  # or --scale would clash


def test_the_key_file_reaches_the_perennial_services_and_nothing_else() -> None:
    services = _services()
    for name in services:
        mounted = "perennial-keys" in _secrets(name)
        assert mounted == (name in PERENNIAL_SERVICES), name
        if mounted:
            assert _env(name)["PERENNIAL_ENCRYPTION_KEY_FILE"] == "/run/secrets/perennial-keys"
        else:
            assert "PERENNIAL_ENCRYPTION_KEY_FILE" not in _env(name), name
    ui = services["temporal-ui"]
    assert "secrets" not in ui and "volumes" not in ui
    # Secrets are mounted read-only at /run/secrets; from a file given when starting.
    secret = _compose()["secrets"]["perennial-keys"]
    assert secret["file"].startswith("${PERENNIAL_ENCRYPTION_KEY_FILE:?")


def test_missing_secrets_stop_compose_with_a_message() -> None:
    """`${NAME:?message}`: Compose refuses to run and prints the message when NAME is unset."""
    required = {name: message for name, op, message in _interpolations() if op == ":?"}
    assert set(required) == {
        "PERENNIAL_ENCRYPTION_KEY_FILE", "PERENNIAL_GATEWAY_TOKENS_FILE", "PERENNIAL_CODEC_TOKEN",
    }  # fmt: skip
    for name, message in required.items():
        assert "docs/deployment.md" in message, name
    assert _compose()["secrets"]["gateway-tokens"]["file"].startswith(
        "${PERENNIAL_GATEWAY_TOKENS_FILE:?"
    )


def test_every_setting_name_in_compose_is_a_setting() -> None:
    """Each name a Perennial container reads, and each PERENNIAL_/TEMPORAL_/OPENAI_ name taken
    from the caller's environment, is one that settings.py reads: a typo fails here, not in a
    container that silently ignores it. The Web UI's names are the UI's own."""
    known = set(_ENV.values())
    for name in PERENNIAL_SERVICES:
        unknown = set(_env(name)) - known
        assert not unknown, f"{name}: not settings: {unknown}"
    proxy_env = {n for n in _env("codec-proxy") if n.startswith(SETTING_PREFIXES)}
    assert proxy_env <= known
    for name, _, _ in _interpolations():
        if name.startswith(SETTING_PREFIXES):
            assert name in known, f"${{{name}}} is not a setting"
    ui_unknown = {n for n in _env("temporal-ui") if n.startswith("TEMPORAL_")} - UI_ENV
    assert not ui_unknown, f"temporal-ui: names temporalio/ui does not read: {ui_unknown}"


def test_setup_registers_every_search_attribute() -> None:
    command = " ".join(_services()["temporal-setup"]["command"])
    for key in ALL_KEYS:
        assert f"{key.name}=" in command, key.name


def test_perennial_services_reach_temporal_by_service_name() -> None:
    for name in ("worker", "gateway"):
        assert _env(name)["TEMPORAL_ADDRESS"] == "temporal:7233", name
        assert _env(name)["PERENNIAL_TASK_QUEUE"] == _env("worker")["PERENNIAL_TASK_QUEUE"]
    assert _env("temporal-ui")["TEMPORAL_ADDRESS"] == "temporal:7233"


# --------------------------------------------------------------------------- auth, ports, UI


def _settings_in_container(service: str, files: dict[str, Path]) -> Settings:
    """The settings `service` starts with: its environment with the caller's variables filled
    in (a codec token; the optional ones unset), /run/secrets/NAME replaced by `files[NAME]`."""
    caller = {"PERENNIAL_CODEC_TOKEN": "t" * 43}
    env: dict[str, str] = {}
    for name, value in _env(service).items():
        value = INTERPOLATION.sub(lambda m: caller.get(m[1], ""), value)
        if value.startswith("/run/secrets/"):
            value = str(files[value.removeprefix("/run/secrets/")])
        env[name] = value
    return Settings.from_env(env)


@pytest.fixture
def secret_files(tmp_path: Path) -> dict[str, Path]:
    keys = tmp_path / "keys"
    keys.write_text(new_key_line("k1") + "\n")
    tokens = tmp_path / "gateway-tokens.toml"
    tokens.write_text(
        f'[[token]]\nname = "web-app"\nsha256 = "{hash_token(new_token())}"\nscopes = ["*:*"]\n'
    )
    return {"perennial-keys": keys, "gateway-tokens": tokens}


def test_the_gateway_listens_everywhere_and_so_has_auth(secret_files: dict[str, Path]) -> None:
    assert "gateway-tokens" in _secrets("gateway")
    settings = _settings_in_container("gateway", secret_files)
    assert settings.gateway_host == "0.0.0.0"
    auth = Authenticator.from_settings(settings)
    assert not auth.open
    assert check_binding(settings.gateway_host, auth) is None  # it would start
    # Without the tokens file it would refuse to start.
    bare = settings.model_copy(update={"gateway_tokens_file": None})
    with pytest.raises(InsecureGateway, match="refusing to listen"):
        check_binding(bare.gateway_host, Authenticator.from_settings(bare))


def test_the_codec_server_listens_everywhere_and_so_has_a_token(
    secret_files: dict[str, Path],
) -> None:
    settings = _settings_in_container("codec-server", secret_files)
    assert settings.codec_host == "0.0.0.0" and settings.codec_token is not None
    CodecServer(settings)  # raises InsecureCodecServer without a token
    assert _env("codec-server")["PERENNIAL_CODEC_TOKEN"].startswith("${PERENNIAL_CODEC_TOKEN:?")
    assert (
        _env("codec-proxy")["PERENNIAL_CODEC_TOKEN"]
        == _env("codec-server")["PERENNIAL_CODEC_TOKEN"]
    )


def _documented_ports() -> dict[str, str]:
    """docs/deployment.md's services table: service -> what it says is published."""
    rows = re.findall(r"^\| `([a-z-]+)` \|[^|]*\| ([^|]+) \|", DEPLOYMENT_DOC.read_text(), re.M)
    return {service: published.strip() for service, published in rows}


def test_ports_are_published_as_documented() -> None:
    documented = _documented_ports()
    assert set(documented) == set(_services()), "docs/deployment.md's table lists every service"
    for name in _services():
        published = _published(name)
        if documented[name] == "—":
            assert published == [], name
            continue
        [(host_ip, host_port, _)] = published
        where = (
            f"`{host_port}` (every interface)"
            if host_ip == "0.0.0.0"
            else f"`{host_ip}:{host_port}`"
        )
        assert documented[name] == where, name
    # Only what asks for a token listens beyond this host's loopback.
    for name in _services():
        for host_ip, _, _ in _published(name):
            assert host_ip == "127.0.0.1" or name in ("gateway", "codec-server"), name
    # Each published container port is the one its server listens on.
    assert _published("gateway")[0][2] == _env("gateway")["PERENNIAL_GATEWAY_PORT"] == "8000"
    assert (
        _published("codec-server")[0][2] == _env("codec-server")["PERENNIAL_CODEC_PORT"] == "8081"
    )
    assert f"listen {_published('codec-proxy')[0][2]};" in PROXY_TEMPLATE.read_text()


def test_the_web_uis_codec_endpoint_is_where_the_browser_reaches_the_codec_server() -> None:
    ui = _env("temporal-ui")
    [(_, proxy_port, _)] = _published("codec-proxy")
    assert ui["TEMPORAL_CODEC_ENDPOINT"] == f"http://localhost:{proxy_port}"
    # The browser cannot send the codec token (the UI sends only an OIDC login's token, over
    # https), so the proxy adds it; and it passes the codec server's CORS answers on.
    assert ui["TEMPORAL_CODEC_PASS_ACCESS_TOKEN"] == "false"
    template = PROXY_TEMPLATE.read_text()
    codec_port = _env("codec-server")["PERENNIAL_CODEC_PORT"]
    assert f"set $codec_server http://codec-server:{codec_port};" in template
    assert 'proxy_set_header Authorization "Bearer ${PERENNIAL_CODEC_TOKEN}";' in template
    mount = _services()["codec-proxy"]["volumes"][0]
    assert mount == (
        "./deploy/codec-proxy.conf.template:/etc/nginx/templates/default.conf.template:ro"
    )
    # The codec server admits the origins the UI is opened from, which the UI admits too.
    [(_, ui_port, _)] = _published("temporal-ui")
    origins = {f"http://localhost:{ui_port}", f"http://127.0.0.1:{ui_port}"}
    assert set(_env("codec-server")["PERENNIAL_CODEC_CORS_ORIGINS"].split(",")) == origins
    assert set(ui["TEMPORAL_CORS_ORIGINS"].split(",")) == origins


# --------------------------------------------------------------------------- docker compose


def _compose_command() -> list[str] | None:
    """A Compose v2 client (`docker compose`, or a standalone `docker-compose` v2), or None."""
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        done = subprocess.run([*command, "version"], capture_output=True, text=True, timeout=30)
        if done.returncode == 0 and re.search(r"v?2\.\d+", done.stdout):
            return command
    return None


def test_docker_compose_accepts_the_file(secret_files: dict[str, Path]) -> None:
    command = _compose_command()
    if command is None:
        pytest.skip("no Docker Compose v2 client here (`docker compose` or `docker-compose`)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(SETTING_PREFIXES)}
    env |= {
        "PERENNIAL_ENCRYPTION_KEY_FILE": str(secret_files["perennial-keys"]),
        "PERENNIAL_GATEWAY_TOKENS_FILE": str(secret_files["gateway-tokens"]),
        "PERENNIAL_CODEC_TOKEN": new_token(),
    }
    config = [*command, "-f", str(COMPOSE), "config"]
    done = subprocess.run([*config, "--quiet"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(
        subprocess.run([*config], env=env, capture_output=True, text=True, timeout=60).stdout
    )
    assert resolved["services"]["worker"]["secrets"][0]["source"] == "perennial-keys"
    for missing in ("PERENNIAL_ENCRYPTION_KEY_FILE", "PERENNIAL_CODEC_TOKEN"):
        without = {k: v for k, v in env.items() if k != missing}
        done = subprocess.run(config, env=without, capture_output=True, text=True, timeout=60)
        assert done.returncode != 0 and missing in done.stderr, done.stderr


# --------------------------------------------------------------------------- the image


def _build_stage_sources() -> list[str]:
    """What the Dockerfile's build stage (the first) copies from the build context."""
    stages = re.split(r"^FROM ", DOCKERFILE.read_text(), flags=re.M)
    assert stages[1].splitlines()[0].endswith(" AS build"), "the first stage: FROM ... AS build"
    sources = []
    for line in stages[1].splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            sources += words[1:-1]
    return sources


def _folder_of(package: str, package_dir: dict[str, str]) -> Path:
    """The repository folder of `package`, through pyproject's package-dir mapping."""
    parent = max((p for p in package_dir if package == p or package.startswith(p + ".")), key=len)
    rest = package.removeprefix(parent).strip(".").split(".") if package != parent else []
    return ROOT.joinpath(package_dir[parent], *rest)


def test_the_image_copies_every_folder_the_distribution_maps() -> None:
    """The image installs the one package, `perennial`, from the folders pyproject.toml maps
    into it (with the gateway's static files), and worker.py, which perennial/worker.py links to."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    setuptools = project["tool"]["setuptools"]
    sources = _build_stage_sources()
    for folder in set(setuptools["package-dir"].values()):
        assert folder in sources, folder
    assert {"pyproject.toml", "README.md", "worker.py"} <= set(sources)
    for package, patterns in setuptools["package-data"].items():
        folder = _folder_of(package, setuptools["package-dir"])
        assert folder.relative_to(ROOT).parts[0] in sources, package
        for pattern in patterns:
            assert list(folder.glob(pattern)), f"{package}: nothing matches {pattern}"
    dockerignore = ROOT / ".dockerignore"
    if dockerignore.exists():
        assert "static" not in dockerignore.read_text(), ".dockerignore leaves out static files"


def test_the_image_runs_as_its_own_user_with_no_image_wide_health_check() -> None:
    dockerfile = DOCKERFILE.read_text()
    [user] = re.findall(r"^USER (\S+)$", dockerfile, re.M)
    assert user.split(":")[0] not in ("root", "0")
    assert "useradd" in dockerfile and user == "10001:10001"
    assert not re.search(r"^HEALTHCHECK", dockerfile, re.M)  # per service, in compose
    assert re.search(r'^CMD \["perennial", "worker"\]$', dockerfile, re.M)


def test_the_images_build_context_installs_a_complete_package(tmp_path: Path) -> None:
    """`pip install` of exactly what the build stage copies, into a fresh virtualenv: the
    installed `perennial` has the gateway's page and browser module, and the worker."""
    context = tmp_path / "context"
    context.mkdir()
    for source in _build_stage_sources():
        path = ROOT / source
        if path.is_dir():
            shutil.copytree(path, context / source, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
        else:
            shutil.copy2(path, context / source)
    venv = tmp_path / "venv"
    # Without a pip of its own (ensurepip costs seconds): this run's pip installs into it.
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    python = venv / "bin" / "python"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--disable-pip-version-check", "-q", str(context)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # The dependencies from this run's environment, after the fresh install (a .pth line adds
    # a directory to the path without running that directory's own .pth files: the editable
    # install of this checkout stays out).
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "zz-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    probe = (
        "import json, perennial, perennial.client.gateway.app as app, perennial.worker;"
        "print(json.dumps([perennial.__file__, str(app.STATIC), perennial.worker.__file__]))"
    )
    done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    package, static, worker = map(Path, json.loads(done.stdout))
    assert package.is_relative_to(site), package
    for name in ("perennial.js", "index.html", "perennial.css"):
        assert (static / name).is_file(), name
    assert worker.is_file() and not worker.is_symlink()


# --------------------------------------------------------------------------- health checks


async def _healthcheck(check: str, env: dict[str, str]) -> tuple[int, str]:
    """Run deploy/healthcheck.py as the container runs `perennial-healthcheck` (no Perennial
    settings of this run leak in)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(SETTING_PREFIXES)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(HEALTHCHECK), check, env=base | env, cwd="/",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, err.decode()


async def test_health_checks_of_a_worker_and_a_gateway(
    settings: Settings, worker: Worker, gateway: GatewayServer
) -> None:
    temporal = {"TEMPORAL_ADDRESS": settings.address, "PERENNIAL_TASK_QUEUE": settings.task_queue}
    code, err = await _healthcheck("worker", temporal)
    assert code == 0, err  # this process's worker polls: same host name as the check's
    code, err = await _healthcheck("worker", temporal | {"PERENNIAL_TASK_QUEUE": unique("none")})
    assert code == 1 and "no worker of this container" in err
    at = {"PERENNIAL_GATEWAY_HOST": "0.0.0.0", "PERENNIAL_GATEWAY_PORT": str(gateway.port)}
    code, err = await _healthcheck("gateway", temporal | at)
    assert code == 0, err
    code, err = await _healthcheck("gateway", at | {"PERENNIAL_GATEWAY_PORT": str(free_port())})
    assert code == 1 and "/health" in err
    code, err = await _healthcheck("worker", {"TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}"})
    assert code == 1 and "cannot ask Temporal" in err


async def test_health_check_of_a_codec_server(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(new_key_line("k1") + "\n")
    token = new_token()
    settings = Settings(encryption_key_file=keys, codec_port=0, codec_token=token)
    async with CodecServer(settings) as server:
        env = {
            "PERENNIAL_CODEC_HOST": "0.0.0.0",
            "PERENNIAL_CODEC_PORT": str(server.port),
            "PERENNIAL_CODEC_TOKEN": token,
        }
        code, err = await _healthcheck("codec-server", env)
        assert code == 0, err
        code, err = await _healthcheck("codec-server", env | {"PERENNIAL_CODEC_TOKEN": "wrong"})
        assert code == 1 and "401" in err and token not in err
    code, err = await _healthcheck("codec-server", env)
    assert code == 1


# --------------------------------------------------------------------------- the codec proxy


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
SECRET = "the vault code is ocelot-7431"


@dataclass
class CodecProxy:
    url: str  # the proxy, as the browser reaches it
    codec_port: int  # the codec server behind it
    keys: Path
    ui_port: int  # a Web UI on this port is among the codec server's origins


@pytest_asyncio.fixture(loop_scope="session")
async def codec_proxy(tmp_path: Path) -> AsyncIterator[CodecProxy]:
    """The codec server with a token, and nginx with deploy/codec-proxy.conf.template rendered
    as nginx's image renders it (the token filled in), on loopback ports."""
    if NGINX is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx-light)")
    keys = tmp_path / "keys"
    keys.write_text(new_key_line("k1") + "\n")
    token, proxy_port, ui_port = new_token(), free_port(), free_port()
    origins = _env("codec-server")["PERENNIAL_CODEC_CORS_ORIGINS"] + f",http://127.0.0.1:{ui_port}"
    settings = Settings(encryption_key_file=keys, codec_port=0, codec_token=token,
                        codec_cors_origins=origins)  # fmt: skip
    async with CodecServer(settings) as codec:
        site = (
            PROXY_TEMPLATE.read_text()
            .replace("${PERENNIAL_CODEC_TOKEN}", token)
            .replace("codec-server:8081", f"127.0.0.1:{codec.port}")
            .replace("listen 8082;", f"listen 127.0.0.1:{proxy_port};")
        )
        assert "${" not in site
        conf = tmp_path / "nginx"
        conf.mkdir()
        (conf / "site.conf").write_text(site)
        temp = " ".join(f"{kind}_temp_path {conf / kind};"
                        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))  # fmt: skip
        (conf / "nginx.conf").write_text(
            f"daemon off; pid {conf / 'nginx.pid'}; error_log {conf / 'error.log'};\n"
            f"events {{}}\nhttp {{ access_log off; {temp} include {conf / 'site.conf'}; }}\n"
        )
        process = await asyncio.create_subprocess_exec(
            NGINX, "-c", str(conf / "nginx.conf"), "-p", str(conf),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{proxy_port}"
            async with httpx.AsyncClient() as client:
                for _ in range(200):
                    try:
                        await client.get(url)
                        break
                    except httpx.TransportError:
                        assert process.returncode is None, (conf / "error.log").read_text()
                        await asyncio.sleep(0.05)
            yield CodecProxy(url=url, codec_port=codec.port, keys=keys, ui_port=ui_port)
        finally:
            process.terminate()
            await process.wait()


async def test_the_codec_proxy_adds_the_token_and_keeps_cors(codec_proxy: CodecProxy) -> None:
    url, codec_port = codec_proxy.url, codec_proxy.codec_port
    browser = {"Origin": "http://localhost:8080", "X-Namespace": "default"}
    async with httpx.AsyncClient(headers=browser) as client:
        direct = await client.post(f"http://127.0.0.1:{codec_port}/decode", json={"payloads": []})
        assert direct.status_code == 401  # what the Web UI would get without the proxy
        preflight = await client.options(f"{url}/decode", headers={
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-namespace",
        })  # fmt: skip
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "http://localhost:8080"
        payload = {"metadata": {"encoding": _b64(b"json/plain")}, "data": _b64(b'"x"')}
        encoded = await client.post(f"{url}/encode", json={"payloads": [payload]},
                                    headers={"Authorization": "Bearer not-the-token"})  # fmt: skip
        assert encoded.status_code == 200, encoded.text  # the proxy's token replaces it
        assert encoded.headers["access-control-allow-origin"] == "http://localhost:8080"
        decoded = await client.post(f"{url}/decode?preserveStorageRefs=true", json=encoded.json())
        assert decoded.json() == {"payloads": [payload]}


async def test_the_web_ui_decrypts_through_the_codec_proxy(
    codec_proxy: CodecProxy, tmp_path: Path
) -> None:
    """The Web UI (the same release as the compose file's image) with the proxy as its codec
    endpoint, the codec server behind it requiring a token: the browser shows the secret."""
    from tests.browser import chromium_page

    proxy_port = int(codec_proxy.url.rsplit(":", 1)[1])
    settings = Settings(
        state_dir=tmp_path / "temporal", server_port=free_port(), ui_port=codec_proxy.ui_port,
        # The dev server points its Web UI at the codec URL these settings name: the proxy's.
        codec_port=proxy_port, encryption_key_file=codec_proxy.keys,
        task_queue=f"test-{unique()}", sticky_timeout_seconds=1.0,
    )  # fmt: skip
    assert settings.codec_url == f"http://127.0.0.1:{proxy_port}"
    async with DevServer(settings) as server:
        settings = settings.model_copy(update={"temporal_address": server.address})
        perennial = await Perennial.connect(settings)
        async with build_worker(perennial.client, settings):
            agent = perennial.agent("notes", unique())
            assert (await agent.ask(SECRET)).version == 1
            run_id = (await agent.describe()).run_id
        history = (f"{server.ui_url}/namespaces/{settings.namespace}/workflows/"
                   f"{quote(agent.id, safe='')}/{run_id}/history")  # fmt: skip
        async with chromium_page(viewport={"width": 1600, "height": 1200}) as page:
            await page.goto(history)
            await page.get_by_text("Workflow Execution Update Accepted").click(timeout=60_000)
            await page.get_by_text(SECRET).wait_for(timeout=30_000)
