"""Preprocess core: pick the view, decode it once, write the model input. Pure apart from the blob store.

Instances whose DICOM header says they are not a chest radiograph (`Instance.not_chest_radiograph`,
decided at the gateway) are left out of view selection. When that leaves none, the study is not a
chest radiograph: its first instance is still decoded (the review page shows it), and
`not_chest_radiograph=True` makes the concept stage abstain without running the model.

View selection among the rest (first rule that decides wins; `view_fallback` says which one did
when it was not ViewPosition):
  1. ViewPosition of the instances: PA, then AP (PA is the reference view of chest reports);
  2. for instances without ViewPosition, DICOM hints kept by the gateway's de-identification:
     the view word it kept in SeriesDescription (from SeriesDescription/ProtocolName/
     ViewCodeSequence), PA then AP; an instance named lateral is never taken as frontal;
  3. the first instance whose view is unknown (archives usually send the frontal first);
  4. only lateral views: the first lateral, and `lateral_only=True` so later stages know.
The chosen image is decoded once (DICOM grayscale pipeline, see `decode_dicom_pixels`; PNG/JPEG
with Pillow), fitted into `size` x `size` keeping its aspect ratio (zero padding), and written as
float32 `.npy` of shape (1, size, size) with values in [0, 1].
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import numpy as np

from radalign.blobstore import BlobIntegrityError, BlobNotFound, BlobRefused, BlobStore
from radalign.ingest.dicom import (
    DEFAULT_MAX_PIXELS,
    FRONTAL_VIEWS,
    LATERAL_VIEWS,
    PixelDecodeError,
    decode_dicom_pixels,
    normalise_view,
    read_dicom,
)
from radalign.ingest.images import encode_npy, open_raster, resize_and_pad, to_grayscale_array
from radalign.ingest.refusal import Refusal
from schemas.events import Instance, StageTiming, StudyPreprocessed, StudyReceived
from schemas.model_input import INPUT_MEDIA_TYPE, INPUT_SIZE

PREPROCESS_VERSION = "pp-1"
NPY_MEDIA_TYPE = INPUT_MEDIA_TYPE


class PreprocessError(Exception):
    """The study cannot be preprocessed; the agent dead-letters it with `reason` (no identifiers)."""

    def __init__(self, reason: str, error_type: Literal["decode", "validation", "dependency"] = "decode") -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_type = error_type


@dataclass(frozen=True)
class ViewChoice:
    instance: Instance
    view_position: str | None
    fallback: str | None
    lateral_only: bool
    not_chest_radiograph: bool = False


def _is_lateral(view: str | None) -> bool:
    return view is not None and (view in LATERAL_VIEWS or view.startswith("LAT"))


def _dicom_hint(instance: Instance, blobs: BlobStore) -> str | None:
    if instance.source_format != "dicom":
        return None
    try:
        ds = read_dicom(blobs.get(instance.blob), stop_before_pixels=True, full_check=False)
    except (Refusal, BlobIntegrityError, OSError):
        return None
    return normalise_view(ds.get("SeriesDescription"))


def select_view(instances: list[Instance], blobs: BlobStore) -> ViewChoice:
    """See the module docstring for the rules."""
    if not instances:
        raise PreprocessError("the study has no instance", "validation")
    chest = [i for i in instances if not i.not_chest_radiograph]
    if not chest:
        first = instances[0]
        return ViewChoice(first, normalise_view(first.view_position), "every instance's DICOM header says: not a chest radiograph", False, True)
    instances = chest
    views = [normalise_view(i.view_position) for i in instances]
    for wanted in FRONTAL_VIEWS:
        for instance, view in zip(instances, views, strict=True):
            if view == wanted:
                return ViewChoice(instance, view, None, False)
    unknown = [i for i, v in zip(instances, views, strict=True) if v is None]
    hints = {i.instance_key: _dicom_hint(i, blobs) for i in unknown}
    for wanted in FRONTAL_VIEWS:
        for instance in unknown:
            if hints[instance.instance_key] == wanted:
                return ViewChoice(instance, None, f"ViewPosition missing; {wanted} named in the series description", False)
    undetermined = [i for i in unknown if not _is_lateral(hints[i.instance_key])]
    if undetermined:
        return ViewChoice(undetermined[0], None, "ViewPosition missing; first instance of unknown view taken as frontal", False)
    # Every instance is lateral (by ViewPosition or by hint); any other named view is unusual
    # (e.g. oblique) and still better than nothing.
    others = [(i, v) for i, v in zip(instances, views, strict=True) if v is not None and not _is_lateral(v)]
    if others:
        instance, view = others[0]
        return ViewChoice(instance, view, f"no frontal view; took the {view} view", False)
    instance = instances[0]
    return ViewChoice(instance, views[0], "only lateral views in the study", True)


def decode_instance(instance: Instance, data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Grayscale float32 in [0, 1] (bright = dense) from the stored bytes of one instance. The
    pixel budget is checked from the header before decoding, whatever the gateway did."""
    try:
        if instance.source_format == "dicom":
            return decode_dicom_pixels(read_dicom(data, full_check=False), max_pixels=max_pixels)
        return to_grayscale_array(open_raster(data, max_pixels=max_pixels))
    except Refusal as exc:
        raise PreprocessError(f"stored {instance.source_format} object is unreadable: {exc.reason.value}") from exc
    except PixelDecodeError as exc:
        raise PreprocessError(str(exc)) from exc


def _timing(stage: str, started: float, wall: datetime) -> StageTiming:
    return StageTiming(stage=stage, started_at=wall, duration_ms=(time.perf_counter() - started) * 1000)


def preprocess(event: StudyReceived, blobs: BlobStore, size: int = INPUT_SIZE, max_pixels: int = DEFAULT_MAX_PIXELS) -> StudyPreprocessed:
    """The model input of one study; raises `PreprocessError` (decode or validation)."""
    timings: list[StageTiming] = []
    wall, started = datetime.now(UTC), time.perf_counter()
    choice = select_view(list(event.instances), blobs)
    # Error types say what an operator can do: a missing object is a dependency problem (the
    # store, replayable once it is back); a refused or corrupt reference is bad input.
    try:
        data = blobs.get(choice.instance.blob)
    except BlobNotFound as exc:
        raise PreprocessError("stored object is missing from the blob store", "dependency") from exc
    except BlobRefused as exc:
        raise PreprocessError("claim check refused: not a reference into this blob store", "validation") from exc
    except BlobIntegrityError as exc:
        raise PreprocessError("stored object failed its checksum", "validation") from exc
    except OSError as exc:
        raise PreprocessError(f"blob store read failed ({type(exc).__name__})", "dependency") from exc
    timings.append(_timing("select+fetch", started, wall))

    wall, started = datetime.now(UTC), time.perf_counter()
    image = decode_instance(choice.instance, data, max_pixels)
    timings.append(_timing("decode", started, wall))
    if image.ndim != 2 or min(image.shape) < 8:
        raise PreprocessError(f"decoded image has an unusable shape {image.shape}", "validation")
    if not np.isfinite(image).all():
        raise PreprocessError("decoded image holds non-finite values")

    wall, started = datetime.now(UTC), time.perf_counter()
    model_input = resize_and_pad(image, size)[np.newaxis]
    ref = blobs.put(encode_npy(model_input), NPY_MEDIA_TYPE)
    timings.append(_timing("resize+store", started, wall))

    return StudyPreprocessed(
        study=event.study,
        instance_key=choice.instance.instance_key,
        view_position=choice.view_position,
        view_fallback=choice.fallback,
        lateral_only=choice.lateral_only,
        not_chest_radiograph=choice.not_chest_radiograph,
        child=choice.instance.child,
        model_input=ref,
        input_shape=list(model_input.shape),
        original_rows=int(image.shape[0]),
        original_columns=int(image.shape[1]),
        preprocess_version=PREPROCESS_VERSION,
        timings=timings,
        site=event.site,
    )
