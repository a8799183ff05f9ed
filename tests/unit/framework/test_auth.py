from __future__ import annotations

from radalign.framework.auth import bearer_authorized, parse_tokens


def test_bearer_tokens() -> None:
    tokens = parse_tokens(" tok-1, tok-2 ,")
    assert tokens == {"tok-1", "tok-2"}
    assert bearer_authorized("Bearer tok-2", tokens)
    assert bearer_authorized("bearer tok-1", tokens)
    assert not bearer_authorized("Bearer tok-3", tokens)
    assert not bearer_authorized("Basic tok-1", tokens)
    assert not bearer_authorized(None, tokens)
    assert bearer_authorized(None, parse_tokens("")), "no tokens configured: auth is off (dev only)"
