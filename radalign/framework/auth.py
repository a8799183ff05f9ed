"""Bearer-token checks shared by the HTTP APIs (gateway intake, the drafting service's read API)."""

from __future__ import annotations

import hmac

from radalign.config import csv_list


def parse_tokens(csv: str) -> frozenset[str]:
    """`RADALIGN_GATEWAY_TOKENS` / `RADALIGN_READ_TOKENS`: comma-separated (`csv_list`); no entry means no
    auth (dev only: production refuses to start without one)."""
    return frozenset(csv_list(csv))


def bearer_authorized(authorization: str | None, tokens: frozenset[str]) -> bool:
    """True when auth is off or the header carries one of the tokens."""
    if not tokens:
        return True
    scheme, _, token = (authorization or "").partition(" ")
    # compare_digest against each token: no timing hint about which prefix matched.
    return scheme.lower() == "bearer" and any(hmac.compare_digest(token.strip().encode(), t.encode()) for t in tokens)
