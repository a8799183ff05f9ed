"""Log redaction: a DICOM UID never reaches a log line, from our code, a library or a warning."""

import logging
import warnings

from radalign.framework.logredact import REDACTED_UID, RedactIdentifiers, install_log_redaction


def _record(msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("pydicom", logging.WARNING, __file__, 1, msg, args, None)


def test_uids_are_redacted_and_other_numbers_are_kept():
    record = _record("Invalid value for SOPInstanceUID %s in study %s (3.5 s, v1.2.3)", "1.2.826.0.1.3680043.8.498.12345", "2.25.3391")
    assert RedactIdentifiers().filter(record)
    text = record.getMessage()
    assert "1.2.826" not in text and text.count(REDACTED_UID) == 1 and "2.25.3391" in text  # 3 components: not a UID shape
    assert "3.5 s" in text and "v1.2.3" in text


def test_warnings_and_exception_text_pass_the_filter():
    root = logging.getLogger()
    captured: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            captured.append(self.format(record))

    handler = Collect()
    root.addHandler(handler)
    try:
        install_log_redaction()
        warnings.warn("study 1.3.6.1.4.1.5962.99.1.2786.1 has an invalid VR", UserWarning, stacklevel=1)
        try:
            raise ValueError("bad UID 1.2.840.113619.2.55.3.604688119")
        except ValueError:
            logging.getLogger("radalign.test").exception("failed")
    finally:
        root.removeHandler(handler)
        logging.captureWarnings(False)
    joined = "\n".join(captured)
    assert "1.3.6.1.4.1" not in joined and "1.2.840.113619" not in joined and joined.count(REDACTED_UID) >= 2
