"""OpenID Connect sign-in: authorization code flow with PKCE, through Authlib.

https://openid.net/specs/openid-connect-core-1_0.html §3.1. The provider's metadata comes from
``<OIDC_ISSUER>/.well-known/openid-configuration`` and must name the same issuer (§4.3 of
OpenID Connect Discovery). Each sign-in keeps its state, nonce and PKCE verifier in Redis
(``assistant:oidc:<sha256 of state>``, 10 minutes, used once) and the state in a cookie of the
browser that started it, so a callback from another browser, a replayed or a forged one fails.
The ID token is checked like Authlib's own client does (``AsyncOpenIDMixin.parse_id_token``):
signature with the provider's keys, then issuer, audience, expiry, nonce, azp and at_hash.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ClaimError,
    ExpiredTokenError,
    InvalidKeyIdError,
    JoseError,
    MissingClaimError,
)
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry

from assistant import keys
from assistant.identity.credentials import sha256_hex
from assistant.settings import Settings

STATE_TTL_SECONDS = 600
METADATA_TTL_SECONDS = 3600
LEEWAY_SECONDS = 60
HTTP_TIMEOUT_SECONDS = 10.0


class SignInFailed(Exception):
    """The sign-in cannot finish; ``message`` is what the person is told (nothing is created)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Identity:
    """What a valid ID token says about the person."""

    issuer: str
    subject: str
    claims: dict[str, Any]
    groups: list[str]


def state_key(state: str) -> str:
    return keys.oidc_state(sha256_hex(state))


def validate_id_token(id_token: str, jwks: dict[str, Any], *, issuer: str, client_id: str,
                      nonce: str, access_token: str | None = None,
                      algorithms: list[str] | None = None, now: float | None = None
                      ) -> dict[str, Any]:
    """The token's claims if it is signed by the provider and meant for this sign-in."""
    try:
        token = jwt.decode(id_token, KeySet.import_key_set(jwks),  # type: ignore[arg-type]
                           registry=JWSRegistry(algorithms=algorithms or ["RS256"],
                                                strict_check_header=False))
        params: dict[str, Any] = {"nonce": nonce, "client_id": client_id}
        if access_token:
            params["access_token"] = access_token
        options: dict[str, Any] = {"iss": {"essential": True, "value": issuer},
                                   "aud": {"essential": True, "value": client_id},
                                   "nonce": {"essential": True}}
        claims = CodeIDToken(token.claims, token.header, options, params)
        claims.validate(now=int(now if now is not None else time.time()),
                        leeway=LEEWAY_SECONDS)
    except (JoseError, ValueError) as exc:
        raise SignInFailed(f"the identity provider's answer is not valid for this sign-in "
                           f"({describe(exc)})") from exc
    return dict(claims)


CLAIM_PROBLEMS = {"iss": "wrong issuer", "aud": "wrong audience", "nonce": "wrong nonce",
                  "exp": "expired", "nbf": "not valid yet", "iat": "issued in the future",
                  "azp": "issued to another client", "at_hash": "does not match its "
                  "access token"}


def describe(exc: Exception) -> str:
    """A short reason a person can pass on to their admin."""
    if isinstance(exc, ExpiredTokenError):
        return "expired"
    if isinstance(exc, MissingClaimError):
        return f"no {exc.claim} claim"
    if isinstance(exc, ClaimError):
        return CLAIM_PROBLEMS.get(exc.claim, f"bad {exc.claim} claim")
    if isinstance(exc, BadSignatureError):
        return "bad signature"
    return (str(exc) or type(exc).__name__)[:200]


@dataclass
class OidcClient:
    """One provider, as the settings name it; metadata and keys are cached for an hour."""

    settings: Settings
    _metadata: dict[str, Any] = field(default_factory=dict)
    _jwks: dict[str, Any] = field(default_factory=dict)
    _fetched_at: float = 0.0

    @property
    def issuer(self) -> str:
        return (self.settings.oidc_issuer or "").rstrip("/")

    def _client(self, redirect_uri: str) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self.settings.oidc_client_id,
            client_secret=self.settings.oidc_client_secret.get_secret_value() or None,
            scope=self.settings.oidc_scopes, redirect_uri=redirect_uri,
            code_challenge_method="S256", timeout=HTTP_TIMEOUT_SECONDS)

    async def metadata(self) -> dict[str, Any]:
        if self._metadata and time.monotonic() - self._fetched_at < METADATA_TTL_SECONDS:
            return self._metadata
        url = f"{self.issuer}/.well-known/openid-configuration"
        try:
            async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_SECONDS) as http:
                response = await http.get(url)
                response.raise_for_status()
                metadata: dict[str, Any] = response.json()
                keys = await http.get(metadata["jwks_uri"])
                keys.raise_for_status()
                jwks: dict[str, Any] = keys.json()
        except Exception as exc:  # noqa: BLE001 - any failure: the provider is unreachable
            raise SignInFailed(f"the identity provider at {self.issuer} cannot be reached or "
                               f"answered badly ({type(exc).__name__})") from exc
        if str(metadata.get("issuer", "")).rstrip("/") != self.issuer:
            raise SignInFailed("the identity provider calls itself "
                               f"{metadata.get('issuer')!r}, not OIDC_ISSUER {self.issuer!r}")
        self._metadata, self._jwks, self._fetched_at = metadata, jwks, time.monotonic()
        return self._metadata

    async def start(self, client: redis.Redis, redirect_uri: str, next_path: str
                    ) -> tuple[str, str]:
        """(the provider's authorization URL, the state for the browser's cookie)."""
        metadata = await self.metadata()
        state, nonce, verifier = generate_token(32), generate_token(32), generate_token(48)
        async with self._client(redirect_uri) as http:
            url, _ = http.create_authorization_url(metadata["authorization_endpoint"],
                                                   state=state, code_verifier=verifier,
                                                   nonce=nonce)
        record = {"nonce": nonce, "verifier": verifier, "next": next_path,
                  "redirect_uri": redirect_uri}
        client.set(state_key(state), json.dumps(record), ex=STATE_TTL_SECONDS)
        return url, state

    @staticmethod
    def take_state(client: redis.Redis, state: str) -> dict[str, Any]:
        """The sign-in this state started, used once."""
        raw = client.getdel(state_key(state))
        if raw is None:
            raise SignInFailed("this sign-in link is unknown, used already or expired")
        record: dict[str, Any] = json.loads(raw)
        return record

    async def finish(self, code: str, record: dict[str, Any]) -> Identity:
        """Trade the code for tokens (with the PKCE verifier) and check the ID token."""
        metadata = await self.metadata()
        try:
            async with self._client(record["redirect_uri"]) as http:
                token = await http.fetch_token(metadata["token_endpoint"], code=code,
                                               code_verifier=record["verifier"],
                                               grant_type="authorization_code")
        except Exception as exc:  # noqa: BLE001 - a refused code, an unreachable provider
            raise SignInFailed(f"the identity provider refused the sign-in code ({exc})"
                               [:300]) from exc
        if "id_token" not in token:
            raise SignInFailed("the identity provider sent no ID token (is 'openid' in "
                               "OIDC_SCOPES?)")
        def check() -> dict[str, Any]:
            return validate_id_token(
                token["id_token"], self._jwks, issuer=self.issuer,
                client_id=self.settings.oidc_client_id, nonce=record["nonce"],
                access_token=token.get("access_token"),
                algorithms=metadata.get("id_token_signing_alg_values_supported") or None)

        try:
            claims = check()
        except SignInFailed as exc:
            if not isinstance(exc.__cause__, InvalidKeyIdError):
                raise
            # The provider rotated its keys since we cached them: fetch them once more.
            self._fetched_at = 0.0
            await self.metadata()
            claims = check()
        groups = claims.get(self.settings.oidc_groups_claim) or []
        if isinstance(groups, str):
            groups = [groups]
        return Identity(self.issuer, str(claims["sub"]), claims,
                        [str(group) for group in groups if isinstance(group, str | int)])
