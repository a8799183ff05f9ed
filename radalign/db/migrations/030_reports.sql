-- Drafted reports, one row per (study_key, pipeline_version): the drafting stage upserts, the
-- read API (GET /v1/studies/{study_key}/report) reads. Pseudonyms only: the identifiers are
-- joined in at the output edge from study_pseudonyms (010), never stored here.
--
-- payload       the ReportDrafted event (contract v1) as JSON.
-- content_hash  sha256 of the payload without its timings: a replayed event that drafts the same
--               text leaves the row (and updated_at) untouched.
CREATE TABLE IF NOT EXISTS reports (
    study_key        text NOT NULL,
    pipeline_version text NOT NULL,
    report_id        text NOT NULL UNIQUE,
    drafter          text NOT NULL,
    needs_review     boolean NOT NULL,
    payload          jsonb NOT NULL,
    content_hash     text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (study_key, pipeline_version)
);

-- The read API serves the latest pipeline version's report of a study.
CREATE INDEX IF NOT EXISTS reports_study_updated ON reports (study_key, updated_at DESC);
CREATE INDEX IF NOT EXISTS reports_review ON reports (updated_at DESC) WHERE needs_review;
