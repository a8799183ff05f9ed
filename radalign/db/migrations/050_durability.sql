-- Durability (issue 12). The gateway's transactional outbox: nothing accepted is ever lost.
-- An instance is acknowledged to its sender (C-STORE success, HTTP 202, STOW-RS 200) only after
-- its cleaned object is in the claim-check store and its row is here. The study assembler
-- publishes studies whose last instance is older than the quiet window, then marks them; a
-- gateway that restarts (or another replica) finds every pending study here and publishes it.
-- Rows hold pseudonyms and claim checks only, never identifiers (those stay in 010's tables).

CREATE TABLE IF NOT EXISTS gateway_outbox_studies (
    study_key          text PRIMARY KEY CHECK (study_key ~ '^st-[0-9a-f]{16}$'),
    patient_key        text NOT NULL,
    source             text NOT NULL,
    stat               boolean NOT NULL DEFAULT false,
    -- highest study_version published; the next publish is published_version + 1
    published_version  integer NOT NULL DEFAULT 0,
    -- some instance has not been published yet
    pending            boolean NOT NULL DEFAULT false,
    last_received_at   timestamptz NOT NULL DEFAULT now(),
    -- a replica publishing this study holds it until then (several gateways, one publisher per study);
    -- after a failed publish it is the time of the next attempt (per-study backoff)
    claimed_until      timestamptz,
    attempts           integer NOT NULL DEFAULT 0,
    last_error         text NOT NULL DEFAULT ''
);

CREATE INDEX IF NOT EXISTS gateway_outbox_studies_due ON gateway_outbox_studies (last_received_at) WHERE pending;

CREATE TABLE IF NOT EXISTS gateway_outbox_instances (
    study_key          text NOT NULL REFERENCES gateway_outbox_studies (study_key) ON DELETE CASCADE,
    instance_key       text NOT NULL,
    seq                bigserial,
    modality           text NOT NULL,
    -- the Instance contract (pseudonymous key, claim check, view, size) as JSON
    instance           jsonb NOT NULL,
    -- NULL while pending, else the study_version that first carried it
    published_version  integer,
    received_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (study_key, instance_key)
);

-- Dead-letter replays (`radalign dlq replay`). A letter is handled once it was replayed (or given
-- up as poison); letters left out by an --error-type filter stay pending. A record that keeps
-- failing comes back as a new letter with the same payload: `replays` counts per payload digest,
-- so a poison record is replayed at most --max-replays times.
CREATE TABLE IF NOT EXISTS dead_letter_handled (
    dlq_topic       text NOT NULL,
    dlq_partition   integer NOT NULL,
    dlq_offset      bigint NOT NULL,
    stage           text NOT NULL,
    payload_sha256  text NOT NULL,
    outcome         text NOT NULL CHECK (outcome IN ('replayed', 'exhausted')),
    handled_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dlq_topic, dlq_partition, dlq_offset)
);

CREATE TABLE IF NOT EXISTS dead_letter_replay_counts (
    stage           text NOT NULL,
    payload_sha256  text NOT NULL,
    replays         integer NOT NULL DEFAULT 0,
    last_replayed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stage, payload_sha256)
);
