"""Preprocess stage adapter: StudyReceived -> StudyPreprocessed (Faust; the work is in radalign.preprocess.core)."""

from __future__ import annotations

import asyncio

from radalign.blobstore import BlobStore, open_blob_store
from radalign.config import Settings
from radalign.framework.faust_app import run_worker
from radalign.framework.retry import PermanentError
from radalign.framework.stage import Output, Stage
from radalign.ingest.images import set_pixel_limit
from radalign.preprocess.core import PreprocessError, preprocess
from schemas.events import StudyReceived
from schemas.model_input import INPUT_SIZE
from schemas.topics import STUDY_PREPROCESSED


class PreprocessStage(Stage[StudyReceived]):
    name = "preprocess"
    concurrency = 2  # decoding is CPU-bound in a thread; two overlap blob I/O with decoding

    async def setup(self, settings: Settings) -> None:
        self.blobs: BlobStore = open_blob_store(settings.blob_root, settings.s3_endpoint_url, max_bytes=settings.gateway_max_bytes)
        self.max_pixels = settings.max_image_pixels
        set_pixel_limit(settings.max_image_pixels)

    async def handle(self, event: StudyReceived) -> list[Output]:
        try:
            # Decoding a large DICOM takes tens of ms: off the event loop so heartbeats keep flowing.
            result = await asyncio.to_thread(preprocess, event, self.blobs, INPUT_SIZE, self.max_pixels)
        except PreprocessError as exc:
            raise PermanentError(exc.reason, exc.error_type) from exc
        return [Output(STUDY_PREPROCESSED, result)]


def main(settings: Settings) -> None:
    run_worker(PreprocessStage(), settings)
