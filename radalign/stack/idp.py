"""A real OpenID Connect provider for dev and CI: npm `oidc-provider` (a certified OP) under node,
an optional component of the embedded stack (started where node and npm are installed).

`provider.mjs` beside this file configures it: the review service as its one confidential client
(authorization code + PKCE, redirect `http://127.0.0.1:<review port>/auth/callback`), and dev
accounts whose claims carry the reviewer roles (`DEV_USERS`: `attending`, `resident`, and
`clerk` with no reviewer role). Its development login screen accepts any password. Never for
production: point `RADALIGN_REVIEW_OIDC_ISSUER` at the provider's IdP there.

`radalign stack up` starts it when the review service is set to sign in with it
(`RADALIGN_REVIEW_OIDC_ISSUER=http://127.0.0.1:18190`; skipped otherwise). The package is
installed once into `<state_dir>/idp/` (`npm install oidc-provider@9`, a few
seconds from the registry).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import psutil

from radalign.config import Settings
from radalign.stack.process import StatePaths, start_process
from radalign.stack.readiness import StackStartError, tcp_open, wait_until_ready

NAME = "idp"
PACKAGE = "oidc-provider@9"
SCRIPT = Path(__file__).with_name("idp") / "provider.mjs"
#: Dev accounts: the login name at the provider's dev login screen -> the claims it asserts.
DEV_USERS: dict[str, dict[str, Any]] = {
    "attending": {"name": "Ann Attending", "given_name": "Ann", "family_name": "Attending", "roles": ["attending"]},
    "resident": {"name": "Rex Resident", "given_name": "Rex", "family_name": "Resident", "roles": ["resident"]},
    "clerk": {"name": "Cleo Clerk", "given_name": "Cleo", "family_name": "Clerk", "roles": ["scheduling"]},
}
DEV_CLIENT_SECRET = "radalign-dev-review-secret"


def installed() -> bool:
    return shutil.which("node") is not None and shutil.which("npm") is not None


def issuer(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.idp_port}"


def wanted(settings: Settings) -> bool:
    """The stack starts the dev provider when the review service is configured to sign in with it
    (`RADALIGN_REVIEW_OIDC_ISSUER=http://127.0.0.1:<idp_port>`)."""
    return settings.review_oidc_issuer.rstrip("/") == issuer(settings)


def ensure_package(folder: Path, timeout_s: float = 300.0) -> Path:
    """`oidc-provider` in `folder/node_modules` (installed from the npm registry on first use) and
    the provider script beside it; returns the script's path there."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "node_modules" / "oidc-provider" / "package.json").is_file():
        npm = shutil.which("npm")
        if npm is None:
            raise StackStartError("npm is not installed (node 20+ and npm run the dev identity provider)")
        done = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--prefix", str(folder), PACKAGE],
            capture_output=True, text=True, timeout=timeout_s, check=False,
        )
        if done.returncode != 0:
            raise StackStartError(f"npm install {PACKAGE} failed: {done.stderr[-500:]}")
    script = folder / SCRIPT.name
    shutil.copyfile(SCRIPT, script)  # node resolves the package from the script's folder
    return script


def dev_clients(settings: Settings, redirect_uris: list[str] | None = None) -> list[dict[str, Any]]:
    secret = settings.review_oidc_client_secret.get_secret_value() or DEV_CLIENT_SECRET
    review = f"http://127.0.0.1:{settings.web_port('review')}"
    return [{
        "client_id": settings.review_oidc_client_id, "client_secret": secret,
        "redirect_uris": redirect_uris or [f"{review}/auth/callback"], "post_logout_redirect_uris": [f"{review}/login"],
        "grant_types": ["authorization_code"], "response_types": ["code"], "token_endpoint_auth_method": "client_secret_basic",
    }]


def healthy(settings: Settings) -> bool:
    try:
        return httpx.get(f"{issuer(settings)}/.well-known/openid-configuration", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def start_idp(
    settings: Settings, paths: StatePaths, *, clients: list[dict[str, Any]] | None = None, users: dict[str, Any] | None = None,
    timeout_s: float = 30.0,
) -> psutil.Process:
    node = shutil.which("node")
    if node is None:
        raise StackStartError("node is not installed (node 20+ and npm run the dev identity provider)")
    if tcp_open("127.0.0.1", settings.idp_port):
        raise StackStartError(f"port 127.0.0.1:{settings.idp_port} is already taken; is another identity provider running?")
    script = ensure_package(paths.data_dir(NAME))
    env = {
        "RADALIGN_IDP_PORT": str(settings.idp_port),
        "RADALIGN_IDP_CLIENTS": json.dumps(clients or dev_clients(settings)),
        "RADALIGN_IDP_USERS": json.dumps(users or DEV_USERS),
        "RADALIGN_IDP_COOKIE_KEY": settings.deid_secret,
    }
    proc = start_process(paths, NAME, [node, str(script)], env, cwd=script.parent)
    wait_until_ready(f"identity provider on {issuer(settings)}", lambda: healthy(settings), timeout_s=timeout_s,
                     log_file=paths.log_file(NAME), proc=proc)
    return proc
