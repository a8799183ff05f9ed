"""Intake: DICOM/PNG/JPEG reading and refusal rules, de-identification, study assembly, pseudonym store.

Import the modules you need (`radalign.ingest.images`, ...): this package imports nothing
eagerly, so code that only resizes images (training) pulls in no database or DICOM network stack.
"""
