"""Case store (RadAlign's retrieval knowledge base): historical reports with their CheXpert labels
and embeddings in PostgreSQL + pgvector. Patient and case keys come from `radalign.pseudonymizer`.

Modules: `labels` (label maps <-> compact vectors), `case` (records,
candidates), `store` (`CaseStore`: idempotent upsert, HNSW search), `ingest` (IU / CSV -> store),
`cli` (`kb_app`: `radalign kb ingest iu|csv`, `radalign kb stats`).
"""
