"""Why the gateway refuses an input, and how each refusal is answered on each protocol.

One table maps every reason to its HTTP status (RFC 7807 problem+json) and its DICOM status
(C-STORE response, STOW-RS FailureReason). DICOM statuses follow PS3.4 Annex B / PS3.7 C.4.2:

| reason                         | HTTP | DICOM  | DICOM meaning                                   |
|--------------------------------|------|--------|-------------------------------------------------|
| too_large                      | 413  | 0xA700 | Refused: out of resources                       |
| unreadable                     | 400  | 0xC000 | Error: cannot understand                        |
| unsupported_modality           | 422  | 0xA900 | Error: data set does not match SOP class        |
| unsupported_sop_class          | 422  | 0x0122 | Refused: SOP class not supported                |
| missing_pixel_data             | 422  | 0xA900 | Error: data set does not match SOP class        |
| unsupported_transfer_syntax    | 422  | 0xC001 | Error: cannot understand (no pixel decoder)     |
| missing_identifier             | 422  | 0xA900 | Error: data set does not match SOP class        |
| burned_in_annotation           | 422  | 0xA900 | Error: (pixels may show identifiers)            |
| unsupported_media_type         | 415  | 0xC000 | (HTTP only: wrong Content-Type)                 |
| invalid_metadata               | 422  | 0xC000 | (HTTP only: a form field is missing or invalid) |
| unauthorized                   | 401  | -      | (HTTP only; DICOM rejects the association)      |
| unavailable                    | 503  | 0xA700 | Refused: out of resources (retry later; HTTP    |
|                                |      |        | adds Retry-After): outbox/database/assembler down |
| internal                       | 503  | 0x0110 | Failure: processing failure (retry later)       |

Reasons are a closed set so they can be metric labels: they never carry identifiers.
"""

from __future__ import annotations

from enum import Enum


class RefusalReason(str, Enum):
    TOO_LARGE = "too_large"
    UNREADABLE = "unreadable"
    UNSUPPORTED_MODALITY = "unsupported_modality"
    UNSUPPORTED_SOP_CLASS = "unsupported_sop_class"
    MISSING_PIXEL_DATA = "missing_pixel_data"
    UNSUPPORTED_TRANSFER_SYNTAX = "unsupported_transfer_syntax"
    MISSING_IDENTIFIER = "missing_identifier"
    BURNED_IN_ANNOTATION = "burned_in_annotation"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    INVALID_METADATA = "invalid_metadata"
    UNAUTHORIZED = "unauthorized"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


HTTP_STATUS: dict[RefusalReason, int] = {
    RefusalReason.TOO_LARGE: 413,
    RefusalReason.UNREADABLE: 400,
    RefusalReason.UNSUPPORTED_MODALITY: 422,
    RefusalReason.UNSUPPORTED_SOP_CLASS: 422,
    RefusalReason.MISSING_PIXEL_DATA: 422,
    RefusalReason.UNSUPPORTED_TRANSFER_SYNTAX: 422,
    RefusalReason.MISSING_IDENTIFIER: 422,
    RefusalReason.BURNED_IN_ANNOTATION: 422,
    RefusalReason.UNSUPPORTED_MEDIA_TYPE: 415,
    RefusalReason.INVALID_METADATA: 422,
    RefusalReason.UNAUTHORIZED: 401,
    RefusalReason.UNAVAILABLE: 503,
    RefusalReason.INTERNAL: 503,
}

DICOM_STATUS: dict[RefusalReason, int] = {
    RefusalReason.TOO_LARGE: 0xA700,
    RefusalReason.UNREADABLE: 0xC000,
    RefusalReason.UNSUPPORTED_MODALITY: 0xA900,
    RefusalReason.UNSUPPORTED_SOP_CLASS: 0x0122,
    RefusalReason.MISSING_PIXEL_DATA: 0xA900,
    RefusalReason.UNSUPPORTED_TRANSFER_SYNTAX: 0xC001,
    RefusalReason.MISSING_IDENTIFIER: 0xA900,
    RefusalReason.BURNED_IN_ANNOTATION: 0xA900,
    RefusalReason.UNSUPPORTED_MEDIA_TYPE: 0xC000,
    RefusalReason.INVALID_METADATA: 0xC000,
    RefusalReason.UNAUTHORIZED: 0xC000,
    RefusalReason.UNAVAILABLE: 0xA700,
    RefusalReason.INTERNAL: 0x0110,
}

#: Seconds a client is told to wait (HTTP Retry-After) when the gateway cannot take work now.
RETRY_AFTER_S = 5


class Refusal(Exception):
    """An input the gateway will not accept. `detail` is for the sender and must hold no identifier."""

    def __init__(self, reason: RefusalReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.reason]

    @property
    def dicom_status(self) -> int:
        return DICOM_STATUS[self.reason]
