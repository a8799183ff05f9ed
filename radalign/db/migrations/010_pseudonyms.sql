-- Pseudonym -> original identifiers, written by the gateway only. Nothing else in the system
-- holds an identifier: events, logs and metrics carry the keys (`st-`, `pt-`, `in-` + 16 hex).
-- The report router reads it to send a finished report back to the right order and study.
-- Upserts are idempotent: a resent study leaves one row per pseudonym; later facts (a routing
-- reference the first instance lacked) are merged in, never erased.

CREATE TABLE IF NOT EXISTS study_pseudonyms (
    study_key          text PRIMARY KEY CHECK (study_key ~ '^st-[0-9a-f]{16}$'),
    patient_key        text NOT NULL CHECK (patient_key ~ '^pt-[0-9a-f]{16}$'),
    study_instance_uid text NOT NULL,
    patient_id         text NOT NULL DEFAULT '',
    patient_name       text NOT NULL DEFAULT '',
    accession_number   text NOT NULL DEFAULT '',
    -- RequestedProcedureID, order numbers, Request Attributes items, ServiceRequest references.
    routing            jsonb NOT NULL DEFAULT '{}'::jsonb,
    source             text NOT NULL,
    published_version  integer NOT NULL DEFAULT 0,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS study_pseudonyms_patient_key ON study_pseudonyms (patient_key);
CREATE INDEX IF NOT EXISTS study_pseudonyms_accession ON study_pseudonyms (accession_number) WHERE accession_number <> '';

CREATE TABLE IF NOT EXISTS instance_pseudonyms (
    instance_key       text PRIMARY KEY CHECK (instance_key ~ '^in-[0-9a-f]{16}$'),
    study_key          text NOT NULL REFERENCES study_pseudonyms (study_key) ON DELETE CASCADE,
    sop_instance_uid   text NOT NULL DEFAULT '',
    series_instance_uid text NOT NULL DEFAULT '',
    sop_class_uid      text NOT NULL DEFAULT '',
    created_at         timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS instance_pseudonyms_study ON instance_pseudonyms (study_key);
