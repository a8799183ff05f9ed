"""Bearer-token checks shared by the HTTP APIs (gateway intake, the drafting service's read API)."""

from __future__ import annotations

import hmac


def parse_tokens(csv: str) -> frozenset[str]:
    """`RADALIGN_GATEWAY_TOKENS`: comma-separated; empty means no auth (dev only)."""
    return frozenset(t.strip() for t in csv.split(",") if t.strip())


def bearer_authorized(authorization: str | None, tokens: frozenset[str]) -> bool:
    """True when auth is off or the header carries one of the tokens."""
    if not tokens:
        return True
    scheme, _, token = (authorization or "").partition(" ")
    # compare_digest against each token: no timing hint about which prefix matched.
    return scheme.lower() == "bearer" and any(hmac.compare_digest(token.strip().encode(), t.encode()) for t in tokens)
