"""The claim-check store: content addressing, verification, and both backends."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from radalign.blobstore import BlobIntegrityError, LocalBlobStore, open_blob_store


def test_local_store_is_content_addressed_and_idempotent(tmp_path: Path) -> None:
    store = open_blob_store(tmp_path.as_uri())
    ref = store.put(b"pixels", "application/x-npy")
    assert ref.sha256 == hashlib.sha256(b"pixels").hexdigest() and ref.size == 6
    assert store.put(b"pixels", "application/x-npy") == ref, "same bytes, same reference"
    assert store.get(ref) == b"pixels"
    assert len([p for p in tmp_path.rglob("*") if p.is_file()]) == 1


def test_tampered_blob_fails_its_checksum(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    ref = store.put(b"original", "image/png")
    Path(ref.uri.removeprefix("file://")).write_bytes(b"tampered")
    with pytest.raises(BlobIntegrityError):
        store.get(ref)


def test_unknown_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="file:///path or s3://bucket/prefix"):
        open_blob_store("ftp://host/x")


def test_s3_store_against_an_s3_compatible_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """S3BlobStore through boto3 against moto's S3 server on loopback (skips without the s3 extra)."""
    pytest.importorskip("boto3")
    server_mod = pytest.importorskip("moto.server")
    import boto3

    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        for name, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"), ("AWS_DEFAULT_REGION", "us-east-1")):
            monkeypatch.setenv(name, value)
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="radalign-blobs")
        store = open_blob_store("s3://radalign-blobs/dev", endpoint)
        ref = store.put(b"dicom bytes", "application/dicom")
        assert ref.uri.startswith("s3://radalign-blobs/dev/")
        assert store.get(ref) == b"dicom bytes"
        boto3.client("s3", endpoint_url=endpoint).put_object(Bucket="radalign-blobs", Key=ref.uri.split("/", 3)[3], Body=b"changed")
        with pytest.raises(BlobIntegrityError):
            store.get(ref)
    finally:
        server.stop()
