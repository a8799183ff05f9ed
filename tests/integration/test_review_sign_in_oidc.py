"""Review sign-in against a real OpenID Connect provider (npm `oidc-provider` under node, as the
stack starts it in dev/CI): authorization code + PKCE, roles from the IdP's claims, a sealed
session cookie holding no token, CSRF on sign-off and logout, the audit trail. The review app
runs in-process over the unit tests' in-memory store; the browser is httpx following the
provider's own (development) login and consent forms."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest
from aiohttp import web

from radalign.config import Settings
from radalign.review.core import ReviewCore
from radalign.review.oidc import OidcClient, oidc_settings
from radalign.review.signers import StaticSigners
from radalign.stack import idp
from radalign.testing.stack import free_port
from services.review.app import SESSION_COOKIE, build_review_app, session_codec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "review"))
from review_helpers import drafted  # after the helpers folder is on sys.path
from test_review_app import MemoryStore, Publisher

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
KEY = "st-routine0000001"


@pytest.fixture(scope="module")
def provider(tmp_path_factory) -> Iterator[tuple[Settings, int]]:
    if not idp.installed():
        pytest.skip("node and npm are not installed (the dev identity provider runs on node 20+)")
    from radalign.pipeline import stage_spec
    from radalign.stack import manager

    state = tmp_path_factory.mktemp("idp")
    review_port, idp_port = free_port(), free_port()
    settings = Settings(
        state_dir=state, idp_port=idp_port, deid_secret="oidc-it-secret", gateway_tokens="api-token",
        review_oidc_issuer=f"http://127.0.0.1:{idp_port}", review_oidc_client_secret="it-client-secret",  # type: ignore[arg-type]
        web_port_offset=review_port - stage_spec("review").web_port,
    )
    assert settings.web_port("review") == review_port
    # the stack starts the provider because the review service is set to sign in with it
    (row,) = manager.up(settings, ["idp"])
    assert row.detail == "started" and row.address == f"issuer {settings.review_oidc_issuer}"
    try:
        yield settings, review_port
    finally:
        assert "idp" in manager.down(settings)


async def _follow(client: httpx.AsyncClient, response: httpx.Response) -> httpx.Response:
    while response.status_code in (302, 303):
        response = await client.get(urljoin(str(response.url), response.headers["Location"]))
    return response


async def _sign_in(client: httpx.AsyncClient, review: str, login: str) -> httpx.Response:
    """Open a study, get sent to the IdP, log in there (dev login screen), consent, come back."""
    page = await _follow(client, await client.get(f"{review}/studies/{KEY}", headers={"Accept": "text/html"}))
    for _ in range(4):  # the provider's login, then its consent screen
        if str(page.url).startswith(review):
            if refresh := re.search(r'http-equiv="refresh" content="0;url=([^"]+)"', page.text):  # as a browser does
                page = await _follow(client, await client.get(urljoin(str(page.url), refresh.group(1)), headers={"Accept": "text/html"}))
            return page
        action = re.search(r'<form[^>]*action="([^"]+)"', page.text)
        assert action, page.text[:500]
        fields = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', page.text))
        if 'name="login"' in page.text:
            fields |= {"login": login, "password": "any"}
        page = await _follow(client, await client.post(urljoin(str(page.url), action.group(1)), data=fields))
    raise AssertionError("the sign-in did not come back to the review service")


async def test_oidc_sign_in_roles_csrf_audit_and_logout(provider):
    settings, port = provider
    store = MemoryStore([drafted(KEY)], None)
    core = ReviewCore(settings, store, None, Publisher(), signers=StaticSigners())  # type: ignore[arg-type]
    oidc = OidcClient(oidc_settings(settings, port))  # type: ignore[arg-type]
    runner = web.AppRunner(build_review_app(core, settings, oidc=oidc))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    review = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=30) as browser:
            # the IdP's attending signs in: PKCE code flow, back to the study with a session
            page = await _sign_in(browser, review, "attending")
            assert page.status_code == 200 and "Sign as Ann Attending (radiologist)" in page.text, page.text[:300]
            cookie = browser.cookies.get(SESSION_COOKIE)
            session = session_codec(settings).open(cookie)
            assert session["identifier"] == "attending" and session["identifier_system"] == settings.review_oidc_issuer
            assert session["role"] == "radiologist" and session["via"] == "oidc"
            assert "api-token" not in str(session) and "it-client-secret" not in str(session) and "eyJ" not in str(session)
            # sign-off needs the page's CSRF token
            draft = store.drafts[KEY]
            form = {"findings": draft.findings, "impression": draft.impression, "report_id": draft.report_id}
            refused = await browser.post(f"{review}/studies/{KEY}/sign", data=form, headers={"Accept": "application/json"})
            assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
            signed = await browser.post(f"{review}/studies/{KEY}/sign", data=form | {"csrf": csrf}, headers={"Accept": "application/json"})
            assert signed.status_code == 201 and signed.json()["status"] == "final"
            final = next(iter(store.signed.values()))[0]
            signer = await core.signers.lookup(final.signer_key)
            assert (signer.display_name, signer.identifier, signer.identifier_system) == ("Ann Attending", "attending", settings.review_oidc_issuer)
            assert (signer.family, signer.given) == ("Attending", "Ann")
            actions = [(a[0], a[1], a[4]) for a in store.audits]
            assert actions == [("login", None, "oidc"), ("opened", KEY, "oidc"), ("signed", KEY, "oidc")]
            assert store.audits[-1][2] == final.signer_key and store.audits[-1][5]["status"] == "final"
            # logout needs the CSRF token too; then the session is gone and the IdP ends its session
            assert (await browser.post(f"{review}/logout")).status_code == 403
            out = await browser.post(f"{review}/logout", data={"csrf": csrf})
            assert out.status_code == 303 and out.headers["Location"].startswith(f"{settings.review_oidc_issuer}/session/end")
            assert browser.cookies.get(SESSION_COOKIE) is None
        async with httpx.AsyncClient(timeout=30) as browser:
            # an account without a reviewer role is refused; a resident's role comes from the claims too
            page = await _sign_in(browser, review, "clerk")
            assert page.status_code == 403 and "no reviewer role" in page.text
        async with httpx.AsyncClient(timeout=30) as browser:
            page = await _sign_in(browser, review, "resident")
            assert "Sign as Rex Resident (resident)" in page.text
            # the form login is off when the IdP is configured
            assert (await browser.post(f"{review}/login", data={"name": "Mallory", "role": "radiologist", "token": "api-token"})).status_code == 404
    finally:
        await runner.cleanup()
        await oidc.close()
