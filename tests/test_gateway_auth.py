"""The gateway's auth: scopes, the tokens file, JWTs, the authenticator and the binding check.

Plain unit tests: no server, no Temporal. Every refusal is also checked for the token it
refused: an error message must never quote one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from perennial.client.gateway.auth import (
    ACTIONS,
    OPEN_PRINCIPAL,
    OPEN_WARNING,
    Authenticator,
    Forbidden,
    InsecureGateway,
    InvalidAuthConfig,
    InvalidScope,
    JwtVerifier,
    Principal,
    Scope,
    TokenEntry,
    Unauthorized,
    check_binding,
    hash_token,
    load_tokens_file,
    new_token,
)
from perennial.client.settings import Settings
from perennial.workflows.errors import UsageError

SECRET = "an-hs256-secret-of-at-least-32-bytes!!"
WEB_TOKEN = "web-app-token-0123456789abcdef"
OPS_TOKEN = "ops-plain-token-0123456789abcdef"
TOKENS_FILE = f"""
[[token]]
name = "web-app"
sha256 = "{hash_token(WEB_TOKEN)}"
scopes = ["read:*", "write:notes/*"]

[[token]]
name = "ops"
token = "{OPS_TOKEN}"
scopes = ["*:*"]
"""


def _file(tmp_path: Path, text: str, name: str = "tokens.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _tokens_auth(tmp_path: Path, text: str = TOKENS_FILE) -> Authenticator:
    return Authenticator.from_settings(Settings(gateway_tokens_file=_file(tmp_path, text)))


def _unauthorized(auth: Authenticator, header: str | None, query: str | None = None) -> str:
    """The reason `auth` refuses the credentials, checked to quote none of them."""
    with pytest.raises(Unauthorized) as caught:
        auth.authenticate(header, query)
    shown = f"{caught.value} {caught.value.www_authenticate}"
    for token in (header or "").split()[1:] + [query or ""]:
        if len(token) > 3:
            assert token not in shown
    return str(caught.value)


def _claims(**overrides: Any) -> dict[str, Any]:
    # A day ahead: tokens are made when the module is collected, a long suite may come later.
    claims: dict[str, Any] = {"sub": "alice", "exp": int(time.time()) + 86_400, "scope": "read:*"}
    claims.update(overrides)
    return {key: value for key, value in claims.items() if value is not None}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(header: dict[str, Any], claims: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    """A JWT assembled by hand, for signatures PyJWT refuses to make."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{_b64(sign(signing_input.encode()))}"


def _public_pem(private_key: Any) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


# --------------------------------------------------------------------------- scopes


@pytest.mark.parametrize(
    ("text", "action", "agent_type", "name", "canonical"),
    [
        ("read:*", "read", "*", "*", "read:*"),
        ("read:*/*", "read", "*", "*", "read:*"),
        ("write:notes/*", "write", "notes", "*", "write:notes/*"),
        ("decide:assistant/alice", "decide", "assistant", "alice", "decide:assistant/alice"),
        ("read:*/alice", "read", "*", "alice", "read:*/alice"),
        ("*:*", "*", "*", "*", "*:*"),
        ("*:notes/bob", "*", "notes", "bob", "*:notes/bob"),
        ("read:ns:type/a/b c", "read", "ns:type", "a/b c", "read:ns:type/a/b c"),
    ],
)
def test_scope_parses(text: str, action: str, agent_type: str, name: str, canonical: str) -> None:
    scope = Scope.parse(text)
    assert (scope.action, scope.agent_type, scope.name) == (action, agent_type, name)
    assert str(scope) == canonical
    assert Scope.parse(str(scope)) == scope


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("read", "expected ACTION:TYPE/NAME"),
        ("", "expected ACTION:TYPE/NAME"),
        ("admin:*", "action must be"),
        ("READ:*", "action must be"),
        (" read:*", "action must be"),
        (":notes/a", "action must be"),
        ("read:notes", "expected ACTION:TYPE/NAME or ACTION:*"),
        ("read:", "expected ACTION:TYPE/NAME or ACTION:*"),
        ("read:/alice", "TYPE must be"),
        ("read:no tes/alice", "TYPE must be"),
        ("read:notes/", "NAME must be"),
        ("read:notes/alice ", "NAME must be"),
        ("read:notes/a\x00b", "NAME must be"),
        ("read:note*/alice", "partial wildcards"),
        ("read:notes/al*", "partial wildcards"),
        ("read:no*/*", "partial wildcards"),
        ("read:**", "expected ACTION:TYPE/NAME or ACTION:*"),
    ],
)
def test_malformed_scope_is_refused(text: str, problem: str) -> None:
    with pytest.raises(InvalidScope, match=problem):
        Scope.parse(text)
    assert Scope.parse_or_none(text) is None


@pytest.mark.parametrize(
    ("scope", "action", "agent_type", "name", "allowed"),
    [
        ("read:notes/alice", "read", "notes", "alice", True),
        ("read:notes/alice", "read", "notes", "bob", False),
        ("read:notes/alice", "read", "tasks", "alice", False),
        ("read:notes/alice", "write", "notes", "alice", False),
        ("read:notes/*", "read", "notes", "bob", True),
        ("read:notes/*", "read", "tasks", "bob", False),
        ("read:*/alice", "read", "tasks", "alice", True),
        ("read:*/alice", "read", "tasks", "bob", False),
        ("read:*", "read", "anything", "anyone", True),
        ("read:*", "write", "notes", "alice", False),
        ("read:*", "decide", "notes", "alice", False),
        ("write:notes/*", "write", "notes", "x", True),
        ("write:notes/*", "read", "notes", "x", False),
        ("decide:assistant/alice", "decide", "assistant", "alice", True),
        ("*:notes/alice", "decide", "notes", "alice", True),
        ("*:notes/alice", "write", "notes", "bob", False),
        ("*:*", "write", "any", "agent", True),
        # `*` is matched only whole: a name that is literally "no*" is not a pattern.
        ("read:notes/*", "read", "notes*", "x", False),
    ],
)
def test_scope_matching(scope: str, action: str, agent_type: str, name: str, allowed: bool) -> None:
    principal = Principal(name="p", via="token", scopes=(scope,))
    assert principal.allows(action, agent_type, name) is allowed  # type: ignore[arg-type]


def test_principal_scopes_parse_and_serialize_as_text() -> None:
    principal = Principal(name="web-app", via="token", scopes=["read:*", "write:notes/*"])
    assert principal.scopes == (Scope.parse("read:*"), Scope.parse("write:notes/*"))
    assert json.loads(principal.model_dump_json())["scopes"] == ["read:*", "write:notes/*"]
    assert Principal.model_validate_json(principal.model_dump_json()) == principal
    with pytest.raises(InvalidScope):
        Principal(name="web-app", via="token", scopes=["read"])


@pytest.mark.parametrize(
    ("scopes", "agent_type", "may"),
    [
        (["read:*"], "notes", True),
        (["read:notes/alice"], "notes", True),
        (["read:notes/alice"], "tasks", False),
        (["read:*/alice"], "tasks", True),
        (["write:*", "decide:*"], "notes", False),
        (["*:tasks/*"], "tasks", True),
        ([], "notes", False),
    ],
)
def test_may_read_type(scopes: list[str], agent_type: str, may: bool) -> None:
    assert Principal(name="p", via="jwt", scopes=scopes).may_read_type(agent_type) is may


def test_readable_keeps_only_readable_agents_in_order() -> None:
    principal = Principal(name="p", via="jwt", scopes=["read:notes/*", "read:*/alice", "write:*"])
    agents = [
        ("tasks", "bob"),
        ("notes", "x"),
        ("tasks", "alice"),
        ("chat", "carol"),
        ("notes", "y"),
    ]
    assert principal.readable(agents) == [("notes", "x"), ("tasks", "alice"), ("notes", "y")]
    assert Principal(name="p", via="jwt").readable(agents) == []


def test_open_principal_allows_everything() -> None:
    auth = Authenticator()
    assert auth.open
    for header in (None, "", "Basic x", f"Bearer {WEB_TOKEN}"):
        assert auth.authenticate(header, "whatever") is OPEN_PRINCIPAL
    assert all(OPEN_PRINCIPAL.allows(action, "any-type", "any name") for action in ACTIONS)
    assert OPEN_PRINCIPAL.may_read_type("notes")
    auth.authorize(OPEN_PRINCIPAL, "decide", "assistant", "alice")
    assert Authenticator.from_settings(Settings()).open


# --------------------------------------------------------------------------- tokens file


def test_tokens_file_entries_become_principals(tmp_path: Path) -> None:
    auth = _tokens_auth(tmp_path)
    assert not auth.open
    web = auth.authenticate(f"Bearer {WEB_TOKEN}")
    assert (web.name, web.via) == ("web-app", "token")
    assert [str(s) for s in web.scopes] == ["read:*", "write:notes/*"]
    ops = auth.authenticate(f"Bearer {OPS_TOKEN}")
    assert (ops.name, [str(s) for s in ops.scopes]) == ("ops", ["*:*"])


def test_wrong_token_is_unauthorized(tmp_path: Path) -> None:
    auth = _tokens_auth(tmp_path)
    wrong = WEB_TOKEN + "x"
    assert _unauthorized(auth, f"Bearer {wrong}") == "unknown token"
    assert _unauthorized(auth, None, wrong) == "unknown token"
    # Without a JWT verifier a dotted token is just another unknown token.
    assert _unauthorized(auth, "Bearer aaaa.bbbb.cccc") == "unknown token"


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        (f"Bearer {WEB_TOKEN}", True),
        (f"bearer {WEB_TOKEN}", True),
        (f"BEARER {WEB_TOKEN}", True),
        (f"Bearer   {WEB_TOKEN}", True),
        (f"  Bearer {WEB_TOKEN}  ", True),
        (f"Bearer\t{WEB_TOKEN}", True),
        (f"Basic {WEB_TOKEN}", False),
        ("Bearer", False),
        ("Bearer ", False),
        (WEB_TOKEN, False),
        (f"Bearer {WEB_TOKEN} extra", False),
        (f"Bearer{WEB_TOKEN}", False),
        ("   ", False),
    ],
)
def test_authorization_header_shapes(tmp_path: Path, header: str, accepted: bool) -> None:
    auth = _tokens_auth(tmp_path)
    if accepted:
        assert auth.authenticate(header).name == "web-app"
        return
    reason = _unauthorized(auth, header)
    assert reason == "malformed Authorization header: expected 'Bearer <token>'"
    assert WEB_TOKEN not in reason


@pytest.mark.parametrize("header", [None, ""])
def test_no_credentials(tmp_path: Path, header: str | None) -> None:
    auth = _tokens_auth(tmp_path)
    with pytest.raises(Unauthorized, match="no credentials") as caught:
        auth.authenticate(header)
    assert caught.value.error is None
    assert caught.value.www_authenticate == 'Bearer realm="perennial"'
    with pytest.raises(Unauthorized, match="no credentials"):
        auth.authenticate(header, "")


def test_query_token_is_used_only_without_a_header(tmp_path: Path) -> None:
    auth = _tokens_auth(tmp_path)
    assert auth.authenticate(None, WEB_TOKEN).name == "web-app"
    assert auth.authenticate("", OPS_TOKEN).name == "ops"
    # The header wins: a wrong header is not rescued by a right query parameter.
    assert _unauthorized(auth, "Bearer not-the-token", WEB_TOKEN) == "unknown token"
    assert auth.authenticate(f"Bearer {OPS_TOKEN}", WEB_TOKEN).name == "ops"


def test_unauthorized_www_authenticate_header(tmp_path: Path) -> None:
    auth = _tokens_auth(tmp_path)
    with pytest.raises(Unauthorized) as caught:
        auth.authenticate("Bearer nope-nope-nope")
    assert caught.value.error == "invalid_token"
    assert caught.value.www_authenticate == (
        'Bearer realm="perennial", error="invalid_token", error_description="unknown token"'
    )
    with pytest.raises(Unauthorized) as caught:
        auth.authenticate("Basic nope-nope-nope")
    assert caught.value.error == "invalid_request"


_GOOD = f'name = "good"\nsha256 = "{hash_token("x" * 20)}"\nscopes = ["read:*"]\n'


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            f'[[token]]\n{_GOOD}\n[[token]]\nname = "good"\nsha256 = "{"a" * 64}"\n'
            'scopes = ["read:*"]\n',
            "entries 1 and 2 are both named 'good'",
        ),
        (
            f'[[token]]\n{_GOOD}\n[[token]]\nname = "copy"\ntoken = "{"x" * 20}"\n'
            'scopes = ["read:*"]\n',
            "entries 1 and 2 ('copy') hold the same token",
        ),
        ('[[token]]\nsha256 = "' + "a" * 64 + '"\nscopes = ["read:*"]\n', "entry 1: name: Field"),
        ('[[token]]\nname = "n"\nsha256 = "' + "a" * 64 + '"\n', "entry 1 ('n'): scopes: Field"),
        ('[[token]]\nname = "n"\nscopes = ["read:*"]\n', "entry 1 ('n'): input: Value error"),
        (
            f'[[token]]\nname = "n"\nsha256 = "{"a" * 64}"\ntoken = "{"y" * 20}"\n'
            'scopes = ["read:*"]\n',
            "entry 1 ('n'): input: Value error, give exactly one of sha256 or token",
        ),
        (
            f'[[token]]\n{_GOOD}\n[[token]]\nname = "bad"\nsha256 = "{"b" * 64}"\n'
            'scopes = ["read:*", "raed:notes/*"]\n',
            "entry 2 ('bad'): invalid scope 'raed:notes/*'",
        ),
        (
            '[[token]]\nname = "n"\nsha256 = "' + "a" * 64 + '"\nscopes = []\n',
            "entry 1 ('n'): scopes",
        ),
        ('[[token]]\nname = "n"\nsha256 = "abc"\nscopes = ["read:*"]\n', "entry 1 ('n'): sha256"),
        (
            '[[token]]\nname = "n"\ntoken = "short-secret"\nscopes = ["read:*"]\n',
            "entry 1 ('n'): token",
        ),
        (
            '[[token]]\nname = "n"\ntoken = "has a space in it ok"\nscopes = ["read:*"]\n',
            "token contains whitespace",
        ),
        (
            f'[[token]]\n{_GOOD}sha265 = "{"a" * 64}"\n',
            "entry 1 ('good'): sha265: Extra inputs",
        ),
        ('token = "a-secret-value-at-top-level"\n', "no [[token]] tables"),
        ("", "no [[token]] tables"),
        (f"[[tokens]]\n{_GOOD}", "unknown top-level keys ['tokens']"),
        ("[[token]\nname = 1", "not valid TOML"),
    ],
)
def test_tokens_file_errors_name_file_and_entry(tmp_path: Path, text: str, problem: str) -> None:
    path = _file(tmp_path, text)
    with pytest.raises(InvalidAuthConfig) as caught:
        Authenticator.from_settings(Settings(gateway_tokens_file=path))
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert problem in message
    for secret in ("x" * 20, "y" * 20, "short-secret", "has a space", "a-secret-value"):
        assert secret not in message
    assert isinstance(caught.value, UsageError)


def test_tokens_file_unreadable(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(InvalidAuthConfig, match="cannot read the tokens file"):
        load_tokens_file(missing)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe[[token]]")
    with pytest.raises(InvalidAuthConfig, match="not UTF-8"):
        load_tokens_file(binary)


def test_authenticator_refuses_duplicate_entries() -> None:
    entry = TokenEntry(name="a", sha256=hash_token("t" * 20), scopes=["read:*"])
    with pytest.raises(InvalidAuthConfig, match="both named 'a'"):
        Authenticator(tokens=[entry, entry])


def test_new_token_and_hash_token_make_a_working_entry(tmp_path: Path) -> None:
    token = new_token()
    assert len(token) >= 43 and token != new_token()
    assert hash_token(token) == hashlib.sha256(token.encode()).hexdigest()
    text = (
        f'[[token]]\nname = "fresh"\nsha256 = "{hash_token(token).upper()}"\nscopes = ["read:*"]\n'
    )
    assert _tokens_auth(tmp_path, text).authenticate(None, token).name == "fresh"


# --------------------------------------------------------------------------- JWT: HS256


def _hs_auth(**settings: Any) -> Authenticator:
    return Authenticator.from_settings(Settings(gateway_jwt_secret=SECRET, **settings))


def test_jwt_hs256_scope_string() -> None:
    auth = _hs_auth()
    token = jwt.encode(_claims(scope="openid read:* write:notes/alice email"), SECRET, "HS256")
    principal = auth.authenticate(f"Bearer {token}")
    assert (principal.name, principal.via) == ("alice", "jwt")
    # Scopes of other services sharing the issuer (openid, email) are not ours: ignored.
    assert [str(s) for s in principal.scopes] == ["read:*", "write:notes/alice"]
    assert auth.authenticate(None, token) == principal


def test_jwt_hs256_scopes_list() -> None:
    token = jwt.encode(_claims(scope=None, scopes=["decide:assistant/*", "read:*"]), SECRET)
    principal = _hs_auth().authenticate(f"Bearer {token}")
    assert [str(s) for s in principal.scopes] == ["decide:assistant/*", "read:*"]


def test_jwt_without_scopes_authenticates_with_none() -> None:
    principal = _hs_auth().authenticate(f"Bearer {jwt.encode(_claims(scope=None), SECRET)}")
    assert principal.scopes == ()
    assert not principal.may_read_type("notes")


def test_jwt_audience_and_issuer_when_configured() -> None:
    auth = _hs_auth(gateway_jwt_audience="perennial", gateway_jwt_issuer="https://idp.example")
    token = jwt.encode(_claims(aud="perennial", iss="https://idp.example"), SECRET)
    assert auth.authenticate(f"Bearer {token}").name == "alice"


def _hs(claims: dict[str, Any], secret: str = SECRET) -> str:
    return jwt.encode(claims, secret, "HS256")


def _tampered() -> str:
    """A valid token whose claims were swapped for more powerful ones after signing."""
    header, _, signature = _hs(_claims()).split(".")
    return f"{header}.{_b64(json.dumps(_claims(scope='*:*')).encode())}.{signature}"


_HOUR_AGO = int(time.time()) - 3600
_IN_AN_HOUR = int(time.time()) + 3600


@pytest.mark.parametrize(
    ("token", "settings", "reason"),
    [
        (_hs(_claims(exp=_HOUR_AGO)), {}, "token expired"),
        (_hs(_claims(), "another-secret-of-at-least-32-bytes!"), {}, "token signature invalid"),
        (_hs(_claims(exp=None)), {}, "token lacks the 'exp' claim"),
        (_hs(_claims(sub=None)), {}, "token lacks the 'sub' claim"),
        (_hs(_claims(sub="bad\x00name")), {}, "token subject malformed"),
        (_hs(_claims(nbf=_IN_AN_HOUR)), {}, "token not yet valid"),
        (_hs(_claims(scope=["read:*"])), {}, "token 'scope' claim is not a string"),
        (_hs(_claims(scopes="read:*")), {}, "token 'scopes' claim is not a list of strings"),
        (_hs(_claims(exp="tomorrow")), {}, "malformed token"),
        (_hs(_claims(aud="other")), {"gateway_jwt_audience": "perennial"}, "audience not accepted"),
        (_hs(_claims()), {"gateway_jwt_audience": "perennial"}, "token lacks the 'aud' claim"),
        (_hs(_claims(aud="perennial")), {}, "token has an audience and the gateway has none"),
        (_hs(_claims(iss="https://evil")), {"gateway_jwt_issuer": "https://idp"}, "issuer not"),
        (_hs(_claims()), {"gateway_jwt_issuer": "https://idp"}, "token lacks the 'iss' claim"),
        (_forge({"alg": "none", "typ": "JWT"}, _claims(), lambda _: b""), {}, "algorithm not"),
        (_forge({"alg": "None"}, _claims(), lambda _: b""), {}, "algorithm not accepted"),
        (_forge({"typ": "JWT"}, _claims(), lambda _: b"sig"), {}, "algorithm not accepted"),
        (_tampered(), {}, "token signature invalid"),
        ("aaaa.bbbb.cccc", {}, "malformed token"),
        (jwt.encode(_claims(), SECRET * 2, "HS512"), {}, "token algorithm not accepted"),
        ("not-a-jwt-at-all", {}, "unknown token"),
    ],
)
def test_jwt_hs256_refusals(token: str, settings: dict[str, Any], reason: str) -> None:
    auth = _hs_auth(**settings)
    assert reason in _unauthorized(auth, f"Bearer {token}")
    assert reason in _unauthorized(auth, None, token)


def test_expired_within_clock_skew_is_accepted() -> None:
    token = _hs(_claims(exp=int(time.time()) - 5))
    assert _hs_auth().authenticate(f"Bearer {token}").name == "alice"


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"gateway_jwt_secret": "too-short"}, "shorter than 32 bytes"),
        ({"gateway_jwt_secret": ""}, "shorter than 32 bytes"),
        ({"gateway_jwt_audience": "perennial"}, "no JWT secret or public key file"),
        ({"gateway_jwt_issuer": "https://idp"}, "no JWT secret or public key file"),
    ],
)
def test_jwt_configuration_errors(settings: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidAuthConfig, match=problem) as caught:
        Authenticator.from_settings(Settings(**settings))
    assert "too-short" not in str(caught.value)


def test_jwt_verifier_needs_a_key() -> None:
    with pytest.raises(InvalidAuthConfig, match="needs a secret or a public key"):
        JwtVerifier()


# --------------------------------------------------------------------------- JWT: public keys


def _key_auth(tmp_path: Path, pem: bytes, **settings: Any) -> Authenticator:
    path = tmp_path / "jwt.pem"
    path.write_bytes(pem)
    return Authenticator.from_settings(Settings(gateway_jwt_public_key_file=path, **settings))


@pytest.mark.parametrize("kind", ["RS256", "ES256", "EdDSA"])
def test_jwt_public_key_algorithms(tmp_path: Path, rsa_key: rsa.RSAPrivateKey, kind: str) -> None:
    keys: dict[str, Any] = {
        "RS256": rsa_key,
        "ES256": ec.generate_private_key(ec.SECP256R1()),
        "EdDSA": ed25519.Ed25519PrivateKey.generate(),
    }
    auth = _key_auth(tmp_path, _public_pem(keys[kind]))
    principal = auth.authenticate(f"Bearer {jwt.encode(_claims(), keys[kind], kind)}")
    assert (principal.name, principal.via) == ("alice", "jwt")
    # Signed by another key of the same kind: refused.
    other = {
        "RS256": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ES256": lambda: ec.generate_private_key(ec.SECP256R1()),
        "EdDSA": ed25519.Ed25519PrivateKey.generate,
    }[kind]()
    forged = jwt.encode(_claims(), other, kind)
    assert _unauthorized(auth, f"Bearer {forged}") == "token signature invalid"
    # An HS256 token signed with the secret cannot get in where only a key is configured.
    assert _unauthorized(auth, f"Bearer {_hs(_claims())}") == "token algorithm not accepted"


def test_jwt_algorithm_confusion_is_refused(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    pem = _public_pem(rsa_key)
    forged = _forge(
        {"alg": "HS256", "typ": "JWT"},
        _claims(scope="*:*"),
        lambda data: hmac.new(pem, data, hashlib.sha256).digest(),
    )
    only_key = _key_auth(tmp_path, pem)
    assert _unauthorized(only_key, f"Bearer {forged}") == "token algorithm not accepted"
    # With a secret too, HS256 is checked against the secret, never against the public key.
    both = _key_auth(tmp_path, pem, gateway_jwt_secret=SECRET)
    assert JwtVerifier(secret=SECRET, public_key_pem=pem).algorithms == ("HS256", "RS256")
    assert _unauthorized(both, f"Bearer {forged}") == "token signature invalid"
    assert both.authenticate(f"Bearer {jwt.encode(_claims(), rsa_key, 'RS256')}").name == "alice"
    assert both.authenticate(f"Bearer {_hs(_claims())}").name == "alice"


def test_jwt_certificate_as_public_key(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA384())
    )
    auth = _key_auth(tmp_path, certificate.public_bytes(serialization.Encoding.PEM))
    assert auth.authenticate(f"Bearer {jwt.encode(_claims(), key, 'ES384')}").name == "alice"
    es256 = jwt.encode(_claims(), ec.generate_private_key(ec.SECP256R1()), "ES256")
    assert _unauthorized(auth, f"Bearer {es256}") == "token algorithm not accepted"


def test_jwt_public_key_file_errors(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    private_pem = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(InvalidAuthConfig, match="a private key: give its public half") as caught:
        _key_auth(tmp_path, private_pem)
    assert "MII" not in str(caught.value)
    with pytest.raises(InvalidAuthConfig, match=r"jwt\.pem: not a PEM public key"):
        _key_auth(tmp_path, b"not a key")
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(InvalidAuthConfig, match="RSA key of 1024 bits"):
        _key_auth(tmp_path, _public_pem(weak))
    with pytest.raises(InvalidAuthConfig, match="unsupported key type"):
        _key_auth(tmp_path, _public_pem(ec.generate_private_key(ec.SECP256K1())))
    missing = tmp_path / "absent.pem"
    with pytest.raises(InvalidAuthConfig, match="absent.pem: cannot read the JWT public key"):
        Authenticator.from_settings(Settings(gateway_jwt_public_key_file=missing))


# --------------------------------------------------------------------------- both, and authorize


def test_tokens_file_then_jwt(tmp_path: Path) -> None:
    auth = Authenticator.from_settings(
        Settings(gateway_tokens_file=_file(tmp_path, TOKENS_FILE), gateway_jwt_secret=SECRET)
    )
    assert auth.authenticate(f"Bearer {WEB_TOKEN}").via == "token"
    assert auth.authenticate(f"Bearer {_hs(_claims())}").via == "jwt"
    assert _unauthorized(auth, "Bearer neither-a-token-nor-a-jwt") == "unknown token"
    expired = _hs(_claims(exp=_HOUR_AGO))
    assert _unauthorized(auth, f"Bearer {expired}") == "token expired"


def test_a_file_token_that_looks_like_a_jwt_is_matched_first(tmp_path: Path) -> None:
    dotted = "aaaaaaaa.bbbbbbbb.cccccccc"
    text = f'[[token]]\nname = "dotted"\ntoken = "{dotted}"\nscopes = ["read:*"]\n'
    auth = Authenticator.from_settings(
        Settings(gateway_tokens_file=_file(tmp_path, text), gateway_jwt_secret=SECRET)
    )
    assert auth.authenticate(f"Bearer {dotted}").name == "dotted"


def test_authorize_names_action_and_agent_never_the_token(tmp_path: Path) -> None:
    auth = _tokens_auth(tmp_path)
    web = auth.authenticate(f"Bearer {WEB_TOKEN}")
    auth.authorize(web, "read", "assistant", "alice")
    auth.authorize(web, "write", "notes", "alice")
    with pytest.raises(Forbidden) as caught:
        auth.authorize(web, "write", "assistant", "alice")
    message = str(caught.value)
    assert message == (
        "write on assistant/alice is not allowed for 'web-app' (scopes: read:*, write:notes/*)"
    )
    assert WEB_TOKEN not in message and hash_token(WEB_TOKEN) not in message
    with pytest.raises(Forbidden, match="decide on notes/alice"):
        auth.authorize(web, "decide", "notes", "alice")
    nobody = Principal(name="nobody", via="jwt")
    with pytest.raises(Forbidden, match=r"\(scopes: none\)"):
        auth.authorize(nobody, "read", "notes", "alice")


# --------------------------------------------------------------------------- binding


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("127.255.255.254", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("10.0.0.1", False),
        ("128.0.0.1", False),
        ("gateway.example.com", False),
        ("localhost.example.com", False),
        ("", False),
    ],
)
def test_check_binding(tmp_path: Path, host: str, loopback: bool) -> None:
    if loopback:
        assert check_binding(host, Authenticator()) == OPEN_WARNING
    else:
        with pytest.raises(InsecureGateway, match="refusing to listen") as caught:
            check_binding(host, Authenticator())
        assert isinstance(caught.value, UsageError)
    assert check_binding(host, _tokens_auth(tmp_path)) is None
    assert check_binding(host, _hs_auth()) is None


def test_open_warning_text() -> None:
    assert OPEN_WARNING == (
        "running open: no auth configured; anyone on this machine can reach every agent"
    )
