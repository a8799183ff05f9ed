"""Claim-check blob store: pixels and original objects live here, events carry a `BlobRef`.

Content-addressed by SHA-256, so writing the same bytes twice is a no-op (idempotent sinks) and a
reader can verify what it got. Backends: a local folder (dev, CI, a shared volume) and an
S3-compatible bucket (production; needs the `s3` extra).
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


class BlobStore(Protocol):
    def put(self, data: bytes, media_type: str) -> BlobRef: ...

    def get(self, ref: BlobRef) -> bytes: ...


def _verify(ref: BlobRef, data: bytes) -> bytes:
    if len(data) != ref.size or hashlib.sha256(data).hexdigest() != ref.sha256:
        raise BlobIntegrityError(f"blob {ref.sha256[:12]} failed its checksum (size {len(data)} vs {ref.size})")
    return data


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

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
        if parsed.scheme != "file":
            raise ValueError(f"local blob store cannot read {parsed.scheme}:// references")
        return _verify(ref, Path(unquote(parsed.path)).read_bytes())


class S3BlobStore:
    """Any S3-compatible bucket (AWS S3, MinIO, Ceph RGW)."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None) -> None:
        import boto3  # optional extra: radalign-stream[s3]
        from botocore.config import Config

        self.bucket, self.prefix = bucket, prefix.strip("/")
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
        body = self.client.get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))["Body"].read()
        return _verify(ref, body)


def open_blob_store(url: str, s3_endpoint_url: str = "") -> BlobStore:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalBlobStore(Path(unquote(parsed.path)))
    if parsed.scheme == "s3":
        return S3BlobStore(parsed.netloc, parsed.path, s3_endpoint_url)
    raise ValueError(f"unsupported blob store URL {url!r}: use file:///path or s3://bucket/prefix")
