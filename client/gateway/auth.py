"""Who may call the gateway, and what they may do to which agent.

A caller presents a bearer token (the `Authorization: Bearer <token>` header, or the
`access_token` query parameter where a browser cannot set headers: WebSocket, EventSource).
The token is looked up in the tokens file first, then verified as a JWT; either way the caller
becomes a `Principal` with a name (safe to log) and scopes. With neither configured the gateway
runs open, and `check_binding` lets it listen on loopback only.

Scopes, `ACTION:TYPE/NAME`:

    read      state, events, agent lists, schedule and approval lists
    write     send, ask, call, rollback, schedule changes
    decide    approve or reject an approval
    *         all three

    read:*                    every agent (same as read:*/*)
    write:notes/*             every agent of type notes
    decide:assistant/alice    one agent
    read:*/alice              agents named alice, of any type
    *:*                       everything

TYPE and NAME are exact or `*`; there is no other globbing (`notes*` is refused).

The tokens file (TOML), one `[[token]]` table per caller:

    [[token]]
    name = "web-app"                  # unique; the principal's name in logs
    sha256 = "9f86d08...0f00a08"      # hex sha256 of the token: the file holds no secret
    scopes = ["read:*", "write:notes/*"]

    [[token]]
    name = "ops"
    token = "a-long-random-token"     # plain text: allowed, weaker (the file is a secret)
    scopes = ["*:*"]

`new_token()` makes a token and `hash_token(token)` its `sha256` line. A JWT (HS256 with
`gateway_jwt_secret`, or RS256/ES256/EdDSA with `gateway_jwt_public_key_file`) must carry `exp`
and `sub` (the principal's name); its scopes come from `scope` (space-separated) or `scopes`
(a list), and scopes outside this grammar (`openid`, `email`) are ignored.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_serializer,
    model_validator,
)

from perennial.client.settings import Settings
from perennial.workflows.errors import UsageError, summarize
from perennial.workflows.messages import AgentName, AgentTypeName

__all__ = [
    "ACTIONS",
    "OPEN_PRINCIPAL",
    "Action",
    "Authenticator",
    "Forbidden",
    "InsecureGateway",
    "InvalidAuthConfig",
    "InvalidScope",
    "JwtVerifier",
    "Principal",
    "Scope",
    "TokenEntry",
    "Unauthorized",
    "check_binding",
    "hash_token",
    "load_tokens_file",
    "new_token",
]

Action = Literal["read", "write", "decide"]
ACTIONS: tuple[Action, ...] = get_args(Action)

#: RFC 7518 §3.2: an HS256 key must be at least as long as the hash (256 bits).
MIN_SECRET_BYTES = 32
#: Shorter RSA keys are breakable; NIST retired them in 2013.
MIN_RSA_BITS = 2048
#: Seconds of clock difference tolerated between the token's issuer and this machine.
CLOCK_SKEW_SECONDS = 30
#: What an `open` gateway on loopback logs at start.
OPEN_WARNING = "running open: no auth configured; anyone on this machine can reach every agent"

_LOOPBACK_NAMES = frozenset({"localhost", "localhost."})
_HS_ALGORITHMS = ("HS256",)
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
_agent_type = TypeAdapter(AgentTypeName)
_agent_name = TypeAdapter(AgentName)


# --------------------------------------------------------------------------- errors


class Unauthorized(UsageError):
    """No token, a malformed one, or one that is unknown, invalid or expired (HTTP 401).

    Attributes:
        error: The RFC 6750 error code (`invalid_request`, `invalid_token`), or None when no
            credentials were sent at all.
    """

    def __init__(
        self, reason: str, *, error: Literal["invalid_request", "invalid_token"] | None = None
    ):
        super().__init__(reason)
        self.error = error

    @property
    def www_authenticate(self) -> str:
        """The `WWW-Authenticate` header value a 401 answer carries (RFC 6750 §3)."""
        if self.error is None:
            return 'Bearer realm="perennial"'
        description = str(self).replace('"', "'")
        return f'Bearer realm="perennial", error="{self.error}", error_description="{description}"'


class Forbidden(UsageError):
    """A valid token whose scopes do not cover the action on the agent (HTTP 403)."""


class InsecureGateway(UsageError):
    """Refusal to listen beyond loopback with no auth configured."""


class InvalidAuthConfig(UsageError):
    """The tokens file, the JWT secret or the JWT public key cannot be used."""


class InvalidScope(InvalidAuthConfig):
    """A scope outside the `ACTION:TYPE/NAME` grammar."""


# --------------------------------------------------------------------------- scopes


class Scope(BaseModel):
    """One grant, `ACTION:TYPE/NAME`, where each part may be `*` (see the module docstring).

    Built from its text (`Scope.parse("write:notes/*")`, or a string wherever a `Scope` is
    expected in a model) and serialized back to it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: Action | Literal["*"]
    agent_type: str
    name: str

    @classmethod
    def parse(cls, text: str) -> Scope:
        """The scope that `text` spells.

        Raises:
            InvalidScope: `text` is not `ACTION:TYPE/NAME` or `ACTION:*`.
        """
        return cls.model_validate(text)

    @classmethod
    def parse_or_none(cls, text: str) -> Scope | None:
        """The scope that `text` spells, or None if it is not one of ours."""
        try:
            return cls.parse(text)
        except InvalidScope:
            return None

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: Any) -> Any:
        if not isinstance(data, str):
            return data
        action, colon, target = data.partition(":")
        if not colon:
            raise InvalidScope(f"invalid scope {data!r}: expected ACTION:TYPE/NAME")
        if action not in (*ACTIONS, "*"):
            raise InvalidScope(f"invalid scope {data!r}: action must be read, write, decide or *")
        if target == "*":
            return {"action": action, "agent_type": "*", "name": "*"}
        agent_type, slash, name = target.partition("/")
        if not slash:
            raise InvalidScope(f"invalid scope {data!r}: expected ACTION:TYPE/NAME or ACTION:*")
        return {"action": action, "agent_type": agent_type, "name": name}

    @model_validator(mode="after")
    def _check_target(self) -> Scope:
        where = f"invalid scope {str(self)!r}"
        if any("*" in part and part != "*" for part in (self.agent_type, self.name)):
            raise InvalidScope(f"{where}: '*' stands alone; there are no partial wildcards")
        if self.agent_type != "*" and not _valid(_agent_type, self.agent_type):
            raise InvalidScope(f"{where}: TYPE must be an agent type name (A-Z a-z 0-9 _ . : -)")
        if self.name == "*":
            return self
        if self.name != self.name.strip() or not _valid(_agent_name, self.name):
            raise InvalidScope(
                f"{where}: NAME must be an agent name (printable, no surrounding space)"
            )
        return self

    @model_serializer
    def _to_text(self) -> str:
        return str(self)

    def __str__(self) -> str:
        if self.agent_type == "*" and self.name == "*":
            return f"{self.action}:*"
        return f"{self.action}:{self.agent_type}/{self.name}"

    def covers(self, action: Action, agent_type: str, name: str) -> bool:
        """True if this scope grants `action` on the agent `agent_type/name`."""
        return (
            self.action in ("*", action)
            and self.agent_type in ("*", agent_type)
            and self.name in ("*", name)
        )


def _valid(adapter: TypeAdapter[str], value: str) -> bool:
    try:
        adapter.validate_python(value)
    except ValidationError:
        return False
    return True


class Principal(BaseModel):
    """Who is calling, and what they may do.

    Attributes:
        name: The token entry's name or the JWT's `sub`: safe to log, never a secret.
        via: How the caller got in: `token` (tokens file), `jwt`, or `open` (no auth).
        scopes: What the caller may do (strings are parsed: `["read:*"]`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=_PRINTABLE)]
    via: Literal["token", "jwt", "open"]
    scopes: tuple[Scope, ...] = ()

    def allows(self, action: Action, agent_type: str, name: str) -> bool:
        """True if some scope grants `action` on the agent `agent_type/name`."""
        return any(scope.covers(action, agent_type, name) for scope in self.scopes)

    def may_read_type(self, agent_type: str) -> bool:
        """True if some read scope covers `agent_type`, for any name: may it list that type?

        The listing is then narrowed with `readable` to the agents it may read.
        """
        return any(
            scope.action in ("*", "read") and scope.agent_type in ("*", agent_type)
            for scope in self.scopes
        )

    def readable(self, agents: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """The `(type, name)` pairs of `agents` this principal may read, in their order."""
        return [
            (agent_type, name)
            for agent_type, name in agents
            if self.allows("read", agent_type, name)
        ]


#: The principal of every request to a gateway with no auth configured.
OPEN_PRINCIPAL = Principal(name="(open)", via="open", scopes=(Scope.parse("*:*"),))


# --------------------------------------------------------------------------- tokens file


class TokenEntry(BaseModel):
    """One `[[token]]` table of the tokens file: exactly one of `sha256` or `token`.

    Attributes:
        name: Unique in the file; the principal's name.
        sha256: The hex sha256 of the token (`hash_token`), so the file holds no secret.
        token: The token itself: simpler, weaker (whoever reads the file can call).
        scopes: What the token may do (at least one).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=_PRINTABLE)]
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{64}$")] | None = None
    token: Annotated[SecretStr, Field(min_length=16)] | None = None
    scopes: tuple[Scope, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_secret(self) -> TokenEntry:
        if (self.sha256 is None) == (self.token is None):
            raise ValueError("give exactly one of sha256 or token")
        if self.token is not None and any(c.isspace() for c in self.token.get_secret_value()):
            raise ValueError("token contains whitespace, which a Bearer header cannot carry")
        return self

    @property
    def digest(self) -> bytes:
        """The sha256 digest a presented token is compared with."""
        if self.sha256 is not None:
            return bytes.fromhex(self.sha256)
        assert self.token is not None  # _one_secret guarantees one of the two
        return hashlib.sha256(self.token.get_secret_value().encode()).digest()


def load_tokens_file(path: Path) -> tuple[TokenEntry, ...]:
    """The entries of a tokens file, checked.

    Raises:
        InvalidAuthConfig: The file cannot be read or parsed, has no entries, or an entry is
            invalid (the message names the file and the entry, never a token).
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise InvalidAuthConfig(f"{path}: cannot read the tokens file ({err.strerror})") from None
    except UnicodeDecodeError:
        raise InvalidAuthConfig(f"{path}: the tokens file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as err:
        raise InvalidAuthConfig(f"{path}: not valid TOML ({err})") from None
    unknown = sorted(set(data) - {"token"})
    if unknown:
        raise InvalidAuthConfig(f"{path}: unknown top-level keys {unknown}; only [[token]] tables")
    raw_entries = data.get("token")
    if not isinstance(raw_entries, list) or not raw_entries:
        raise InvalidAuthConfig(f"{path}: no [[token]] tables")
    entries = tuple(_entry(raw, f"{path}: {_label(raw, i)}") for i, raw in enumerate(raw_entries))
    _check_unique(entries, where=str(path))
    return entries


def _label(raw: object, index: int) -> str:
    name = raw.get("name") if isinstance(raw, Mapping) else None
    return f"entry {index + 1} ({name!r})" if isinstance(name, str) else f"entry {index + 1}"


def _entry(raw: object, where: str) -> TokenEntry:
    if not isinstance(raw, Mapping):
        raise InvalidAuthConfig(f"{where}: not a table; write [[token]]")
    try:
        return TokenEntry.model_validate(raw)
    except ValidationError as err:
        # summarize() never quotes an input: a plain `token` value must not reach a log.
        raise InvalidAuthConfig(f"{where}: {summarize(err)}") from None
    except InvalidScope as err:
        raise InvalidAuthConfig(f"{where}: {err}") from None


def _check_unique(entries: Iterable[TokenEntry], *, where: str) -> None:
    names: dict[str, int] = {}
    digests: dict[bytes, int] = {}
    for number, entry in enumerate(entries, start=1):
        if entry.name in names:
            raise InvalidAuthConfig(
                f"{where}: entries {names[entry.name]} and {number} are both named {entry.name!r}"
            )
        if entry.digest in digests:
            raise InvalidAuthConfig(
                f"{where}: entries {digests[entry.digest]} and {number} ({entry.name!r}) hold "
                "the same token"
            )
        names[entry.name] = number
        digests[entry.digest] = number


def hash_token(token: str) -> str:
    """The hex sha256 of `token`: the `sha256` line of its tokens-file entry."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A new random token (256 bits, URL-safe: it fits a header and a query string)."""
    return secrets.token_urlsafe(32)


# --------------------------------------------------------------------------- JWT

# PyJWT's failures, in the order they are checked, as short reasons that quote nothing.
_JWT_REASONS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.ImmatureSignatureError, "token not yet valid"),
    (jwt.InvalidIssuerError, "token issuer not accepted"),
    (jwt.InvalidSignatureError, "token signature invalid"),
    (jwt.InvalidAlgorithmError, "token algorithm not accepted"),
    (jwt.DecodeError, "malformed token"),
)


class JwtVerifier:
    """Verifies JWTs with an HS256 secret, a public key, or both.

    The key is chosen by the token's `alg` from those configured: HS256 tokens are checked
    against the secret only, and asymmetric ones against the public key with the algorithms
    of its type only, so a token signed with the public key as an HMAC secret never passes.

    Args:
        secret: The HS256 secret (at least 32 bytes).
        public_key_pem: A PEM public key or certificate: RSA (RS256, at least 2048 bits), EC
            (ES256/ES384/ES512 by curve) or Ed25519/Ed448 (EdDSA).
        audience: When set, tokens must carry it in `aud`; when not, tokens with an `aud`
            are refused (they were meant for a known service, maybe another).
        issuer: When set, tokens must carry it in `iss`.
        key_source: Where the public key came from, for error messages.

    Raises:
        InvalidAuthConfig: No key, a short secret, or a public key that cannot be used.
    """

    def __init__(
        self,
        *,
        secret: SecretStr | str | None = None,
        public_key_pem: bytes | None = None,
        audience: str | None = None,
        issuer: str | None = None,
        key_source: str = "the JWT public key",
    ) -> None:
        if secret is None and public_key_pem is None:
            raise InvalidAuthConfig("JWT verification needs a secret or a public key")
        self._keys: dict[str, Any] = {}
        if secret is not None:
            raw = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
            if len(raw.encode()) < MIN_SECRET_BYTES:
                raise InvalidAuthConfig(
                    f"the JWT secret is shorter than {MIN_SECRET_BYTES} bytes (RFC 7518 §3.2); "
                    "make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
                )
            self._keys.update(dict.fromkeys(_HS_ALGORITHMS, raw.encode()))
        if public_key_pem is not None:
            key, algorithms = _public_key(public_key_pem, key_source)
            self._keys.update(dict.fromkeys(algorithms, key))
        self._audience = audience
        self._issuer = issuer

    @property
    def algorithms(self) -> tuple[str, ...]:
        """The `alg` values accepted."""
        return tuple(self._keys)

    def verify(self, token: str) -> Principal:
        """The principal a valid token names.

        Raises:
            Unauthorized: The token is malformed, expired, signed with another key or
                algorithm, or lacks `exp`/`sub` or the configured `aud`/`iss`.
        """
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError:
            raise Unauthorized("malformed token", error="invalid_token") from None
        key = self._keys.get(algorithm) if isinstance(algorithm, str) else None
        if key is None:
            raise Unauthorized("token algorithm not accepted", error="invalid_token")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=CLOCK_SKEW_SECONDS,
                options={"require": ["exp", "sub"]},
            )
        except jwt.PyJWTError as err:
            raise Unauthorized(self._reason(err), error="invalid_token") from None
        return _principal(claims)

    def _reason(self, err: jwt.PyJWTError) -> str:
        if isinstance(err, jwt.MissingRequiredClaimError):
            return f"token lacks the {err.claim!r} claim"
        if isinstance(err, jwt.InvalidAudienceError):
            if self._audience is None:
                return "token has an audience and the gateway has none configured"
            return "token audience not accepted"
        for kind, reason in _JWT_REASONS:
            if isinstance(err, kind):
                return reason
        return "invalid token"


def _public_key(pem: bytes, source: str) -> tuple[Any, tuple[str, ...]]:
    try:
        if b"-----BEGIN CERTIFICATE-----" in pem:
            key: Any = x509.load_pem_x509_certificate(pem).public_key()
        else:
            key = load_pem_public_key(pem)
    except ValueError:
        hint = " (a private key: give its public half)" if b"PRIVATE KEY" in pem else ""
        raise InvalidAuthConfig(f"{source}: not a PEM public key or certificate{hint}") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise InvalidAuthConfig(
                f"{source}: RSA key of {key.key_size} bits; use {MIN_RSA_BITS}+"
            )
        return key, ("RS256",)
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _EC_ALGORITHMS:
        return key, (_EC_ALGORITHMS[key.curve.name],)
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return key, ("EdDSA",)
    raise InvalidAuthConfig(f"{source}: unsupported key type; use RSA, EC P-256/384/521 or Ed25519")


def _principal(claims: dict[str, Any]) -> Principal:
    subject = claims["sub"]
    if not _valid(_agent_name, subject):
        raise Unauthorized("token subject malformed", error="invalid_token")
    raw: list[str] = []
    scope, scopes = claims.get("scope"), claims.get("scopes")
    if scope is not None:
        if not isinstance(scope, str):
            raise Unauthorized("token 'scope' claim is not a string", error="invalid_token")
        raw.extend(scope.split())
    if scopes is not None:
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise Unauthorized(
                "token 'scopes' claim is not a list of strings", error="invalid_token"
            )
        raw.extend(scopes)
    # Scopes outside the grammar belong to other services sharing the issuer (openid, email).
    parsed = (Scope.parse_or_none(text) for text in raw)
    return Principal(name=subject, via="jwt", scopes=tuple(dict.fromkeys(s for s in parsed if s)))


# --------------------------------------------------------------------------- the gate


class Authenticator:
    """Turns a request's credentials into a `Principal`, and checks its scopes.

    Args:
        tokens: The tokens-file entries (tried first).
        jwt: The JWT verifier (tried when no entry matches).

    With neither, the authenticator is `open`: every request is `OPEN_PRINCIPAL`.

    Raises:
        InvalidAuthConfig: Two entries share a name or a token.
    """

    def __init__(self, *, tokens: Iterable[TokenEntry] = (), jwt: JwtVerifier | None = None):
        entries = tuple(tokens)
        _check_unique(entries, where="tokens")
        self._tokens = tuple(
            (entry.digest, Principal(name=entry.name, via="token", scopes=entry.scopes))
            for entry in entries
        )
        self._jwt = jwt

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        """The authenticator `settings` describe; reads the tokens file and the key once.

        Raises:
            InvalidAuthConfig: A file cannot be read or used, the secret is too short, or an
                audience or issuer is set with no JWT key to check it.
        """
        tokens = (
            load_tokens_file(settings.gateway_tokens_file) if settings.gateway_tokens_file else ()
        )
        secret, key_file = settings.gateway_jwt_secret, settings.gateway_jwt_public_key_file
        if secret is None and key_file is None:
            if settings.gateway_jwt_audience or settings.gateway_jwt_issuer:
                raise InvalidAuthConfig(
                    "gateway_jwt_audience/issuer are set but no JWT secret or public key file"
                )
            return cls(tokens=tokens)
        verifier = JwtVerifier(
            secret=secret,
            public_key_pem=_read_key(key_file) if key_file else None,
            audience=settings.gateway_jwt_audience,
            issuer=settings.gateway_jwt_issuer,
            key_source=str(key_file),
        )
        return cls(tokens=tokens, jwt=verifier)

    @property
    def open(self) -> bool:
        """True when no auth is configured: every caller may do everything."""
        return not self._tokens and self._jwt is None

    def authenticate(self, authorization: str | None, query_token: str | None = None) -> Principal:
        """The caller a request's credentials name.

        Args:
            authorization: The raw `Authorization` header (`Bearer <token>`), if any; it wins
                over `query_token`.
            query_token: The `access_token` query parameter, for browser WebSocket and
                EventSource requests, which cannot set headers.

        Raises:
            Unauthorized: No credentials, a malformed header, or a token that is neither a
                tokens-file entry nor a valid JWT (the message never quotes the token).
        """
        if self.open:
            return OPEN_PRINCIPAL
        token = _bearer(authorization) if authorization else query_token
        if not token:
            raise Unauthorized("no credentials: send 'Authorization: Bearer <token>'")
        presented = hashlib.sha256(token.encode()).digest()
        found: Principal | None = None
        for digest, principal in self._tokens:
            # Every entry is compared, so the time taken does not tell which one matched.
            if hmac.compare_digest(digest, presented) and found is None:
                found = principal
        if found is not None:
            return found
        if self._jwt is None or token.count(".") != 2:
            raise Unauthorized("unknown token", error="invalid_token")
        return self._jwt.verify(token)

    def authorize(self, principal: Principal, action: Action, agent_type: str, name: str) -> None:
        """Pass if `principal` may do `action` on the agent `agent_type/name`.

        Raises:
            Forbidden: No scope of the principal covers it.
        """
        if principal.allows(action, agent_type, name):
            return
        held = ", ".join(str(scope) for scope in principal.scopes) or "none"
        raise Forbidden(
            f"{action} on {agent_type}/{name} is not allowed for {principal.name!r} (scopes: {held})"
        )


def _bearer(header: str) -> str:
    parts = header.split()
    if len(parts) != 2 or parts[0].lower() != "bearer":
        raise Unauthorized(
            "malformed Authorization header: expected 'Bearer <token>'", error="invalid_request"
        )
    return parts[1]


def _read_key(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise InvalidAuthConfig(
            f"{path}: cannot read the JWT public key ({err.strerror})"
        ) from None


def check_binding(host: str, authenticator: Authenticator) -> str | None:
    """Whether the gateway may listen on `host` with this authenticator.

    Returns:
        A warning to log when it runs open on loopback; None when auth is configured.

    Raises:
        InsecureGateway: `host` is not loopback (127.0.0.0/8, ::1, localhost) and no auth is
            configured. `0.0.0.0`, `::` and any other host name count as public.
    """
    if not authenticator.open:
        return None
    if _is_loopback(host):
        return OPEN_WARNING
    raise InsecureGateway(
        f"refusing to listen on {host!r} with no auth: set PERENNIAL_GATEWAY_TOKENS_FILE, "
        "PERENNIAL_GATEWAY_JWT_SECRET or PERENNIAL_GATEWAY_JWT_PUBLIC_KEY_FILE, or listen on "
        "127.0.0.1"
    )


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere
