"""Orthanc, a real PACS, as an optional component of the embedded stack (tests and the demo).

Installed from Debian's packages (`orthanc`, `orthanc-dicomweb` for STOW-RS / QIDO / WADO);
`scripts/bootstrap.sh` installs them when apt is available and it runs as root. Where the binary
is missing, `stack up` skips the component and says so. Its own configuration and storage live
under `<state_dir>/orthanc/`, on the settings' ports (DICOM `orthanc_dicom_port`, HTTP
`orthanc_http_port`, loopback only), with the gateway declared as the DICOM modality `radalign`,
so that a routing rule (or `POST /modalities/radalign/store`) sends studies to RadAlign and the
delivery stage's SR comes back into the same study.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import psutil

from radalign.config import Settings
from radalign.stack.process import StatePaths, start_process
from radalign.stack.readiness import StackStartError, tcp_open, wait_until_ready

NAME = "orthanc"
#: The gateway as Orthanc knows it (a DICOM modality).
GATEWAY_MODALITY = "radalign"
_PLUGIN_DIRS = (Path("/usr/share/orthanc/plugins"), Path("/usr/lib/orthanc/plugins"))


def orthanc_binary() -> Path | None:
    found = shutil.which("Orthanc") or shutil.which("orthanc")
    if found:
        return Path(found)
    for candidate in (Path("/usr/sbin/Orthanc"), Path("/usr/bin/Orthanc")):
        if candidate.is_file():
            return candidate
    return None


def installed() -> bool:
    return orthanc_binary() is not None


def dicomweb_plugin() -> Path | None:
    for folder in _PLUGIN_DIRS:
        lib = folder / "libOrthancDicomWeb.so"
        if lib.is_file():
            return lib
    return None


def http_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.orthanc_http_port}"


def dicomweb_url(settings: Settings) -> str:
    return f"{http_url(settings)}/dicom-web"


def orthanc_config(settings: Settings, data_dir: Path) -> dict:
    plugin = dicomweb_plugin()
    return {
        "Name": "RadAlign test PACS",
        "StorageDirectory": str(data_dir / "storage"),
        "IndexDirectory": str(data_dir / "index"),
        "HttpPort": settings.orthanc_http_port,
        "DicomPort": settings.orthanc_dicom_port,
        "DicomAet": settings.orthanc_ae_title,
        # Loopback only, no login: a local test PACS (production PACS are configured by their owners).
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "HttpServerEnabled": True,
        "DicomServerEnabled": True,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowEcho": True,
        "StorageCompression": False,
        "ConcurrentJobs": 2,
        "HttpTimeout": 30,
        "DicomScuTimeout": 30,
        "SaveJobs": False,
        "Plugins": [str(plugin)] if plugin else [],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Ssl": False},
        "DicomModalities": {GATEWAY_MODALITY: [settings.dicom_ae_title, "127.0.0.1", settings.dicom_port]},
    }


def start_orthanc(settings: Settings, paths: StatePaths, timeout_s: float = 30.0) -> psutil.Process:
    binary = orthanc_binary()
    if binary is None:
        raise StackStartError("Orthanc is not installed (apt-get install orthanc orthanc-dicomweb; scripts/bootstrap.sh does it as root)")
    for port in (settings.orthanc_http_port, settings.orthanc_dicom_port):
        if tcp_open("127.0.0.1", port):
            raise StackStartError(f"port 127.0.0.1:{port} is already taken; is another Orthanc running?")
    data_dir = paths.data_dir(NAME)
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "orthanc.json"
    config.write_text(json.dumps(orthanc_config(settings, data_dir), indent=2))
    proc = start_process(paths, NAME, [str(binary), str(config)])
    wait_until_ready(
        f"orthanc on {http_url(settings)}", lambda: orthanc_healthy(settings), timeout_s=timeout_s, log_file=paths.log_file(NAME), proc=proc
    )
    return proc


def orthanc_healthy(settings: Settings) -> bool:
    try:
        return httpx.get(f"{http_url(settings)}/system", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False
