"""No identifier in a log line, whoever writes it: a filter on the root handlers that rewrites
DICOM UIDs (original study, series and instance UIDs reach pydicom's and highdicom's warnings)
into `[uid]`, and Python warnings routed through logging so that they pass the same filter.

Written by hand: logging has no redaction of its own, and the shape of a UID (digits and dots,
at least four components, PS3.5 9.1) is the one identifier every library may print. Free-text
identifiers (names, ids) never enter the pipeline past the gateway (de-identified there), so the
filter does not try to guess them; `tests/integration/test_pipeline.py` scans every worker's log
after sending identifying studies.
"""

from __future__ import annotations

import logging
import re

UID = re.compile(r"(?<![\w.])[0-2](?:\.(?:0|[1-9]\d{0,38})){3,}(?![\w.])")
REDACTED_UID = "[uid]"


class RedactIdentifiers(logging.Filter):
    """Rewrites the formatted message (and any exception text) with UIDs replaced."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = UID.sub(REDACTED_UID, message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = UID.sub(REDACTED_UID, record.exc_text)
        return True


def install_log_redaction() -> None:
    """Put the filter on every root handler (call after logging.basicConfig) and route warnings
    (pydicom's, highdicom's) through logging."""
    logging.captureWarnings(True)
    redact = RedactIdentifiers()
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactIdentifiers) for f in handler.filters):
            handler.addFilter(redact)
