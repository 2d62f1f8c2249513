"""Payload encryption: the codec on its own (round trip, rotation, unknown keys, tampering, the
key file), then agents on a real dev server whose history holds no plain text."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError

import tests.agents  # noqa: F401  (registers the test agent types before a worker is built)
from perennial.client import AgentHandle, Perennial, Settings, TurnFailed
from perennial.client.codec import (
    ENCODING,
    KEY_ID_METADATA,
    EncryptionCodec,
    EncryptionKeyError,
    KeyRing,
    PayloadTampered,
    UnknownKeyId,
    new_key_line,
)
from perennial.client.connection import data_converter
from perennial.worker import build_worker
from perennial.workflows.errors import RunError, UsageError
from perennial.workflows.notes import NotesState
from tests.agents import BOOM
from tests.conftest import ROOT, eventually
from tests.support import unique

SECRET = "my card number is 4111-1111-1111-1111, PIN 9876"


def _key() -> bytes:
    return os.urandom(32)


def _line(key_id: str, key: bytes) -> str:
    return f"{key_id}:{base64.b64encode(key).decode()}"


def _ring(*ids: str) -> tuple[KeyRing, dict[str, bytes]]:
    keys = {key_id: _key() for key_id in ids}
    return KeyRing.parse("\n".join(_line(k, v) for k, v in keys.items())), keys


def _json_payload(text: str) -> Payload:
    return pydantic_data_converter.payload_converter.to_payloads([{"text": text}])[0]


# --------------------------------------------------------------------------- the codec


async def test_round_trip_encrypts_everything_and_restores_it_exactly() -> None:
    ring, _ = _ring("k1")
    codec = EncryptionCodec(ring)
    originals = [_json_payload(SECRET), Payload(), Payload(metadata={"encoding": b"binary/null"})]

    encoded = await codec.encode(originals)

    assert len(encoded) == 3
    for payload in encoded:
        assert payload.metadata["encoding"] == ENCODING
        assert payload.metadata[KEY_ID_METADATA] == b"k1"
        assert SECRET.encode() not in payload.SerializeToString()
    assert await codec.decode(encoded) == originals
    # A random nonce per payload: the same value never encrypts to the same bytes.
    again = await codec.encode(originals[:1])
    assert again[0].data != encoded[0].data


async def test_plain_payloads_pass_through_decode() -> None:
    codec = EncryptionCodec(_ring("k1")[0])
    plain = [_json_payload("written before encryption"), Payload(), Payload(data=b"raw")]
    assert await codec.decode(plain) == plain


async def test_an_encrypted_payload_is_not_encrypted_again() -> None:
    codec = EncryptionCodec(_ring("k1")[0])
    once = await codec.encode([_json_payload(SECRET)])
    assert await codec.encode(once) == once  # re-sent from history, as `recover` does


async def test_rotation_decrypts_with_an_older_key_and_encrypts_with_the_first() -> None:
    keys = {"k1": _key(), "k2": _key()}
    old = EncryptionCodec(KeyRing.parse(_line("k1", keys["k1"])))
    written_before = await old.encode([_json_payload(SECRET)])

    rotated = EncryptionCodec(
        KeyRing.parse(f"{_line('k2', keys['k2'])}\n{_line('k1', keys['k1'])}")
    )
    assert rotated.keys.current_id == "k2"
    assert await rotated.decode(written_before) == [_json_payload(SECRET)]
    written_after = await rotated.encode([_json_payload("new")])
    assert written_after[0].metadata[KEY_ID_METADATA] == b"k2"
    with pytest.raises(UnknownKeyId):  # a worker not given the new key yet cannot read it
        await old.decode(written_after)


async def test_a_key_id_that_is_not_configured_is_a_typed_error_naming_it() -> None:
    ring, keys = _ring("old-1")
    encoded = await EncryptionCodec(ring).encode([_json_payload(SECRET)])
    other, other_keys = _ring("new-2")

    with pytest.raises(UnknownKeyId) as caught:
        await EncryptionCodec(other).decode(encoded)

    assert isinstance(caught.value, RunError)
    assert caught.value.key_id == "old-1"
    message = str(caught.value)
    assert "'old-1'" in message and "new-2" in message
    for key in (*keys.values(), *other_keys.values()):
        assert base64.b64encode(key).decode() not in message


@pytest.mark.parametrize("damage", ["flip", "truncate", "relabel"])
async def test_tampered_ciphertext_is_a_typed_error(damage: str) -> None:
    ring, _ = _ring("k1", "k2")
    codec = EncryptionCodec(ring)
    payload = (await codec.encode([_json_payload(SECRET)]))[0]
    if damage == "flip":
        data = bytearray(payload.data)
        data[20] ^= 0x01
        payload.data = bytes(data)
    elif damage == "truncate":
        payload.data = payload.data[:20]
    else:  # claims the other configured key: the key id is authenticated data too
        payload.metadata[KEY_ID_METADATA] = b"k2"

    with pytest.raises(PayloadTampered, match="key id"):
        await codec.decode([payload])


# --------------------------------------------------------------------------- the key file

_KEY_TEXT = base64.b64encode(b"k" * 32).decode()  # what must never appear in an error


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        (f"k1:{_KEY_TEXT}\n{_KEY_TEXT}\n", 2, "expected `key_id:base64-key`"),
        (f"# keys\n\nbad id!:{_KEY_TEXT}\n", 3, "a key id is"),
        (f"{_KEY_TEXT}:k1\n", 1, "a key id is"),  # written the wrong way round
        (f"k1:{_KEY_TEXT[:-4]}!!!!\n", 1, "not valid base64"),
        (f"k1:{base64.b64encode(b'k' * 16).decode()}\n", 1, "16 bytes; AES-256 needs 32"),
        (f"k1:{_KEY_TEXT}\n# rotated\nk1:{base64.b64encode(b'j' * 32).decode()}\n", 3,
         "repeats the key id of line 1"),
    ],
)  # fmt: skip
def test_key_file_errors_name_the_line_and_never_the_key(
    tmp_path: Path, text: str, line: int, problem: str
) -> None:
    path = tmp_path / "keys"
    path.write_text(text)

    with pytest.raises(EncryptionKeyError) as caught:
        KeyRing.from_file(path)

    message = str(caught.value)
    assert isinstance(caught.value, UsageError)
    assert f"{path}, line {line}: " in message
    assert problem in message
    assert _KEY_TEXT not in message and _KEY_TEXT[:12] not in message
    assert base64.b64encode(b"j" * 32).decode()[:12] not in message


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n   \n"])
def test_a_key_file_without_keys_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "keys"
    path.write_text(text)
    with pytest.raises(EncryptionKeyError, match="no keys"):
        KeyRing.from_file(path)


def test_a_missing_key_file_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(EncryptionKeyError, match="cannot read the encryption key file"):
        KeyRing.from_file(tmp_path / "absent")


def test_comments_and_blank_lines_are_skipped_and_the_first_key_is_current(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(
        f"# current first\n\n  {new_key_line('2026-02')}  \n# older\n{new_key_line('2026-01')}\n"
    )
    ring = KeyRing.from_file(path)
    assert ring.key_ids == ("2026-02", "2026-01")
    assert ring.current_id == "2026-02"


def test_a_new_key_line_is_a_valid_32_byte_key() -> None:
    key_id, _, key = new_key_line("k7").partition(":")
    assert key_id == "k7"
    assert len(base64.b64decode(key, validate=True)) == 32
    assert new_key_line("k7") != new_key_line("k7")
    with pytest.raises(EncryptionKeyError):
        new_key_line("not an id")


# --------------------------------------------------------------------------- the data converter


def _key_file(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / f"keys-{unique()}"
    path.write_text("\n".join(lines) + "\n")
    return path


async def test_the_data_converter_encrypts_only_when_a_key_file_is_set(tmp_path: Path) -> None:
    assert data_converter(Settings()) is pydantic_data_converter
    converter = data_converter(
        Settings(encryption_key_file=_key_file(tmp_path, new_key_line("k1")))
    )
    assert isinstance(converter.payload_codec, EncryptionCodec)

    payloads = await converter.encode([NotesState(notes=[SECRET])])
    assert payloads[0].metadata["encoding"] == ENCODING
    assert await converter.decode(payloads, [NotesState]) == [NotesState(notes=[SECRET])]

    # Failure messages may quote a user: they travel encrypted too, and come back whole.
    failure = Failure()
    await converter.encode_failure(ApplicationError(f"cannot digest {SECRET!r}"), failure)
    assert SECRET.encode() not in failure.SerializeToString()
    decoded = await converter.decode_failure(failure)
    assert SECRET in str(decoded)


# --------------------------------------------------------------------------- end to end


@asynccontextmanager
async def _running(settings: Settings) -> AsyncIterator[Perennial]:
    """A client and an in-process worker built from `settings` (with its key file, if any)."""
    perennial = await Perennial.connect(settings)
    async with build_worker(perennial.client, settings):
        yield perennial


async def _raw_history(settings: Settings, workflow_id: str) -> tuple[list[Payload], bytes]:
    """The agent's history as a client without any codec reads it: every payload of each
    event that carries input, and all the events' bytes."""
    raw = await Client.connect(settings.address, namespace=settings.namespace)
    history = await raw.get_workflow_handle(workflow_id).fetch_history()
    payloads: list[Payload] = []
    for event in history.events:
        for attrs in (
            event.workflow_execution_update_accepted_event_attributes.accepted_request.input.args,
            event.workflow_execution_signaled_event_attributes.input,
        ):
            payloads.extend(attrs.payloads)
    return payloads, b"".join(event.SerializeToString() for event in history.events)


async def test_an_agent_on_encrypted_payloads_keeps_no_plain_text_in_history(
    settings: Settings, tmp_path: Path
) -> None:
    encrypted = settings.model_copy(
        update={"encryption_key_file": _key_file(tmp_path, new_key_line("k1"))}
    )
    name = unique()
    async with _running(encrypted) as perennial:
        agent = perennial.agent("notes", name)
        reply = await agent.ask(SECRET)
        assert reply.reply == "Noted (note #1)."
        await agent.send(f"and again: {SECRET}")
        await eventually(lambda: _has_notes(agent, 2))
        state = (await agent.state()).state
        assert isinstance(state, NotesState)
        assert state.notes == [SECRET, f"and again: {SECRET}"]

        inputs, everything = await _raw_history(settings, agent.id)
        assert len(inputs) == 2
        assert all(p.metadata["encoding"] == ENCODING for p in inputs)
        assert all(p.metadata[KEY_ID_METADATA] == b"k1" for p in inputs)
        assert SECRET.encode() not in everything
        assert b"4111" not in everything
        # Search attributes stay plain: they name the agent for the Web UI and `list`.
        raw = await Client.connect(settings.address, namespace=settings.namespace)

        async def named() -> bool:
            described = await raw.get_workflow_handle(agent.id).describe()
            return described.search_attributes.get("AgentName") == [name]

        await eventually(named)


async def _has_notes(agent: AgentHandle, count: int) -> bool:
    state = (await agent.state()).state
    return isinstance(state, NotesState) and len(state.notes) >= count


async def test_an_existing_agent_keeps_answering_when_encryption_is_switched_on_and_keys_rotate(
    settings: Settings, tmp_path: Path
) -> None:
    first, second = new_key_line("k1"), new_key_line("k2")
    name = unique()

    async with _running(settings) as plain:  # before encryption: plain history
        assert (await plain.agent("notes", name).ask("written in the clear")).version == 1
    agent_id = plain.agent("notes", name).id
    _, before = await _raw_history(settings, agent_id)
    assert b"written in the clear" in before  # the check below would catch plain text

    with_k1 = settings.model_copy(update={"encryption_key_file": _key_file(tmp_path, first)})
    async with _running(with_k1) as perennial:
        reply = await perennial.agent("notes", name).ask(SECRET)
        assert reply.reply == "Noted (note #2)."

    rotated = settings.model_copy(
        update={"encryption_key_file": _key_file(tmp_path, second, first)}
    )
    async with _running(rotated) as perennial:
        agent = perennial.agent("notes", name)
        assert (await agent.ask("after rotation")).reply == "Noted (note #3)."
        state = (await agent.state()).state
        assert isinstance(state, NotesState)
        assert state.notes == ["written in the clear", SECRET, "after rotation"]

    inputs, everything = await _raw_history(settings, agent_id)
    assert [p.metadata.get("encoding") for p in inputs] == [b"json/plain", ENCODING, ENCODING]
    assert [p.metadata.get(KEY_ID_METADATA) for p in inputs[1:]] == [b"k1", b"k2"]
    assert SECRET.encode() not in everything
    assert b"after rotation" not in everything


async def test_a_failed_turn_is_still_a_typed_error_and_its_message_stays_encrypted(
    settings: Settings, tmp_path: Path
) -> None:
    encrypted = settings.model_copy(
        update={"encryption_key_file": _key_file(tmp_path, new_key_line("k1"))}
    )
    async with _running(encrypted) as perennial:
        agent = perennial.agent("test_flaky", unique())
        with pytest.raises(TurnFailed) as caught:
            await agent.ask(f"{BOOM} {SECRET}")
        assert SECRET in str(caught.value)  # the caller reads the message, decrypted
        assert caught.value.error_type == "ValueError"
        assert (await agent.ask("fine")).version == 1  # the failed turn changed nothing

    _, everything = await _raw_history(settings, agent.id)
    assert SECRET.encode() not in everything


async def test_the_cli_speaks_to_an_encrypted_agent_with_the_key_file(
    settings: Settings, tmp_path: Path
) -> None:
    keys = _key_file(tmp_path, new_key_line("k1"))
    name = unique()
    env = {**os.environ, "PERENNIAL_ENCRYPTION_KEY_FILE": str(keys)}
    cli = (sys.executable, "-m", "perennial.client.cli", "--json", "--address", settings.address,
           "--task-queue", settings.task_queue)  # fmt: skip
    async with _running(settings.model_copy(update={"encryption_key_file": keys})):
        for command in (("ask", f"notes/{name}", SECRET), ("state", f"notes/{name}")):
            process = await asyncio.create_subprocess_exec(
                *cli, *command, stdout=asyncio.subprocess.PIPE, env=env, cwd=ROOT
            )
            out, _ = await asyncio.wait_for(process.communicate(), 60)
            assert process.returncode == 0, command
        assert json.loads(out)["state"]["notes"] == [SECRET]
    _, everything = await _raw_history(settings, f"notes/{name}")
    assert SECRET.encode() not in everything
