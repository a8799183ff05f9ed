"""`radalign delivery check`: can the delivery stage reach each configured destination?

One probe per destination (RADALIGN_DELIVERY_DESTINATIONS, radalign/delivery/destinations.py), none
of which sends a report:

- dicom: a DICOM C-ECHO (Verification) from the destination's calling AE title;
- fhir:  the OAuth 2.0 token fetch where `auth` is configured, then `GET {base}/metadata` (a
         CapabilityStatement whose fhirVersion matches the destination's R4/R5);
- stow:  the token fetch where configured, then `GET {url}/studies?limit=1` (QIDO-RS) answered
         without 401/403/5xx;
- hl7:   a TCP connect to the MLLP listener.

One line per destination, `OK` or `FAIL` with the reason; exit status 1 when any fails.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated

import httpx
import typer

from radalign.delivery.destinations import (
    Auth,
    BearerAuth,
    DeliveryConfig,
    Destination,
    DicomDestination,
    FhirDestination,
    Hl7Destination,
    StowDestination,
    load_config,
)
from radalign.delivery.oauth import TokenProvider

#: FHIR release of each configured version: the CapabilityStatement's fhirVersion starts with it.
FHIR_RELEASES = {"R4": "4.0", "R5": "5.0"}


@dataclass(frozen=True)
class CheckResult:
    name: str
    kind: str
    target: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{self.name} ({self.kind}, {self.target}): {'OK' if self.ok else 'FAIL'}: {self.detail}"


def _target(d: Destination) -> str:
    if isinstance(d, DicomDestination):
        return f"{d.ae_title}@{d.host}:{d.port}"
    if isinstance(d, Hl7Destination):
        return f"{d.host}:{d.port}"
    if isinstance(d, FhirDestination):
        return str(d.base_url)
    return str(d.url)


def c_echo(d: DicomDestination, timeout_s: float) -> str:
    """C-ECHO from the calling AE title; raises with the reason when it fails."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # generated at import time

    ae = AE(ae_title=d.calling_ae_title)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    ae.connection_timeout = timeout_s
    assoc = ae.associate(d.host, d.port, ae_title=d.ae_title)
    if assoc.is_rejected:
        raise RuntimeError(f"association rejected by {d.ae_title} (check the called AE title {d.ae_title!r} and calling {d.calling_ae_title!r})")
    if not assoc.is_established:  # pynetdicom reports a refused TCP connect as an abort too
        raise RuntimeError(f"no association with {d.host}:{d.port} (connection refused, timed out or aborted)")
    try:
        if not any(cx.abstract_syntax == Verification for cx in assoc.accepted_contexts):
            raise RuntimeError("the peer does not accept the Verification SOP class (C-ECHO)")
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    if not status or "Status" not in status:
        raise RuntimeError("no C-ECHO response (connection lost or timed out)")
    if int(status.Status) != 0x0000:
        raise RuntimeError(f"C-ECHO status 0x{int(status.Status):04X}")
    return "C-ECHO answered (status 0x0000)"


async def _auth_headers(auth: Auth | None, client: httpx.AsyncClient) -> tuple[dict[str, str], str]:
    """Headers for the probe, and what was checked ('' without auth)."""
    if auth is None:
        return {}, ""
    try:
        headers = await TokenProvider(auth, client).headers()
    except httpx.HTTPError as exc:
        raise RuntimeError(f"token endpoint unreachable: {exc!r}") from exc
    except Exception as exc:  # PermanentError (refused), a missing secret, a malformed answer
        raise RuntimeError(f"token fetch failed: {exc}") from exc
    return headers, ("bearer token set" if isinstance(auth, BearerAuth) else "OAuth token fetched")


async def fhir_metadata(d: FhirDestination, client: httpx.AsyncClient) -> str:
    headers, auth_note = await _auth_headers(d.auth, client)
    url = str(d.base_url).rstrip("/") + "/metadata"
    try:
        response = await client.get(url, headers={**headers, "Accept": "application/fhir+json"})
    except httpx.HTTPError as exc:
        raise RuntimeError(f"GET {url}: {exc!r}") from exc
    if response.status_code != 200:
        raise RuntimeError(f"GET {url}: HTTP {response.status_code}")
    try:
        body = response.json()
    except ValueError as exc:
        raise RuntimeError(f"GET {url}: not JSON") from exc
    if body.get("resourceType") != "CapabilityStatement":
        raise RuntimeError(f"GET {url}: a {body.get('resourceType')!r}, not a CapabilityStatement")
    version = str(body.get("fhirVersion", ""))
    if not version.startswith(FHIR_RELEASES[d.version]):
        raise RuntimeError(f"server speaks FHIR {version or '(unstated)'}, the destination is configured for {d.version}")
    return ", ".join(x for x in (auth_note, f"CapabilityStatement, FHIR {version}") if x)


async def stow_reachable(d: StowDestination, client: httpx.AsyncClient) -> str:
    headers, auth_note = await _auth_headers(d.auth, client)
    url = str(d.url).rstrip("/") + "/studies"
    try:
        response = await client.get(url, params={"limit": "1"}, headers={**headers, "Accept": "application/dicom+json"})
    except httpx.HTTPError as exc:
        raise RuntimeError(f"GET {url}: {exc!r}") from exc
    if response.status_code in (401, 403):
        raise RuntimeError(f"GET {url}: HTTP {response.status_code} (credentials refused)")
    if response.status_code >= 500:
        raise RuntimeError(f"GET {url}: HTTP {response.status_code}")
    return ", ".join(x for x in (auth_note, f"DICOMweb answered HTTP {response.status_code}") if x)


async def mllp_connect(d: Hl7Destination, timeout_s: float) -> str:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(d.host, d.port), timeout_s)
    except TimeoutError as exc:
        raise RuntimeError(f"TCP connect timed out after {timeout_s:g} s") from exc
    except OSError as exc:
        raise RuntimeError(f"TCP connect failed: {exc.strerror or exc}") from exc
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return "MLLP port accepts connections"


async def check_destination(d: Destination, *, timeout_s: float | None = None) -> CheckResult:
    timeout = min(timeout_s, d.retry.timeout_s) if timeout_s else d.retry.timeout_s
    try:
        if isinstance(d, DicomDestination):
            detail = await asyncio.to_thread(c_echo, d, timeout)
        elif isinstance(d, Hl7Destination):
            detail = await mllp_connect(d, timeout)
        else:
            async with httpx.AsyncClient(timeout=timeout) as client:
                detail = await (fhir_metadata(d, client) if isinstance(d, FhirDestination) else stow_reachable(d, client))
    except Exception as exc:  # noqa: BLE001 - every failure becomes the destination's line, never a traceback
        return CheckResult(d.name, d.kind, _target(d), False, str(exc) or repr(exc))
    return CheckResult(d.name, d.kind, _target(d), True, detail)


async def check_all(config: DeliveryConfig, *, timeout_s: float | None = None) -> list[CheckResult]:
    return list(await asyncio.gather(*(check_destination(d, timeout_s=timeout_s) for d in config.destinations)))


delivery_app = typer.Typer(no_args_is_help=True, help="Delivery destinations (PACS, DICOMweb, FHIR, HL7): check them.")


@delivery_app.callback()
def _group() -> None:
    """Keeps `check` a sub-command (`radalign delivery check`): a lone command would become the group itself."""


@delivery_app.command("check")
def check_command(
    destinations: Annotated[
        str | None, typer.Option(help="a destinations document (file or inline YAML/JSON); default RADALIGN_DELIVERY_DESTINATIONS")
    ] = None,
    timeout: Annotated[float | None, typer.Option(help="seconds per probe at most (default: each destination's retry.timeout_s)")] = None,
) -> None:
    """C-ECHO each PACS, GET /metadata of each FHIR server (after its OAuth token), reach each DICOMweb
    server and connect to each MLLP listener; one line per destination, exit 1 when any fails."""
    if destinations is None:
        from radalign.config import get_settings

        destinations = get_settings().delivery_destinations
    try:
        config = load_config(destinations)
    except Exception as exc:
        typer.echo(f"invalid delivery destinations: {exc}", err=True)
        raise typer.Exit(2) from exc
    if not config.destinations:
        typer.echo("no delivery destinations configured (RADALIGN_DELIVERY_DESTINATIONS is empty)")
        return
    results = asyncio.run(check_all(config, timeout_s=timeout))
    for result in results:
        typer.echo(result.line())
    raise typer.Exit(0 if all(r.ok for r in results) else 1)
