"""One settings object, built in the entry point (CLI, worker, tests) and injected.

Nothing else reads the environment; workflow code never sees settings at all.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

_ENV = {
    "temporal_address": "TEMPORAL_ADDRESS",
    "namespace": "TEMPORAL_NAMESPACE",
    "task_queue": "PERENNIAL_TASK_QUEUE",
    "api_key": "TEMPORAL_API_KEY",
    "tls": "TEMPORAL_TLS",
    "tls_cert_path": "TEMPORAL_TLS_CLIENT_CERT_PATH",
    "tls_key_path": "TEMPORAL_TLS_CLIENT_KEY_PATH",
    "tls_server_ca_path": "TEMPORAL_TLS_SERVER_CA_CERT_PATH",
    "state_dir": "PERENNIAL_STATE_DIR",
    "db_filename": "PERENNIAL_DB",
    "server_ip": "PERENNIAL_SERVER_IP",
    "server_port": "PERENNIAL_SERVER_PORT",
    "ui_port": "PERENNIAL_UI_PORT",
    "max_cached_workflows": "PERENNIAL_MAX_CACHED_WORKFLOWS",
    "sticky_timeout_seconds": "PERENNIAL_STICKY_TIMEOUT_SECONDS",
    "stream_interval_ms": "PERENNIAL_STREAM_INTERVAL_MS",
    "lean_runner": "PERENNIAL_LEAN_RUNNER",
    "log_format": "PERENNIAL_LOG_FORMAT",
    "log_level": "PERENNIAL_LOG_LEVEL",
    "openai_api_key": "OPENAI_API_KEY",
    "openai_base_url": "OPENAI_BASE_URL",
    "openai_model": "OPENAI_MODEL",
    "prices_file": "PERENNIAL_PRICES_FILE",
    "app": "PERENNIAL_APP",
    "gateway_host": "PERENNIAL_GATEWAY_HOST",
    "gateway_port": "PERENNIAL_GATEWAY_PORT",
    "gateway_tokens_file": "PERENNIAL_GATEWAY_TOKENS_FILE",
    "gateway_jwt_secret": "PERENNIAL_GATEWAY_JWT_SECRET",
    "gateway_jwt_public_key_file": "PERENNIAL_GATEWAY_JWT_PUBLIC_KEY_FILE",
    "gateway_jwt_audience": "PERENNIAL_GATEWAY_JWT_AUDIENCE",
    "gateway_jwt_issuer": "PERENNIAL_GATEWAY_JWT_ISSUER",
    "gateway_cors_origins": "PERENNIAL_GATEWAY_CORS_ORIGINS",
    "gateway_max_body_bytes": "PERENNIAL_GATEWAY_MAX_BODY_BYTES",
    "gateway_max_unapplied": "PERENNIAL_GATEWAY_MAX_UNAPPLIED",
    "encryption_key_file": "PERENNIAL_ENCRYPTION_KEY_FILE",
    "codec_host": "PERENNIAL_CODEC_HOST",
    "codec_port": "PERENNIAL_CODEC_PORT",
    "codec_token": "PERENNIAL_CODEC_TOKEN",
    "codec_cors_origins": "PERENNIAL_CODEC_CORS_ORIGINS",
    "otel_endpoint": "OTEL_EXPORTER_OTLP_ENDPOINT",
    "otel_headers": "OTEL_EXPORTER_OTLP_HEADERS",
    "otel_service_name": "OTEL_SERVICE_NAME",
    "metrics_host": "PERENNIAL_METRICS_HOST",
    "metrics_port": "PERENNIAL_METRICS_PORT",
}
#: `tool_secrets` is the one field read from a family of variables: PERENNIAL_SECRET_<NAME>.
TOOL_SECRET_ENV_PREFIX = "PERENNIAL_SECRET_"
#: ... and `app_settings` from another: PERENNIAL_SETTING_<NAME>.
APP_SETTING_ENV_PREFIX = "PERENNIAL_SETTING_"


class Settings(BaseModel):
    """Where Temporal is and how Perennial runs on it."""

    model_config = ConfigDict(extra="forbid")

    #: `host:port` of a running Temporal server; None means "use the embedded dev server".
    temporal_address: str | None = None
    namespace: str = "default"
    task_queue: str = "perennial"
    #: Temporal Cloud API key (implies TLS).
    api_key: SecretStr | None = None
    tls: bool = False
    tls_cert_path: Path | None = None
    tls_key_path: Path | None = None
    tls_server_ca_path: Path | None = None

    #: Embedded server: where its SQLite file lives, and its ports.
    state_dir: Path = Path(".perennial")
    db_filename: Path | None = None
    server_ip: str = "127.0.0.1"
    server_port: int = Field(default=7233, ge=1, le=65535)
    ui_port: int | None = Field(default=None, ge=1, le=65535)

    #: Worker tuning: agents cached in memory (beyond that they are evicted and replayed on
    #: their next wake) and how long a task waits for the worker that has the agent cached.
    max_cached_workflows: int = Field(default=1000, ge=0)
    sticky_timeout_seconds: float = Field(default=10.0, gt=0)
    #: How often a streaming model call's progress reaches the server (the worker's heartbeat
    #: throttle), and how often stream readers look for it: the latency a delta may add.
    stream_interval_ms: int = Field(default=40, ge=5, le=5_000)
    #: The worker's lean sandboxed runner (see perennial.sdk_internals); off: the SDK's own.
    lean_runner: bool = True

    log_format: str = Field(default="auto", pattern="^(auto|console|json)$")
    log_level: str = "INFO"

    #: The LLM endpoint (any OpenAI-compatible Chat Completions server). The key is used by
    #: the model activity only and never enters workflow history. Without a base URL the
    #: OpenAI API is used (and needs the key).
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    #: The model of agent types that do not name one.
    openai_model: str = "gpt-4o-mini"
    #: The price table of model calls (TOML: USD per 1M input and output tokens per model;
    #: see perennial.activities.pricing), read when the worker starts. Unset: no costs.
    prices_file: Path | None = None

    #: An application's modules (comma-separated in the environment, `--app` on every
    #: command): imported first by the worker (its agent types and tools run there), the CLI,
    #: the client and the gateway (their agent types' limits and typed state).
    app: tuple[str, ...] = ()

    #: The gateway (`perennial gateway`): where it listens. Bound to anything but loopback it
    #: refuses to start without auth (a tokens file or a JWT key).
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(default=8000, ge=0, le=65535)
    #: Bearer tokens with their scopes (see perennial.client.gateway.auth for the format).
    gateway_tokens_file: Path | None = None
    #: JWT verification: an HS256 secret, or a PEM public key file (RS256/ES256/EdDSA).
    gateway_jwt_secret: SecretStr | None = None
    gateway_jwt_public_key_file: Path | None = None
    gateway_jwt_audience: str | None = None
    gateway_jwt_issuer: str | None = None
    #: Browser origins allowed to call the gateway (comma-separated in the environment).
    gateway_cors_origins: tuple[str, ...] = ()
    #: Largest request body accepted (413 beyond).
    gateway_max_body_bytes: int = Field(default=262_144, ge=1024)
    #: Messages accepted through one gateway process for one agent and not applied yet: past
    #: this, callers get 429 with Retry-After (the edge paces a flood, the agent never sees it).
    gateway_max_unapplied: int = Field(default=100, ge=1)

    #: Payload encryption (perennial.client.codec): a file of `key_id:base64-key` lines, the
    #: first the current key. Unset: payloads are stored as they are.
    encryption_key_file: Path | None = None
    #: The codec server (`perennial codec-server`), through which the Web UI decrypts. Bound to
    #: anything but loopback it refuses to start without a token.
    codec_host: str = "127.0.0.1"
    codec_port: int = Field(default=8081, ge=0, le=65535)
    #: Bearer token the codec server requires (none: it answers anyone who can reach it).
    codec_token: SecretStr | None = None
    #: Browser origins allowed to call the codec server (comma-separated in the environment);
    #: empty: the embedded Web UI's (see `codec_origins`).
    codec_cors_origins: tuple[str, ...] = ()

    #: Tracing (perennial.client.telemetry): the OTLP/HTTP collector's base URL (spans go to
    #: `{otel_endpoint}/v1/traces`); unset: no tracing at all. Headers are `key=value,...`
    #: sent with every export (often a vendor's API key, so a secret).
    otel_endpoint: str | None = None
    otel_headers: SecretStr | None = None
    otel_service_name: str = "perennial"
    #: The worker's Prometheus endpoint for the Temporal SDK's metrics
    #: (`http://{metrics_host}:{metrics_port}/metrics`); no port: no metrics endpoint.
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(default=None, ge=1, le=65535)

    #: Secrets that activity tools receive through `ToolSecret` parameters, by lower-case name
    #: (`PERENNIAL_SECRET_GITHUB` -> "github"); read on the worker, never sent to workflows.
    tool_secrets: dict[str, SecretStr] = Field(default_factory=dict)
    #: An application's own settings (base URLs, limits; not secrets: those are
    #: `tool_secrets`), by lower-case name (`PERENNIAL_SETTING_TRAVEL_SEARCH_BASE_URL` ->
    #: "travel_search_base_url"); its activity tools read them through `ToolContext.settings`.
    app_settings: dict[str, str] = Field(default_factory=dict)

    @field_validator("tool_secrets", "app_settings", mode="after")
    @classmethod
    def _lower_names(cls, value: dict[str, object]) -> dict[str, object]:
        return {name.lower(): item for name, item in value.items()}

    def app_setting(self, name: str, default: str | None = None) -> str | None:
        """The application setting `name` (case-insensitive; unset or empty: `default`)."""
        return self.app_settings.get(name.lower()) or default

    @field_validator("app", "gateway_cors_origins", "codec_cors_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(m.strip() for m in value.split(",") if m.strip())
        return value

    @property
    def secrets(self) -> tuple[SecretStr, ...]:
        """The secrets these settings hold: no log line, error text or history may show them."""
        held = (self.openai_api_key, self.api_key, self.gateway_jwt_secret, self.codec_token,
                self.otel_headers)  # fmt: skip
        return tuple(s for s in (*held, *self.tool_secrets.values()) if s is not None)

    @property
    def llm_configured(self) -> bool:
        """True when an LLM endpoint is set (a base URL, or a key for the OpenAI API)."""
        return self.openai_base_url is not None or self.openai_api_key is not None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Settings from the environment (see `_ENV` for the names, and
        `TOOL_SECRET_ENV_PREFIX`, `APP_SETTING_ENV_PREFIX`), then explicit overrides."""
        env = os.environ if env is None else env
        values: dict[str, object] = {
            field: env[name] for field, name in _ENV.items() if env.get(name, "") != ""
        }
        tool_secrets = {
            name.removeprefix(TOOL_SECRET_ENV_PREFIX): value
            for name, value in env.items()
            if name.startswith(TOOL_SECRET_ENV_PREFIX) and name != TOOL_SECRET_ENV_PREFIX and value
        }
        if tool_secrets:
            values["tool_secrets"] = tool_secrets
        app_settings = {
            name.removeprefix(APP_SETTING_ENV_PREFIX): value
            for name, value in env.items()
            if name.startswith(APP_SETTING_ENV_PREFIX) and name != APP_SETTING_ENV_PREFIX and value
        }
        if app_settings:
            values["app_settings"] = app_settings
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)

    @property
    def embedded(self) -> bool:
        """True when Perennial should run its own dev server."""
        return self.temporal_address is None

    @property
    def address(self) -> str:
        return self.temporal_address or f"{self.server_ip}:{self.server_port}"

    @property
    def database(self) -> Path:
        return self.db_filename or self.state_dir / "temporal.sqlite"

    @property
    def web_ui_port(self) -> int:
        return self.ui_port or self.server_port + 1000

    @property
    def encrypted(self) -> bool:
        """True when payloads are encrypted (a key file is set)."""
        return self.encryption_key_file is not None

    @property
    def codec_url(self) -> str:
        """Where a browser on this machine reaches the codec server."""
        host = self.codec_host
        if host in ("", "0.0.0.0", "::"):  # listening everywhere: loopback reaches it too
            host = "127.0.0.1"
        if ":" in host:  # IPv6
            host = f"[{host}]"
        return f"http://{host}:{self.codec_port}"

    @property
    def codec_origins(self) -> tuple[str, ...]:
        """Origins the codec server lets browsers call it from: `codec_cors_origins`, else the
        embedded Web UI's, by its address and by `localhost`."""
        if self.codec_cors_origins:
            return self.codec_cors_origins
        port = self.web_ui_port
        hosts = (self.server_ip, "127.0.0.1", "localhost")
        return tuple(dict.fromkeys(f"http://{host}:{port}" for host in hosts))

    @property
    def stream_interval(self) -> timedelta:
        return timedelta(milliseconds=self.stream_interval_ms)

    @property
    def sticky_timeout(self) -> timedelta:
        return timedelta(seconds=self.sticky_timeout_seconds)
