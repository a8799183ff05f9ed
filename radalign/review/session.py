"""The review session cookie: sealed (encrypted and authenticated, JWE `dir` + A256GCM with
joserfc), holding who the reviewer is (as the identity provider names them), their role, a CSRF
token and two clocks; never an access token, an ID token or a shared secret.

A session ends after `idle_s` without a request (the cookie is re-sealed with a fresh `seen` on
use) and `max_s` after sign-in in any case; a cookie that fails to decrypt, was sealed with
another key or is past either limit is treated as no session.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from joserfc import jwe
from joserfc.errors import JoseError
from joserfc.jwk import OctKey

_HEADER = {"alg": "dir", "enc": "A256GCM"}


def session_key(secret: str, purpose: str = "radalign-review-session") -> OctKey:
    """A 256-bit key derived (HKDF-SHA256) from the configured secret, one per purpose."""
    if not secret:
        raise ValueError("the review session needs a secret (RADALIGN_REVIEW_SESSION_SECRET or RADALIGN_DEID_SECRET)")
    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(secret.encode())
    return OctKey.import_key(raw)


def new_csrf() -> str:
    return secrets.token_urlsafe(24)


def csrf_matches(session: dict[str, Any] | None, sent: str) -> bool:
    expected = str((session or {}).get("csrf", ""))
    return bool(expected) and hmac.compare_digest(expected.encode(), sent.encode())


class SessionCodec:
    def __init__(self, secret: str, *, idle_s: float = 1800, max_s: float = 12 * 3600, purpose: str = "radalign-review-session") -> None:
        self.key = session_key(secret, purpose)
        self.idle_s = idle_s
        self.max_s = max_s

    def seal(self, data: dict[str, Any], *, now: float | None = None) -> str:
        now = time.time() if now is None else now
        body = {"iat": now, **data, "seen": now}
        return jwe.encrypt_compact(_HEADER, json.dumps(body, separators=(",", ":")), self.key, algorithms=["dir", "A256GCM"])

    def open(self, value: str | None, *, now: float | None = None) -> dict[str, Any] | None:
        if not value:
            return None
        now = time.time() if now is None else now
        try:
            plaintext = jwe.decrypt_compact(value, self.key, algorithms=["dir", "A256GCM"]).plaintext
            data = json.loads(plaintext or b"{}")
        except (JoseError, ValueError, TypeError):
            return None
        if not isinstance(data, dict):
            return None
        iat, seen = float(data.get("iat", 0)), float(data.get("seen", 0))
        if now - iat > self.max_s or now - seen > self.idle_s or seen > now + 60:
            return None
        return data

    def fingerprint(self) -> str:
        """A short digest of the key (tests and logs: which key sealed a cookie), never the key."""
        return hashlib.sha256(self.key.raw_value).hexdigest()[:8]
