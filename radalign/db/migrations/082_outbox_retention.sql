-- Outbox retention (radalign/ingest/outbox.py `prune`): the gateway deletes published studies whose
-- last instance is older than RADALIGN_OUTBOX_RETENTION_DAYS, in batches; this index finds them
-- without scanning the whole table (the pending ones have their own index in 050).
CREATE INDEX IF NOT EXISTS gateway_outbox_studies_prunable ON gateway_outbox_studies (last_received_at) WHERE NOT pending;
