-- The signed report as a legal record (issue 24): every signature is a version with a status
-- (preliminary: a resident signed; final: an attending signed or co-signed; amended / corrected:
-- a change after final) linked to the version it replaces; nothing is overwritten.
ALTER TABLE report_finals ADD COLUMN IF NOT EXISTS status text;
UPDATE report_finals SET status = payload->>'status' WHERE status IS NULL;
ALTER TABLE report_finals ALTER COLUMN status SET NOT NULL;
ALTER TABLE report_finals ADD COLUMN IF NOT EXISTS replaces_version integer;
DO $$ BEGIN
    ALTER TABLE report_finals ADD CONSTRAINT report_finals_status_known
        CHECK (status IN ('preliminary', 'final', 'amended', 'corrected'));
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;
-- Versions are never updated in place except for the outbox / learning-loop bookkeeping columns.
CREATE OR REPLACE FUNCTION report_finals_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.study_key, NEW.version, NEW.report_id, NEW.final_id, NEW.signer_key, NEW.signer_role, NEW.signed_at,
        NEW.payload, NEW.status, NEW.replaces_version)
       IS DISTINCT FROM
       (OLD.study_key, OLD.version, OLD.report_id, OLD.final_id, OLD.signer_key, OLD.signer_role, OLD.signed_at,
        OLD.payload, OLD.status, OLD.replaces_version) THEN
        RAISE EXCEPTION 'a signed report version is a record: it is never changed (sign a new version)';
    END IF;
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS report_finals_immutable ON report_finals;
CREATE TRIGGER report_finals_immutable BEFORE UPDATE ON report_finals FOR EACH ROW EXECUTE FUNCTION report_finals_immutable();
DROP TRIGGER IF EXISTS report_finals_no_delete ON report_finals;
CREATE OR REPLACE FUNCTION report_finals_no_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'a signed report version is a record: it is never deleted';
END $$;
CREATE TRIGGER report_finals_no_delete BEFORE DELETE ON report_finals FOR EACH ROW EXECUTE FUNCTION report_finals_no_delete();

-- Reviewer pseudonym -> the signer as the identity provider names them, like the patient
-- mapping (010): events carry `signer_key` only; the delivery joins the name and identifier in
-- at the output edge (FHIR resultsInterpreter/performer, SR Verifying Observer, HL7 OBR-32).
CREATE TABLE IF NOT EXISTS reviewer_identities (
    reviewer_key      text PRIMARY KEY,            -- rd-<hex16>, as in ReportFinal.signer_key
    display_name      text NOT NULL,
    family_name       text NOT NULL DEFAULT '',
    given_name        text NOT NULL DEFAULT '',
    identifier        text NOT NULL,               -- the IdP's subject (or the staff identifier it names)
    identifier_system text NOT NULL,               -- its issuer (a URI)
    role              text NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- Delivery records (060): the RIS feed (kind hl7) and the signed statuses.
ALTER TABLE deliveries DROP CONSTRAINT IF EXISTS deliveries_kind_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_kind_check CHECK (kind IN ('dicom', 'stow', 'fhir', 'hl7'));
ALTER TABLE deliveries DROP CONSTRAINT IF EXISTS deliveries_report_status_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_report_status_check
    CHECK (report_status IN ('preliminary', 'final', 'amended', 'corrected'));

-- Audit trail of the review service: who signed in, opened and signed each study, and when.
-- reviewer_key is the pseudonym (as in events); reviewer_identities names the person.
CREATE TABLE IF NOT EXISTS review_audit (
    id           bigserial PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    action       text NOT NULL CHECK (action IN ('login', 'logout', 'opened', 'signed', 'refused')),
    study_key    text,
    reviewer_key text,
    role         text,
    via          text,                      -- oidc, token (dev login) or bearer (API)
    detail       jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS review_audit_study ON review_audit (study_key, at);
