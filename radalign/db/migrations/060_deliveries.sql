-- Delivery records: one row per (report, destination), written by the delivery stage, read by
-- GET /v1/studies/{study_key}/deliveries. Pseudonyms and destination names only: no identifier.
--
-- report_version  "<status>-<content hash>": the version last attempted; a redelivery of a
--                 version already delivered is skipped, a new version (a changed draft, the
--                 signed final report) is sent and replaces the row's version.
-- status          pending (being sent) | delivered | failed (retries spent: dead-lettered)
-- remote_ref      what the destination answered: SOP Instance UID, FHIR DiagnosticReport location
-- last_error      the reason of the last failure (status codes and error classes, no payload)
CREATE TABLE IF NOT EXISTS deliveries (
    report_id        text NOT NULL,
    destination      text NOT NULL,
    study_key        text NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('dicom', 'stow', 'fhir')),
    report_version   text NOT NULL,
    report_status    text NOT NULL CHECK (report_status IN ('preliminary', 'final')),
    status           text NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    remote_ref       text NOT NULL DEFAULT '',
    last_error       text NOT NULL DEFAULT '',
    first_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (report_id, destination)
);

CREATE INDEX IF NOT EXISTS deliveries_study ON deliveries (study_key);
CREATE INDEX IF NOT EXISTS deliveries_failed ON deliveries (updated_at DESC) WHERE status = 'failed';
