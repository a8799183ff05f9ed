"""The pure parts of OpenID Connect sign-in (radalign/review/oidc.py) and the dev provider's place
in the stack; the whole flow against a real provider: tests/integration/test_review_oidc.py."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from radalign.config import Settings
from radalign.review.oidc import OidcSettings, identity_from_claims, oidc_settings, pkce_pair, role_from_claims
from radalign.stack import idp, manager
from radalign.testing.stack import stack_settings
from schemas.events import ReviewRole

OIDC = OidcSettings(issuer="https://idp.example", client_id="rv", client_secret="s", redirect_uri="https://rv.example/auth/callback")


def test_roles_come_from_the_claims_attending_first_and_none_without_one():
    assert role_from_claims({"roles": ["resident"]}, OIDC) == ReviewRole.RESIDENT
    assert role_from_claims({"roles": ["Resident", "Attending"]}, OIDC) == ReviewRole.RADIOLOGIST
    assert role_from_claims({"roles": "radiologist"}, OIDC) == ReviewRole.RADIOLOGIST
    assert role_from_claims({"roles": ["scheduling"]}, OIDC) is None and role_from_claims({}, OIDC) is None
    groups = OidcSettings(**{**OIDC.__dict__, "role_claim": "groups", "attending_roles": ("rad-staff",)})
    assert role_from_claims({"groups": ["rad-staff"], "roles": ["resident"]}, groups) == ReviewRole.RADIOLOGIST


def test_the_signer_is_named_by_the_provider_with_its_subject_and_issuer():
    who = identity_from_claims({"sub": "u-17", "given_name": "Ann", "family_name": "Attending"}, "https://idp.example")
    assert who == {"name": "Ann Attending", "family_name": "Attending", "given_name": "Ann", "identifier": "u-17",
                   "identifier_system": "https://idp.example"}
    assert identity_from_claims({"sub": "u-18"}, "https://idp.example")["name"] == "u-18"


def test_pkce_s256_and_settings():
    verifier, challenge = pkce_pair()
    assert 43 <= len(verifier) <= 128
    assert challenge == base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    assert oidc_settings(Settings(), 18106) is None
    configured = oidc_settings(Settings(review_oidc_issuer="https://idp.example", review_oidc_resident_roles="res, fellow"), 18106)
    assert configured.redirect_uri == "http://127.0.0.1:18106/auth/callback" and configured.resident_roles == ("res", "fellow")


def test_the_stack_starts_the_dev_provider_only_when_the_review_service_signs_in_with_it(tmp_path: Path):
    settings = stack_settings(tmp_path)
    (row,) = manager.up(settings, ["idp"])
    assert (row.name, row.pid) == ("idp", None) and row.detail in ("not configured: skipped", "not installed: skipped")
    assert idp.wanted(settings.model_copy(update={"review_oidc_issuer": idp.issuer(settings)}))
    (client,) = idp.dev_clients(settings)
    assert client["redirect_uris"] == [f"http://127.0.0.1:{settings.web_port('review')}/auth/callback"]
    assert set(idp.DEV_USERS["resident"]["roles"]) == {"resident"}
