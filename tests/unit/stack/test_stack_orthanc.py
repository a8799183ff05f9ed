"""Orthanc as an optional stack component: its configuration, and a real start/stop where installed."""

from pathlib import Path

import httpx
import pytest

from radalign.stack import manager, orthanc
from radalign.testing.stack import stack_settings


def test_config_keeps_orthanc_private_and_knows_the_gateway(tmp_path: Path) -> None:
    settings = stack_settings(tmp_path, dicom_port=11999, dicom_ae_title="RADALIGN")
    config = orthanc.orthanc_config(settings, tmp_path / "orthanc")
    assert config["StorageDirectory"].startswith(str(tmp_path)) and config["IndexDirectory"].startswith(str(tmp_path))
    assert (config["HttpPort"], config["DicomPort"]) == (settings.orthanc_http_port, settings.orthanc_dicom_port)
    assert config["RemoteAccessAllowed"] is False  # loopback only
    assert config["DicomModalities"][orthanc.GATEWAY_MODALITY] == ["RADALIGN", "127.0.0.1", 11999]


def test_up_skips_orthanc_where_it_is_not_installed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(manager.OPTIONAL, "orthanc", lambda: False)
    (row,) = manager.up(stack_settings(tmp_path), ["orthanc"])
    assert (row.name, row.pid, row.detail) == ("orthanc", None, "not installed: skipped")


@pytest.mark.integration  # starts a real Orthanc process
@pytest.mark.skipif(not orthanc.installed(), reason="Orthanc is not installed (apt-get install orthanc orthanc-dicomweb)")
def test_up_starts_orthanc_and_down_stops_it(tmp_path: Path) -> None:
    settings = stack_settings(tmp_path)
    try:
        (row,) = manager.up(settings, ["orthanc"])
        assert row.detail == "started" and row.pid
        system = httpx.get(f"{orthanc.http_url(settings)}/system", timeout=5).json()
        assert system["DicomAet"] == settings.orthanc_ae_title and system["DicomPort"] == settings.orthanc_dicom_port
        assert [(r.name, r.healthy) for r in manager.status(settings) if r.name == "orthanc"] == [("orthanc", True)]
        if orthanc.dicomweb_plugin():
            assert "dicom-web" in httpx.get(f"{orthanc.http_url(settings)}/plugins", timeout=5).json()
    finally:
        assert "orthanc" in manager.down(settings)
    assert not orthanc.orthanc_healthy(settings)
    assert "orthanc" not in [r.name for r in manager.status(settings)]  # optional: listed only while it runs
