"""Claim-check blob store: pixels and original objects live here, events carry a `BlobRef`.

Content-addressed by SHA-256, so writing the same bytes twice is a no-op (idempotent sinks) and a
reader can verify what it got. Backends: a local folder (dev, CI, a shared volume) and an
S3-compatible bucket (production; needs the `s3` extra).

Claim checks arrive in events, so readers do not trust them (issue 12): a reference is read only
when its URI is exactly where this store keeps that SHA-256 (under the configured root or bucket
and prefix; no `..`, no other file, no symlink), at most `ref.size` bytes are read, and `ref.size`
itself is capped. Errors name the blob by its digest prefix only: never a path, never the size
of whatever else is on disk.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

from schemas.events import BlobRef


class BlobIntegrityError(ValueError):
    """The bytes behind a reference do not match its checksum or size."""


class BlobRefused(BlobIntegrityError):
    """The reference points outside this store, or declares an object larger than it accepts."""


class BlobNotFound(FileNotFoundError):
    """The store has no object for this (valid) reference: a dependency problem, not bad input."""


#: Largest object a reader fetches (a DICOM is capped by the gateway's 64 MiB by default).
DEFAULT_MAX_BLOB_BYTES = 256 * 1024 * 1024


class BlobStore(Protocol):
    def put(self, data: bytes, media_type: str) -> BlobRef: ...

    def get(self, ref: BlobRef) -> bytes: ...


def _verify(ref: BlobRef, data: bytes) -> bytes:
    if len(data) != ref.size or hashlib.sha256(data).hexdigest() != ref.sha256:
        raise BlobIntegrityError(f"blob {ref.sha256[:12]} failed its checksum")
    return data


def _check_size(ref: BlobRef, max_bytes: int) -> None:
    if ref.size > max_bytes:
        raise BlobRefused(f"blob {ref.sha256[:12]} declares more bytes than this store serves")


class LocalBlobStore:
    def __init__(self, root: Path, *, max_bytes: int = DEFAULT_MAX_BLOB_BYTES) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root.resolve()  # one spelling of the root, so references compare exactly
        self.max_bytes = max_bytes

    def _path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def put(self, data: bytes, media_type: str) -> BlobRef:
        digest = hashlib.sha256(data).hexdigest()
        path = self._path(digest)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write then rename: a reader never sees a half-written blob.
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        return BlobRef(uri=path.as_uri(), sha256=digest, size=len(data), media_type=media_type)

    def get(self, ref: BlobRef) -> bytes:
        parsed = urlparse(ref.uri)
        expected = self._path(ref.sha256)
        # The URI must name exactly the file this store keeps for that digest: nothing else on
        # the host is reachable through a crafted claim check.
        if parsed.scheme != "file" or parsed.netloc not in ("", "localhost") or Path(unquote(parsed.path)) != expected:
            raise BlobRefused(f"blob {ref.sha256[:12]}: the reference is not in this blob store")
        _check_size(ref, self.max_bytes)
        try:
            fd = os.open(expected, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            raise BlobNotFound(f"blob {ref.sha256[:12]} is not in the store") from None
        except OSError as exc:  # a symlink (ELOOP) or unreadable: refuse without saying what is there
            raise BlobRefused(f"blob {ref.sha256[:12]} could not be opened ({type(exc).__name__})") from None
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(ref.size + 1)  # one byte more tells a longer file from the right one
        return _verify(ref, data)


class S3BlobStore:
    """Any S3-compatible bucket (AWS S3, MinIO, Ceph RGW)."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None, *, max_bytes: int = DEFAULT_MAX_BLOB_BYTES) -> None:
        import boto3  # optional extra: radalign-stream[s3]
        from botocore.config import Config

        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.max_bytes = max_bytes
        # Explicit timeouts and a bounded retry: botocore's defaults wait 60 s per read.
        config = Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"})
        self.client = boto3.client("s3", endpoint_url=endpoint_url or None, config=config)

    def _key(self, sha256: str) -> str:
        return "/".join(p for p in (self.prefix, sha256[:2], sha256) if p)

    def put(self, data: bytes, media_type: str) -> BlobRef:
        digest = hashlib.sha256(data).hexdigest()
        key = self._key(digest)
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=media_type)
        return BlobRef(uri=f"s3://{self.bucket}/{key}", sha256=digest, size=len(data), media_type=media_type)

    def get(self, ref: BlobRef) -> bytes:
        parsed = urlparse(ref.uri)
        key = self._key(ref.sha256)
        if parsed.scheme != "s3" or parsed.netloc != self.bucket or parsed.path.lstrip("/") != key:
            raise BlobRefused(f"blob {ref.sha256[:12]}: the reference is not in this blob store")
        _check_size(ref, self.max_bytes)
        try:
            # Range: at most one byte more than declared is ever transferred.
            body = self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes=0-{ref.size}")["Body"].read(ref.size + 1)
        except self.client.exceptions.NoSuchKey:
            raise BlobNotFound(f"blob {ref.sha256[:12]} is not in the store") from None
        return _verify(ref, body)


def open_blob_store(url: str, s3_endpoint_url: str = "", *, max_bytes: int = DEFAULT_MAX_BLOB_BYTES) -> BlobStore:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalBlobStore(Path(unquote(parsed.path)), max_bytes=max_bytes)
    if parsed.scheme == "s3":
        return S3BlobStore(parsed.netloc, parsed.path, s3_endpoint_url, max_bytes=max_bytes)
    raise ValueError(f"unsupported blob store URL {url!r}: use file:///path or s3://bucket/prefix")
