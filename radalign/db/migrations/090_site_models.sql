-- Site models in shadow (radalign.sites): what a site's candidate model said about each live
-- study beside the live model's answer, recorded by the concept stage and never drafted.
-- `radalign sites compare` reads it with the reports signed meanwhile (report_finals, 070).
-- Pseudonyms only: study_key is the gateway's key; site is a configured issuer's name.
CREATE TABLE IF NOT EXISTS site_shadow_scores (
    study_key          text NOT NULL,
    candidate_version  text NOT NULL,
    site               text NOT NULL CHECK (site ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    live_version       text,                        -- NULL: the generic model served the study
    live_probabilities jsonb NOT NULL,              -- observation -> calibrated probability
    live_states        jsonb NOT NULL,              -- observation -> present / absent / uncertain (claimed only)
    candidate_probabilities jsonb NOT NULL,
    candidate_states   jsonb NOT NULL,
    live_ood           boolean NOT NULL,
    candidate_ood      boolean NOT NULL,
    recorded_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (study_key, candidate_version)
);

CREATE INDEX IF NOT EXISTS site_shadow_by_candidate ON site_shadow_scores (site, candidate_version, recorded_at);
