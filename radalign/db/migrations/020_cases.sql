-- Case store: historical chest X-ray reports that ground the drafts (RadAlign retrieval).
--
-- One row per report ("case"). Identifiers are pseudonyms only: patient_key is an HMAC of the
-- provider's patient id (`pt-<hex16>`), case_key is a pseudonym or a public corpus id.
--
-- labels        CheXpert observation name -> 'present' | 'absent' | 'uncertain' (unmentioned
--               observations are left out), as written by the rule-based labeler.
-- label_vector  the same labels as smallint[14] in CheXpert's order (1 present, 0 absent,
--               -1 uncertain, NULL unmentioned): re-ranking reads 14 small ints per candidate
--               instead of parsing jsonb.
-- content_hash  sha256 of everything a row is derived from (texts, labels, encoder, image ref):
--               upserts rewrite a row only when it differs, so re-ingesting changes nothing.
CREATE TABLE IF NOT EXISTS cases (
    case_key        text PRIMARY KEY,
    patient_key     text NOT NULL,
    study_key       text,
    view            text,
    source          text NOT NULL,
    findings        text NOT NULL DEFAULT '',
    impression      text NOT NULL DEFAULT '',
    labels          jsonb NOT NULL DEFAULT '{}'::jsonb,
    label_vector    smallint[] NOT NULL,
    text_embedding  vector(384) NOT NULL,
    image_embedding vector(384),
    content_hash    text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT cases_label_vector_len CHECK (cardinality(label_vector) = 14),
    CONSTRAINT cases_label_vector_values CHECK (array_remove(label_vector, NULL) <@ ARRAY[-1, 0, 1]::smallint[])
);

-- Retrieval excludes the query's own patient; stats group by corpus.
CREATE INDEX IF NOT EXISTS cases_patient_key_idx ON cases (patient_key);
CREATE INDEX IF NOT EXISTS cases_source_idx ON cases (source);

-- HNSW over cosine distance (the encoders' vectors are L2-normalised).
-- m = 16, ef_construction = 64 (pgvector's defaults), kept because the measurements say so
-- (benchmarks/pgvector_bench.py, 100k clustered 384-d vectors, 2 cores, shared_buffers 1GB):
--  * recall@5 0.967 at ef_search 100 (0.984 at 200) with p99 6.9 ms: the service's target
--    (recall >= 0.95, p99 <= 10 ms) is met, so a denser graph buys nothing it needs;
--  * build cost grows roughly with m * ef_construction: 100k rows build in ~60 s here; doubling
--    either roughly doubles every rebuild (restore, re-embedding with a new encoder);
--  * size: the graph is ~1.25x the vectors' own bytes (195 MB index for 157 MB of table at
--    100k); larger m grows it linearly, and the index must fit in shared_buffers to be fast
--    (with the 128 MB default, p50 at 100k was 4-7 ms instead of 1-1.5 ms).
-- Query-time recall is tuned per query with hnsw.ef_search (the store sets it per transaction).
CREATE INDEX IF NOT EXISTS cases_text_embedding_hnsw
    ON cases USING hnsw (text_embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64);

-- Image embeddings exist only for cases whose images were embedded; the partial index stays
-- small and image->image queries (which repeat the predicate) use it.
CREATE INDEX IF NOT EXISTS cases_image_embedding_hnsw
    ON cases USING hnsw (image_embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)
    WHERE image_embedding IS NOT NULL;
