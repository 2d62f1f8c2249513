"""Connecting to Temporal with Perennial's data converter and the settings' TLS / API key."""

from __future__ import annotations

import dataclasses

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes
from temporalio.runtime import Runtime
from temporalio.service import TLSConfig

from perennial.client.codec import load_codec
from perennial.client.settings import Settings
from perennial.client.telemetry import Tracing, setup_tracing
from perennial.workflows.errors import RunError
from perennial.workflows.visibility import ALL_KEYS


def _tls(settings: Settings) -> TLSConfig | bool:
    if settings.tls_cert_path or settings.tls_server_ca_path:
        return TLSConfig(
            client_cert=settings.tls_cert_path.read_bytes() if settings.tls_cert_path else None,
            client_private_key=(
                settings.tls_key_path.read_bytes() if settings.tls_key_path else None
            ),
            server_root_ca_cert=(
                settings.tls_server_ca_path.read_bytes() if settings.tls_server_ca_path else None
            ),
        )
    return settings.tls or settings.api_key is not None


def data_converter(settings: Settings) -> DataConverter:
    """Pydantic payloads; with encryption on (`encryption_key_file`), every payload encrypted,
    and failure messages and stack traces moved into an encrypted payload too (a turn's error
    may quote what a user said).

    Raises:
        EncryptionKeyError: the key file cannot be read or is malformed.
    """
    codec = load_codec(settings)
    if codec is None:
        return pydantic_data_converter
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


class TemporalUnavailable(RunError):
    """No Temporal server answered at the configured address."""


async def connect(
    settings: Settings, *, tracing: Tracing | None = None, runtime: Runtime | None = None
) -> Client:
    """A Temporal client for `settings` (pydantic payloads, encrypted when a key file is set,
    TLS and API key applied).

    Args:
        settings: Where Temporal is, and how to reach it.
        tracing: Trace this client's calls and the workflows and activities of workers built
            on it; default: what the settings configure (`otel_endpoint`), else no tracing.
        runtime: The Temporal runtime (e.g. `telemetry.metrics_runtime(settings)`, for the
            SDK's metrics); default: the SDK's.

    Raises:
        TemporalUnavailable: no server answered.
        TelemetryUnavailable: tracing is configured but cannot start.
    """
    converter = data_converter(settings)
    tracing = tracing or setup_tracing(settings)
    try:
        return await Client.connect(
            settings.address,
            namespace=settings.namespace,
            api_key=settings.api_key.get_secret_value() if settings.api_key else None,
            tls=_tls(settings),
            data_converter=converter,
            interceptors=tracing.interceptors if tracing else (),
            runtime=runtime,
        )
    except RuntimeError as err:
        hint = (
            "start one with `perennial server` or `perennial dev`, or set TEMPORAL_ADDRESS"
            if settings.embedded
            else "check TEMPORAL_ADDRESS and the TLS / API key settings"
        )
        raise TemporalUnavailable(
            f"cannot reach Temporal at {settings.address}: {hint} ({err})"
        ) from err


async def ensure_search_attributes(client: Client, namespace: str) -> list[str]:
    """Register Perennial's search attributes that the namespace lacks; returns those added.

    The dev server registers them when it creates its database, but not on a database made
    before (and other servers never): so every start checks. On servers that refuse the
    operator API (Temporal Cloud with an API key) the error says what to register by hand.
    """
    existing = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    present = set(existing.custom_attributes) | set(existing.system_attributes)
    missing = {
        key.name: IndexedValueType.ValueType(int(key.indexed_value_type))
        for key in ALL_KEYS
        if key.name not in present
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
        )
    return sorted(missing)
