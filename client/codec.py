"""Payload encryption: a Temporal payload codec with AES-256-GCM and rotating keys.

Switched on by a key file (setting `encryption_key_file`, env PERENNIAL_ENCRYPTION_KEY_FILE),
one `key_id:base64-key` line per key, 32-byte keys; the first line is the current key:

    # newest first: payloads are encrypted with it and decrypted with any of them
    k2:3q2+7w...=
    k1:AAECAw...=

Every payload the SDK hands the codec is encrypted: the serialized payload (its metadata and
data) becomes the ciphertext of a new payload whose metadata says `binary/encrypted` and names
the key id. Decoding leaves payloads without that encoding as they are, so an agent whose
history began before encryption was switched on keeps replaying. Search attributes are not
payloads the codec sees: they stay readable (they name agents).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.message import DecodeError
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from perennial.client.settings import Settings
from perennial.workflows.errors import RunError, UsageError

__all__ = [
    "ENCODING",
    "KEY_BYTES",
    "KEY_ID_METADATA",
    "EncryptionCodec",
    "EncryptionKeyError",
    "KeyRing",
    "PayloadDecryptionError",
    "PayloadTampered",
    "UnknownKeyId",
    "load_codec",
    "new_key_line",
]

#: The `encoding` metadata of an encrypted payload.
ENCODING = b"binary/encrypted"
#: The metadata entry naming the key a payload was encrypted with.
KEY_ID_METADATA = "encryption-key-id"
#: AES-256.
KEY_BYTES = 32
_NONCE_BYTES = 12
_TAG_BYTES = 16
_KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class EncryptionKeyError(UsageError):
    """The key file (or a key id) cannot be used; the message names the line, never a key."""


class PayloadDecryptionError(RunError):
    """An encrypted payload could not be decrypted with the configured keys."""


class UnknownKeyId(PayloadDecryptionError):
    """The payload was encrypted with a key id that is not in the key file."""

    def __init__(self, message: str, *, key_id: str) -> None:
        super().__init__(message)
        self.key_id = key_id


class PayloadTampered(PayloadDecryptionError):
    """The ciphertext does not authenticate: altered, truncated, or another key of that id."""


class KeyRing:
    """Parsed keys: the current one (first in the file) encrypts, every one decrypts."""

    def __init__(self, keys: Iterable[tuple[str, bytes]]) -> None:
        self._ciphers: dict[str, AESGCM] = {}
        for key_id, key in keys:
            _check_key_id(key_id)
            if key_id in self._ciphers:
                raise EncryptionKeyError(f"key id {key_id!r} is given twice")
            if len(key) != KEY_BYTES:
                raise EncryptionKeyError(
                    f"key {key_id!r} is {len(key)} bytes; AES-256 needs {KEY_BYTES}"
                )
            self._ciphers[key_id] = AESGCM(key)
        if not self._ciphers:
            raise EncryptionKeyError("no encryption keys given")
        self.current_id = next(iter(self._ciphers))
        self.current = self._ciphers[self.current_id]

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every key id, the current one first."""
        return tuple(self._ciphers)

    def cipher(self, key_id: str) -> AESGCM | None:
        """The cipher of `key_id`, or None when that id is not configured."""
        return self._ciphers.get(key_id)

    @classmethod
    def parse(cls, text: str, *, source: str = "key file") -> KeyRing:
        """Keys from `key_id:base64-key` lines (blank lines and `# comments` skipped).

        Raises:
            EncryptionKeyError: naming `source` and the line number of the first bad line.
        """
        keys: list[tuple[str, bytes]] = []
        first_line: dict[str, int] = {}
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            key_id, key = _parse_line(line, f"{source}, line {number}")
            if key_id in first_line:  # ids are not secret, but a line's text may be: no echo
                raise EncryptionKeyError(
                    f"{source}, line {number}: repeats the key id of line {first_line[key_id]}"
                )
            first_line[key_id] = number
            keys.append((key_id, key))
        if not keys:
            raise EncryptionKeyError(
                f"{source}: no keys; add a line `key_id:base64-key` "
                "(`perennial codec-server --new-key ID` prints one)"
            )
        return cls(keys)

    @classmethod
    def from_file(cls, path: Path) -> KeyRing:
        """Keys from the file at `path` (see `parse`); an unreadable file is an
        EncryptionKeyError too."""
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise EncryptionKeyError(
                f"cannot read the encryption key file {path}: {err.strerror}"
            ) from None
        except UnicodeDecodeError:
            raise EncryptionKeyError(f"{path}: not UTF-8 text") from None
        return cls.parse(text, source=str(path))


def _check_key_id(key_id: str, where: str = "") -> None:
    if not _KEY_ID.fullmatch(key_id):
        prefix = f"{where}: " if where else ""
        raise EncryptionKeyError(
            f"{prefix}a key id is 1-64 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )


def _parse_line(line: str, where: str) -> tuple[str, bytes]:
    key_id, sep, encoded = line.partition(":")
    if not sep:
        raise EncryptionKeyError(f"{where}: expected `key_id:base64-key`")
    key_id, encoded = key_id.strip(), encoded.strip()
    _check_key_id(key_id, where)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise EncryptionKeyError(f"{where}: the key is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise EncryptionKeyError(f"{where}: the key is {len(key)} bytes; AES-256 needs {KEY_BYTES}")
    return key_id, key


def new_key_line(key_id: str) -> str:
    """A key file line with a fresh random key: `key_id:base64-key`."""
    _check_key_id(key_id)
    return f"{key_id}:{base64.b64encode(os.urandom(KEY_BYTES)).decode('ascii')}"


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over whole serialized payloads, with the key id in the metadata.

    The key id is also the ciphertext's associated data, so a payload relabelled with another
    key's id does not authenticate. Nonces are random (96 bits) per payload.
    """

    def __init__(self, keys: KeyRing) -> None:
        self.keys = keys
        self._current_id = keys.current_id.encode("ascii")

    @classmethod
    def from_file(cls, path: Path) -> EncryptionCodec:
        """A codec with the keys of the key file at `path`."""
        return cls(KeyRing.from_file(path))

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(p) for p in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        """`payload` encrypted with the current key; an already encrypted one as it is (a
        payload re-sent from history, as `recover` does, must not be wrapped twice)."""
        if payload.metadata.get("encoding") == ENCODING:
            return payload
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self.keys.current.encrypt(nonce, payload.SerializeToString(), self._current_id)
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID_METADATA: self._current_id},
            data=nonce + sealed,
        )

    def decrypt(self, payload: Payload) -> Payload:
        """The original payload; one that is not encrypted as it is.

        Raises:
            UnknownKeyId: its key id is not configured.
            PayloadTampered: it does not authenticate with the key of its id.
        """
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        raw_id = payload.metadata.get(KEY_ID_METADATA, b"")
        key_id = raw_id.decode("ascii", "replace")
        cipher = self.keys.cipher(key_id)
        if cipher is None:
            raise UnknownKeyId(
                f"payload encrypted with key id {key_id!r}, which is not in the key file "
                f"(it has {', '.join(self.keys.key_ids)}): add that key's line back to read it",
                key_id=key_id,
            )
        data = payload.data
        if len(data) < _NONCE_BYTES + _TAG_BYTES:
            raise PayloadTampered(f"encrypted payload (key id {key_id!r}) is truncated")
        try:
            plain = cipher.decrypt(data[:_NONCE_BYTES], data[_NONCE_BYTES:], raw_id)
        except InvalidTag:
            raise PayloadTampered(
                f"encrypted payload (key id {key_id!r}) does not authenticate: it was altered, "
                "or encrypted with a different key under the same id"
            ) from None
        try:
            return Payload.FromString(plain)
        except DecodeError:  # authentic, so written by another program with this key
            raise PayloadDecryptionError(
                f"encrypted payload (key id {key_id!r}) does not hold a Temporal payload"
            ) from None


def load_codec(settings: Settings) -> EncryptionCodec | None:
    """The codec for `settings`: None when encryption is off (no key file set)."""
    if settings.encryption_key_file is None:
        return None
    return EncryptionCodec.from_file(settings.encryption_key_file)
