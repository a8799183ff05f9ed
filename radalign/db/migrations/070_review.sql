-- The radiologist's side (services/review): which image each study was read from, the signed
-- (final) versions of reports, and what the learning loop did with them. Pseudonyms only, as in
-- `reports` (030): identifiers are joined in at the output edge, never stored here.

-- The model input of each study, recorded from radalign.study.preprocessed.v1, so the review
-- page can show the film the model saw (the drafted event carries no blob reference).
CREATE TABLE IF NOT EXISTS review_images (
    study_key        text NOT NULL,
    pipeline_version text NOT NULL,
    model_input      jsonb NOT NULL,           -- BlobRef of the float32 (1, H, W) .npy
    instance_key     text NOT NULL,
    view_position    text,
    received_at      timestamptz NOT NULL,
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (study_key, pipeline_version)
);

-- One row per signed version. version 1 is the first sign-off; an amendment adds version 2 ...
-- signer_name is the reviewer's login (staff, not patient data); events carry signer_key only.
-- kb_case_key / kb_ingested_at: the signed report's case in the case store once ingested;
-- NULL means the learning loop still owes it (retried at start and after each sign-off).
CREATE TABLE IF NOT EXISTS report_finals (
    study_key        text NOT NULL,
    version          integer NOT NULL CHECK (version >= 1),
    pipeline_version text NOT NULL,
    report_id        text NOT NULL,
    final_id         text NOT NULL UNIQUE,
    signer_name      text NOT NULL,
    signer_key       text NOT NULL,
    signer_role      text NOT NULL,
    signed_at        timestamptz NOT NULL,
    opened_at        timestamptz,               -- when the reviewer opened the study (time to sign)
    edit_distance    integer NOT NULL,
    edit_ratio       double precision NOT NULL,
    payload          jsonb NOT NULL,            -- the ReportFinal event (contract v1)
    draft_concepts   jsonb NOT NULL,            -- observation -> drafted state ('not_assessed' too)
    published_at     timestamptz,               -- acknowledged by the broker
    kb_case_key      text,
    kb_ingested_at   timestamptz,
    PRIMARY KEY (study_key, version)
);

CREATE INDEX IF NOT EXISTS report_finals_signed ON report_finals (signed_at DESC);
CREATE INDEX IF NOT EXISTS report_finals_unpublished ON report_finals (signed_at) WHERE published_at IS NULL;
CREATE INDEX IF NOT EXISTS report_finals_kb_pending ON report_finals (signed_at) WHERE kb_ingested_at IS NULL;
