-- Per-destination delivery queue (issue 26): the delivery stage hands each report version to
-- one row per destination, then lets Kafka commit its offset; a worker per destination drains its
-- own rows (STAT first), so a hung PACS delays only the PACS's rows. Pseudonyms and destination
-- names only; `payload` is the consumed record's value (a pseudonymous contract), kept for the
-- send and, on expiry, for the dead letter that `radalign dlq replay delivery` re-publishes.
--
-- work_id       sha256 of the payload (a redelivered record maps to the same row)
-- priority      0 STAT, 1 routine: a destination's worker takes STAT rows first
-- status        queued (to send; `not_before` is the next attempt, or the lease of a worker that
--               claimed it) | dead (dead-lettered; requeued when the destination comes back)
-- reason_class  why it was dead-lettered: timeout | unavailable | circuit_open | refused | invalid
CREATE TABLE IF NOT EXISTS delivery_queue (
    destination   text NOT NULL,
    work_id       text NOT NULL,
    report_id     text NOT NULL,
    study_key     text NOT NULL,
    priority      smallint NOT NULL CHECK (priority IN (0, 1)),
    source_topic  text NOT NULL,
    payload       bytea NOT NULL,
    status        text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'dead')),
    reason_class  text NOT NULL DEFAULT '',
    attempts      integer NOT NULL DEFAULT 0,
    last_error    text NOT NULL DEFAULT '',
    enqueued_at   timestamptz NOT NULL DEFAULT now(),
    not_before    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (destination, work_id)
);

CREATE INDEX IF NOT EXISTS delivery_queue_due ON delivery_queue (destination, priority, enqueued_at) WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS delivery_queue_dead ON delivery_queue (destination) WHERE status = 'dead';
