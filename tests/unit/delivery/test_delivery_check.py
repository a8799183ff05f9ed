"""`radalign delivery check`: a probe per destination against real local servers (a pynetdicom
Verification SCP, an HTTP server for FHIR /metadata and the OAuth token endpoint, a TCP socket)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from typer.testing import CliRunner

from radalign.delivery.check import check_all, delivery_app
from radalign.delivery.destinations import load_config

#: answers of the fake HTTP server, by path
CAPABILITY = {"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1", "status": "active", "kind": "instance"}  # R4: the default


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, code: int, body: dict | None = None) -> None:
        data = json.dumps(body or {}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # http.server's name
        self.server.seen.append(("GET", self.path, self.headers.get("Authorization")))  # type: ignore[attr-defined]
        if self.path.startswith("/fhir/metadata"):
            self._send(200, CAPABILITY)
        elif self.path.startswith("/secured/metadata"):
            ok = self.headers.get("Authorization") == "Bearer tok-1"
            self._send(200 if ok else 401, CAPABILITY if ok else None)
        elif self.path.startswith("/r5/metadata"):
            self._send(200, CAPABILITY | {"fhirVersion": "5.0.0"})
        elif self.path.startswith("/dicomweb/studies"):
            self._send(200, {})
        else:
            self._send(404)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        form = self.rfile.read(length).decode()
        self.server.seen.append(("POST", self.path, form))  # type: ignore[attr-defined]
        if self.path == "/token" and "grant_type=client_credentials" in form:
            self._send(200, {"access_token": "tok-1", "expires_in": 300, "token_type": "Bearer"})
        else:
            self._send(401)


@pytest.fixture(scope="module")
def http_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def echo_scp() -> Iterator[int]:
    ae = AE(ae_title="PACS")
    ae.add_supported_context(Verification)
    ae.require_called_aet = True
    server = ae.start_server(("127.0.0.1", 0), block=False)
    yield server.server_address[1]
    server.shutdown()


@pytest.fixture(scope="module")
def mllp_listener() -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield sock.getsockname()[1]
    sock.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(http: str, scp: int, mllp: int, **extra: dict) -> str:
    destinations = [
        {"name": "pacs", "kind": "dicom", "ae_title": "PACS", "host": "127.0.0.1", "port": scp},
        {"name": "ehr", "kind": "fhir", "base_url": f"{http}/fhir"},
        {
            "name": "ehr-oauth", "kind": "fhir", "base_url": f"{http}/secured",
            "auth": {"type": "oauth2-client-credentials", "token_url": f"{http}/token", "client_id": "radalign",
                     "client_secret_env": "CHECK_TEST_SECRET", "scope": "system/*.write"},
        },
        {"name": "dicomweb", "kind": "stow", "url": f"{http}/dicomweb"},
        {"name": "ris", "kind": "hl7", "host": "127.0.0.1", "port": mllp},
        *extra.values(),
    ]
    return json.dumps({"destinations": destinations})


async def test_every_destination_reachable(http_server, echo_scp, mllp_listener, monkeypatch):
    monkeypatch.setenv("CHECK_TEST_SECRET", "s3cret")
    results = await check_all(load_config(_config(http_server, echo_scp, mllp_listener)), timeout_s=5)
    assert [r.name for r in results] == ["pacs", "ehr", "ehr-oauth", "dicomweb", "ris"]
    assert all(r.ok for r in results), [r.line() for r in results]
    by_name = {r.name: r for r in results}
    assert "C-ECHO" in by_name["pacs"].detail
    assert "OAuth token fetched" in by_name["ehr-oauth"].detail and "FHIR 4.0.1" in by_name["ehr-oauth"].detail


async def test_failures_name_their_cause(http_server, echo_scp, monkeypatch):
    monkeypatch.setenv("CHECK_TEST_SECRET", "s3cret")
    closed = _free_port()
    doc = json.dumps({"destinations": [
        {"name": "wrong-ae", "kind": "dicom", "ae_title": "NOTPACS", "host": "127.0.0.1", "port": echo_scp},
        {"name": "no-pacs", "kind": "dicom", "ae_title": "PACS", "host": "127.0.0.1", "port": closed},
        {"name": "r5-server", "kind": "fhir", "base_url": f"{http_server}/r5"},  # the destination expects R4 (the default)
        {"name": "no-fhir", "kind": "fhir", "base_url": f"{http_server}/nothing"},
        {"name": "bad-client", "kind": "fhir", "base_url": f"{http_server}/secured",
         "auth": {"type": "oauth2-client-credentials", "token_url": f"{http_server}/wrong-token", "client_id": "x",
                  "client_secret_env": "CHECK_TEST_SECRET"}},
        {"name": "no-secret", "kind": "fhir", "base_url": f"{http_server}/secured",
         "auth": {"type": "oauth2-client-credentials", "token_url": f"{http_server}/token", "client_id": "x",
                  "client_secret_env": "CHECK_TEST_UNSET_SECRET"}},
        {"name": "no-ris", "kind": "hl7", "host": "127.0.0.1", "port": closed},
    ]})
    results = {r.name: r for r in await check_all(load_config(doc), timeout_s=3)}
    assert not any(r.ok for r in results.values()), [r.line() for r in results.values()]
    assert "rejected" in results["wrong-ae"].detail and "NOTPACS" in results["wrong-ae"].detail
    assert "no association" in results["no-pacs"].detail
    assert "5.0.0" in results["r5-server"].detail and "R4" in results["r5-server"].detail
    assert "HTTP 404" in results["no-fhir"].detail
    assert "token" in results["bad-client"].detail and "401" in results["bad-client"].detail
    assert "CHECK_TEST_UNSET_SECRET" in results["no-secret"].detail
    assert "TCP connect failed" in results["no-ris"].detail


def test_cli_prints_a_line_per_destination_and_exits_1_on_a_failure(http_server, echo_scp, mllp_listener, monkeypatch):
    monkeypatch.setenv("CHECK_TEST_SECRET", "s3cret")
    runner = CliRunner()
    good = _config(http_server, echo_scp, mllp_listener)
    out = runner.invoke(delivery_app, ["check", "--destinations", good, "--timeout", "5"])
    assert out.exit_code == 0, out.output
    lines = out.output.strip().splitlines()
    assert len(lines) == 5 and all(": OK: " in line for line in lines)

    bad = _config(http_server, echo_scp, _free_port())
    out = runner.invoke(delivery_app, ["check", "--destinations", bad, "--timeout", "3"])
    assert out.exit_code == 1
    assert "ris (hl7, 127.0.0.1:" in out.output and "FAIL" in out.output


def test_cli_without_destinations_and_with_an_invalid_document(monkeypatch):
    runner = CliRunner()
    out = runner.invoke(delivery_app, ["check", "--destinations", ""])
    assert out.exit_code == 0 and "no delivery destinations" in out.output
    out = runner.invoke(delivery_app, ["check", "--destinations", '{"destinations": [{"name": "x", "kind": "smtp"}]}'])
    assert out.exit_code == 2
