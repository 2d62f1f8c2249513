"""Secrets out of texts that leave the worker: error messages, tool errors, log lines.

A model endpoint may echo the worker's API key in its error (OpenAI answers a wrong key with
"Incorrect API key provided: sk-...."), and an error text ends up in Temporal history, the
agent's events, the caller's exception and the logs. `Redactor` replaces:

* every occurrence of each configured secret (the guarantee);
* for secrets of at least `MIN_PARTIAL` characters, echoes of a part of it: a token that starts
  with its first `PREFIX_CHARS` characters, or that ends with `*` and its last `SUFFIX_CHARS`
  (how OpenAI abbreviates a key: `sk-proj-****...abcd`);
* and, unless `shapes=False`, tokens shaped like credentials: `Bearer <token>`, `sk-...` keys.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from pydantic import SecretStr

from perennial.client.settings import Settings

#: What a redacted secret reads as.
REDACTED = "[redacted]"
#: Shorter secrets are replaced only where they occur whole: their parts match too much.
MIN_PARTIAL = 8
#: A token starting with this many of a secret's first characters is an echo of it.
PREFIX_CHARS = 6
#: A token ending with `*` and this many of a secret's last characters is an abbreviation of it.
SUFFIX_CHARS = 4

# Characters a key, a token or an abbreviated key is made of; a dot only inside (JWTs), so a
# sentence's full stop after a key survives. A token may start after `=` or `/` (`key=sk-...`).
_CHARS = r"[\w\-*~+/=]"
_TOKEN_START = r"(?<![\w\-*~+])"
_TOKEN_END = r"(?![\w\-*~+/=])"
_SHAPES = [
    r"(?<=[Bb]earer )(?=[\w\-~+/.]{8})[\w\-~+/]+(?:\.[\w\-~+/]+)*=*",
    rf"{_TOKEN_START}sk-[\w\-*]{{16,}}{_TOKEN_END}",
]
#: Literal parts of `_SHAPES`: a text without any cannot match them.
_SHAPE_CUES = ("earer ", "sk-")


class Redactor:
    """Replaces secrets, and echoes of them, in a text with `REDACTED`.

    Build it once (the patterns are compiled here) and call it on every text:

        redact = Redactor([settings.openai_api_key, settings.api_key])
        message = redact(err.message)

    Args:
        secrets: The secrets (`SecretStr` or plain; `None` and empty ones are skipped).
        shapes: Also replace credential-shaped tokens (`Bearer ...`, `sk-...`) that are not
            among `secrets`.
        echoes: Also replace echoes of a part of a secret (its start, its abbreviation). Off
            for texts that are data, like a tool's result, where a word that starts like a
            secret (`correct` for `correcthorse...`) must survive.
    """

    def __init__(
        self,
        secrets: Iterable[SecretStr | str | None] = (),
        *,
        shapes: bool = True,
        echoes: bool = True,
    ) -> None:
        values = _plain(secrets)
        forms = sorted({form for s in values for form in _forms(s)}, key=len, reverse=True)
        exact = [re.escape(form) for form in forms]  # longest first: one may contain another
        long = [s for s in values if len(s) >= MIN_PARTIAL] if echoes else []
        partial = [p for s in long for p in _echoes(s)] + (_SHAPES if shapes else [])
        self._exact = re.compile("|".join(exact)) if exact else None
        self._partial = re.compile("|".join(partial)) if partial else None
        self._cues = tuple(cue for s in long for cue in _cues(s)) + (_SHAPE_CUES if shapes else ())

    @classmethod
    def from_settings(cls, settings: Settings) -> Redactor:
        """A redactor for the secrets in `settings`: the model API key and Temporal's."""
        return cls(settings.secrets)

    def __call__(self, text: str) -> str:
        """`text` with every secret, and every echo of one, replaced by `REDACTED`."""
        # Whole secrets first, so no partial match can cut one in two.
        if self._exact is not None:
            text = self._exact.sub(REDACTED, text)
        # Partial patterns start with a lookbehind (no fast literal scan): run them only on a
        # text that holds one of their literal parts.
        if self._partial is not None and any(cue in text for cue in self._cues):
            text = self._partial.sub(REDACTED, text)
        return text

    def __bool__(self) -> bool:
        """False when there is nothing to redact (a no-op redactor)."""
        return self._exact is not None or self._partial is not None



def _plain(secrets: Iterable[SecretStr | str | None]) -> set[str]:
    values = (s.get_secret_value() if isinstance(s, SecretStr) else s for s in secrets)
    return {v for v in values if v}


def _echoes(secret: str) -> list[str]:
    """Patterns of a token that starts like the secret, or ends like its abbreviation."""
    start, end = re.escape(secret[:PREFIX_CHARS]), re.escape(secret[-SUFFIX_CHARS:])
    return [
        rf"{_TOKEN_START}{start}{_CHARS}*(?:\.{_CHARS}+)*",
        rf"{_TOKEN_START}[\w\-~+]*\*+{end}{_TOKEN_END}",
    ]


def _cues(secret: str) -> tuple[str, ...]:
    """Literal parts of the `_echoes` patterns."""
    return secret[:PREFIX_CHARS], "*" + secret[-SUFFIX_CHARS:]


def _forms(secret: str) -> tuple[str, ...]:
    """The secret as it is, and as it reads inside JSON and inside a Python repr."""
    return secret, json.dumps(secret)[1:-1], repr(secret)[1:-1]


#: Redacts nothing: the default where no settings are at hand.
NO_REDACTION = Redactor(shapes=False)

__all__ = ["NO_REDACTION", "REDACTED", "Redactor"]
