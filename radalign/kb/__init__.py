"""Case store (RadAlign's retrieval knowledge base): historical reports with their CheXpert labels
and embeddings in PostgreSQL + pgvector.

Modules: `labels` (label maps <-> compact vectors), `pseudonym` (HMAC keys), `case` (records,
candidates), `store` (`CaseStore`: idempotent upsert, HNSW search), `ingest` (IU / CSV -> store),
`cli` (`kb_app`: `radalign kb ingest iu|csv`, `radalign kb stats`).
"""
