"""OpenID Connect sign-in for the review service: authorization code flow with PKCE (S256).

The relying party side, written over httpx and joserfc (JOSE by the Authlib author): discovery
(`{issuer}/.well-known/openid-configuration`), the authorization request (state, nonce, PKCE
challenge), the code exchange at the token endpoint (client_secret_basic), and the ID token's
validation (signature against the provider's JWKS, `iss`, `aud`, `exp`, `iat`, `nonce`). The
reviewer's role comes from the provider's claims (`role_claim`, e.g. `roles` or `groups`); an
account with no reviewer role is refused. Nothing of the tokens is kept: the session cookie
holds the identity the ID token asserted (`radalign.review.session`).

In dev and CI the stack starts a real provider (npm `oidc-provider`, `radalign.stack.idp`).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from schemas.events import ReviewRole


class OidcError(Exception):
    """The sign-in failed (state mismatch, refused code, invalid ID token, no reviewer role)."""


@dataclass(frozen=True)
class OidcSettings:
    issuer: str
    client_id: str
    client_secret: str
    redirect_uri: str
    scope: str = "openid profile roles"
    role_claim: str = "roles"
    attending_roles: tuple[str, ...] = ("attending", "radiologist")
    resident_roles: tuple[str, ...] = ("resident",)


@dataclass(frozen=True)
class LoginState:
    """What the callback needs to finish the sign-in (kept in a short-lived sealed cookie)."""

    state: str
    nonce: str
    verifier: str


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge), RFC 7636."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def role_from_claims(claims: Mapping[str, Any], settings: OidcSettings) -> ReviewRole | None:
    """The reviewer role the provider's claims grant (attending wins over resident); None: no role."""
    value = claims.get(settings.role_claim, [])
    roles: Iterable[str] = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    names = {str(r).lower() for r in roles}
    if names & {r.lower() for r in settings.attending_roles}:
        return ReviewRole.RADIOLOGIST
    if names & {r.lower() for r in settings.resident_roles}:
        return ReviewRole.RESIDENT
    return None


def identity_from_claims(claims: Mapping[str, Any], issuer: str) -> dict[str, str]:
    """The signer as the provider names them: display name, family/given names, `sub` and its issuer."""
    given, family = str(claims.get("given_name", "")), str(claims.get("family_name", ""))
    name = str(claims.get("name", "")) or " ".join(p for p in (given, family) if p) or str(claims.get("preferred_username", ""))
    return {
        "name": name or str(claims["sub"]), "family_name": family, "given_name": given,
        "identifier": str(claims["sub"]), "identifier_system": issuer,
    }


def oidc_settings(settings: Any, port: int) -> OidcSettings | None:
    """From `radalign.config.Settings` (None when no issuer is configured)."""
    if not settings.review_oidc_issuer:
        return None
    base = (settings.review_public_url or f"http://127.0.0.1:{port}").rstrip("/")

    def names(csv: str) -> tuple[str, ...]:
        return tuple(n.strip() for n in csv.split(",") if n.strip())

    return OidcSettings(
        issuer=settings.review_oidc_issuer, client_id=settings.review_oidc_client_id,
        client_secret=settings.review_oidc_client_secret.get_secret_value(), redirect_uri=f"{base}/auth/callback",
        scope=settings.review_oidc_scope, role_claim=settings.review_oidc_role_claim,
        attending_roles=names(settings.review_oidc_attending_roles), resident_roles=names(settings.review_oidc_resident_roles),
    )


class OidcClient:
    def __init__(self, settings: OidcSettings, client: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self.client = client or httpx.AsyncClient(timeout=10)
        self._metadata: dict[str, Any] | None = None
        self._jwks: KeySet | None = None

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            url = f"{self.settings.issuer.rstrip('/')}/.well-known/openid-configuration"
            response = await self.client.get(url)
            response.raise_for_status()
            data = response.json()
            if data.get("issuer") != self.settings.issuer:
                raise OidcError(f"the provider names itself {data.get('issuer')!r}, not {self.settings.issuer!r}")
            self._metadata = data
        return self._metadata

    async def authorization_url(self) -> tuple[str, LoginState]:
        meta = await self.metadata()
        verifier, challenge = pkce_pair()
        login = LoginState(state=secrets.token_urlsafe(24), nonce=secrets.token_urlsafe(24), verifier=verifier)
        query = {
            "response_type": "code", "client_id": self.settings.client_id, "redirect_uri": self.settings.redirect_uri,
            "scope": self.settings.scope, "state": login.state, "nonce": login.nonce,
            "code_challenge": challenge, "code_challenge_method": "S256",
        }
        return f"{meta['authorization_endpoint']}?{urlencode(query)}", login

    async def _keys(self, refresh: bool = False) -> KeySet:
        if self._jwks is None or refresh:
            response = await self.client.get((await self.metadata())["jwks_uri"])
            response.raise_for_status()
            self._jwks = KeySet.import_key_set(response.json())
        return self._jwks

    async def finish(self, *, code: str, state: str, login: LoginState) -> dict[str, Any]:
        """Exchange the code and return the validated ID token's claims."""
        if not secrets.compare_digest(state, login.state):
            raise OidcError("the sign-in answer does not belong to this browser's sign-in (state mismatch)")
        meta = await self.metadata()
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": self.settings.redirect_uri, "code_verifier": login.verifier}
        response = await self.client.post(meta["token_endpoint"], data=form, auth=(self.settings.client_id, self.settings.client_secret))
        if response.status_code != 200:
            raise OidcError(f"the token endpoint refused the code (HTTP {response.status_code})")
        id_token = response.json().get("id_token")
        if not id_token:
            raise OidcError("the token endpoint answered without an ID token")
        return await self.validate_id_token(id_token, nonce=login.nonce)

    async def validate_id_token(self, id_token: str, *, nonce: str) -> dict[str, Any]:
        try:
            token = jwt.decode(id_token, await self._keys(), algorithms=["RS256", "ES256", "PS256", "EdDSA"])
        except JoseError:
            try:  # the provider may have rotated its keys
                token = jwt.decode(id_token, await self._keys(refresh=True), algorithms=["RS256", "ES256", "PS256", "EdDSA"])
            except JoseError as exc:
                raise OidcError(f"the ID token's signature does not verify ({type(exc).__name__})") from None
        claims = dict(token.claims)
        registry = jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": self.settings.issuer}, sub={"essential": True}, exp={"essential": True},
            iat={"essential": True}, nonce={"essential": True, "value": nonce}, leeway=60,
        )
        try:
            registry.validate(claims)
        except JoseError as exc:
            raise OidcError(f"the ID token is not valid for this sign-in ({type(exc).__name__}: {exc})") from None
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if self.settings.client_id not in audiences:
            raise OidcError("the ID token was issued to another client")
        return claims

    async def logout_url(self, post_logout_redirect_uri: str = "") -> str | None:
        end = (await self.metadata()).get("end_session_endpoint")
        if not end:
            return None
        query = {"client_id": self.settings.client_id}
        if post_logout_redirect_uri:
            query["post_logout_redirect_uri"] = post_logout_redirect_uri
        return f"{end}?{urlencode(query)}"

    async def close(self) -> None:
        await self.client.aclose()
