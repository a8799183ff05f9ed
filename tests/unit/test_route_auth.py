"""The README's route table ("Who may call what") is checked row by row against the real apps:
the gateway's aiohttp app, the Faust web app of every stage the graph declares (the drafting read
API and the review app included), and the DICOM SCP's association policy. A route added without a
row, or a row that does not hold, fails."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from radalign.config import InsecureSettings, Settings
from radalign.framework.faust_app import create_app
from radalign.framework.stage import Stage
from radalign.pipeline import GRAPH
from services.gateway.dicom_scp import DicomScp
from services.gateway.http_app import build_gateway_app

README = Path(__file__).resolve().parents[2] / "README.md"
INGEST, READ = "ingest-token-1", "read-token-1"
TOKENS = {"ingest token": INGEST, "read token": READ}


def route_table() -> list[tuple[str, str, str]]:
    text = README.read_text(encoding="utf-8")
    block = text.split("<!-- route-auth:start -->")[1].split("<!-- route-auth:end -->")[0]
    rows = []
    for line in block.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] not in ("service", "---"):
            rows.append((cells[0], cells[1].strip("`"), cells[2]))
    return rows


def _stages(settings: Settings) -> dict[str, Stage]:
    """One instance of every consuming stage in the graph, found in its adapter module."""
    stages: dict[str, Stage] = {}
    for spec in GRAPH:
        if not spec.consumes:
            continue  # the gateway is the source, checked as its own app
        module = importlib.import_module(spec.adapter)
        [cls] = [c for c in vars(module).values() if inspect.isclass(c) and issubclass(c, Stage) and getattr(c, "name", None) == spec.name]
        make: Any = cls  # a concrete subclass; some take the settings
        stages[spec.name] = make(settings) if inspect.signature(cls).parameters else make()
    return stages


def test_every_consuming_stage_of_the_graph_is_checked(secured: Settings) -> None:
    assert set(_stages(secured)) == {s.name for s in GRAPH if s.consumes} and "review" in _stages(secured)


@pytest.fixture
def secured(settings: Settings) -> Settings:
    return settings.model_copy(update={"gateway_tokens": INGEST, "read_tokens": READ, "dicom_allowed_aes": "PACS1"})


async def _status(client: TestClient, method: str, path: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with client.request(method, path.replace("{study_key}", "st-0123456789abcdef").replace("{index}", "0"), headers=headers, data=b"") as resp:
        return resp.status


async def _check_http(client: TestClient, method: str, path: str, who: str) -> None:
    anonymous = await _status(client, method, path, None)
    if who.startswith("anyone"):
        refused = (401, 403) if "404 without" in who else (401, 403, 404)
        assert anonymous not in refused, (path, anonymous)
    elif who == "review session":  # no bearer token signs: only a signed-in reviewer
        for token in (None, *TOKENS.values()):
            assert await _status(client, method, path, token) == 401, (path, token)
    elif who == "nobody (off)":
        assert anonymous == 404 and await _status(client, method, path, INGEST) == 404, path
    else:
        token = TOKENS[who.removesuffix(" or review session")]
        others = [t for t in TOKENS.values() if t != token]
        assert anonymous == 401, (path, "anonymous", anonymous)
        for other in others:
            assert await _status(client, method, path, other) == 401, (path, "the other token", other)
        assert await _status(client, method, path, token) != 401, (path, who)


def test_the_table_covers_every_http_route(secured: Settings) -> None:
    documented = {(svc, route) for svc, route, _ in route_table()}
    gateway = build_gateway_app(secured, None, None, None)  # type: ignore[arg-type]
    for r in gateway.router.routes():
        if r.method != "HEAD":
            assert ("gateway", f"{r.method} {r.resource.canonical}") in documented, r.resource.canonical
    for name, stage in _stages(secured).items():
        app = create_app(stage, secured)
        app.web.init_server()
        for r in app.web.web_app.router.routes():
            route = f"{r.method} {r.resource.canonical}"
            if r.method == "HEAD" or r.resource.canonical == "/":  # Faust's index: {"status": "OK"} only
                continue
            assert ("every stage", route) in documented or (name, route) in documented, (name, route)


async def test_gateway_routes_match_the_table(secured: Settings, publisher, blobs, pseudonyms) -> None:
    app = build_gateway_app(secured, publisher, blobs, pseudonyms)
    async with TestClient(TestServer(app)) as client:
        for service, route, who in route_table():
            if service == "gateway" and route.split()[0] in ("GET", "POST"):
                method, path = route.split()
                await _check_http(client, method, path, who)


async def test_stage_routes_match_the_table(secured: Settings) -> None:
    for name, stage in _stages(secured).items():
        app = create_app(stage, secured)
        app.web.init_server()
        async with TestClient(TestServer(app.web.web_app)) as client:
            for service, route, who in route_table():
                if service in ("every stage", name):
                    method, path = route.split()
                    await _check_http(client, method, path, who)


async def test_dicom_associations_match_the_table(secured: Settings, publisher, blobs, pseudonyms) -> None:
    from radalign.ingest.gateway import GatewayCore

    [(_, _, who)] = [row for row in route_table() if row[1].startswith("DICOM")]
    assert who == "calling AE in `RADALIGN_DICOM_ALLOWED_AES`"
    scp = DicomScp(secured, GatewayCore(secured, publisher, blobs, pseudonyms), asyncio.get_running_loop())
    scp.start(port=0)
    try:
        def associate(calling: str) -> bool:
            ae = AE(ae_title=calling)
            ae.add_requested_context(Verification)
            assoc = ae.associate("127.0.0.1", scp.port, ae_title=secured.dicom_ae_title)
            ok = assoc.is_established
            if ok:
                assoc.release()
            return ok

        assert await asyncio.to_thread(associate, "PACS1")
        assert not await asyncio.to_thread(associate, "STRANGER")
    finally:
        await asyncio.to_thread(scp.stop)


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"gateway_tokens": ""}, "GATEWAY_TOKENS is empty"),
        ({"read_tokens": ""}, "READ_TOKENS is empty"),
        ({"read_tokens": "shared-token"}, "both an ingest and a read token"),
        ({"dicom_allowed_aes": ""}, "DICOM_ALLOWED_AES is empty"),
        ({"deid_secret": "dev-only-change-me"}, "DEID_SECRET"),
        ({"deid_secret": "short"}, "DEID_SECRET"),
    ],
)
def test_production_refuses_insecure_settings(change: dict, complaint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    good = {"RADALIGN_ENV": "production", "RADALIGN_GATEWAY_TOKENS": "shared-token,other",
            "RADALIGN_READ_TOKENS": "reader-1", "RADALIGN_DICOM_ALLOWED_AES": "PACS1",
            "RADALIGN_DEID_SECRET": "x" * 40}
    for key, value in good.items():
        monkeypatch.setenv(key, value)
    assert Settings().env == "production"  # the good set starts
    for key, value in change.items():
        monkeypatch.setenv(f"RADALIGN_{key.upper()}", value)
    with pytest.raises(Exception, match=re.escape(complaint)) as refused:
        Settings()
    assert isinstance(refused.value.__cause__ or refused.value, (InsecureSettings, ValueError))
