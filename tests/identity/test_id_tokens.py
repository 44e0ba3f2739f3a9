"""ID token checks (integrations/web/auth/oidc.py), with tokens signed here by a key of our own
(unit tests: the browser flow against a real provider is tests/browser/test_signin.py)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from integrations.web.auth.oidc import SignInFailed, validate_id_token

ISSUER = "http://127.0.0.1:9400"
CLIENT = "assistant"
NONCE = "n-0123456789"
KEY = RSAKey.generate_key(2048, parameters={"kid": "k1"})
JWKS = {"keys": [KEY.as_dict(private=False)]}


def token(key: RSAKey = KEY, **changes: Any) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": CLIENT, "sub": "alice", "iat": now, "exp": now + 300,
              "nonce": NONCE} | changes
    claims = {name: value for name, value in claims.items() if value is not None}
    return jwt.encode({"alg": "RS256", "kid": "k1"}, claims, key)


def check(id_token: str) -> dict[str, Any]:
    return validate_id_token(id_token, JWKS, issuer=ISSUER, client_id=CLIENT, nonce=NONCE)


def test_a_good_token_gives_its_claims() -> None:
    assert check(token(email="alice@example.com"))["email"] == "alice@example.com"


@pytest.mark.parametrize(("changes", "said"), [
    ({"iss": "http://evil.example"}, "wrong issuer"),
    ({"aud": "someone-else"}, "wrong audience"),
    ({"nonce": "another"}, "wrong nonce"),
    ({"nonce": None}, "no nonce claim"),
    ({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}, "expired"),
])
def test_a_token_for_another_sign_in_is_refused(changes: dict[str, Any], said: str) -> None:
    with pytest.raises(SignInFailed, match=said):
        check(token(**changes))


def test_a_token_signed_by_another_key_is_refused() -> None:
    other = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    with pytest.raises(SignInFailed):
        check(token(key=other))


def test_an_unsigned_token_is_refused() -> None:
    header, payload, _ = token().split(".")
    with pytest.raises(SignInFailed):
        check(f"{header}.{payload}.")


def test_an_unknown_key_id_is_told_apart_so_the_keys_are_fetched_again() -> None:
    """OidcClient.finish fetches the provider's keys once more on this (a key rotation)."""
    from joserfc.errors import InvalidKeyIdError

    rotated = RSAKey.generate_key(2048, parameters={"kid": "k2"})
    with pytest.raises(SignInFailed) as refused:
        check(jwt.encode({"alg": "RS256", "kid": "k2"}, {"iss": ISSUER}, rotated))
    assert isinstance(refused.value.__cause__, InvalidKeyIdError)
