"""Access tokens for outgoing HTTP (FHIR, DICOMweb): a static bearer token, or the OAuth 2.0
client credentials grant with the token cached until shortly before it expires.

httpx has no OAuth client; Authlib would add a dependency for one POST and a cache, so the grant
(RFC 6749 4.4: form POST, JSON answer with access_token and expires_in) is written here.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from radalign.delivery.destinations import Auth, BearerAuth, ClientCredentialsAuth
from radalign.framework.retry import PermanentError

#: Renew this long before the token's announced expiry.
EXPIRY_MARGIN_S = 30.0


class TokenProvider:
    def __init__(self, auth: Auth | None, client: httpx.AsyncClient) -> None:
        self.auth = auth
        self.client = client
        self._token = ""
        self._expires = 0.0
        self._lock = asyncio.Lock()

    def invalidate(self) -> None:
        """After a 401: the next request fetches a new token."""
        self._expires = 0.0

    async def headers(self) -> dict[str, str]:
        if self.auth is None:
            return {}
        if isinstance(self.auth, BearerAuth):
            return {"Authorization": f"Bearer {self.auth.token()}"}
        return {"Authorization": f"Bearer {await self._client_credentials(self.auth)}"}

    async def _client_credentials(self, auth: ClientCredentialsAuth) -> str:
        async with self._lock:
            if self._token and time.monotonic() < self._expires:
                return self._token
            form = {"grant_type": "client_credentials"}
            if auth.scope:
                form["scope"] = auth.scope
            response = await self.client.post(str(auth.token_url), data=form, auth=(auth.client_id, auth.client_secret()))
            if response.status_code in (400, 401, 403):
                raise PermanentError(f"token endpoint refused the client credentials (HTTP {response.status_code})", "refused")
            response.raise_for_status()
            body = response.json()
            self._token = str(body["access_token"])
            self._expires = time.monotonic() + max(0.0, float(body.get("expires_in", 300)) - EXPIRY_MARGIN_S)
            return self._token
