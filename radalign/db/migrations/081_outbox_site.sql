-- The sending site (issue 9): the issuer configured for the intake source, as a site name
-- (radalign/identity.py). Kept with the pending study so the assembler publishes it in
-- StudyReceived.site after a restart too; the concept stage picks the site's audit profile by it.
-- A namespace such as HOSP-A, never a patient identifier. NULL: no site configured for the source.
ALTER TABLE gateway_outbox_studies ADD COLUMN IF NOT EXISTS site text
    CHECK (site IS NULL OR site ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$');
