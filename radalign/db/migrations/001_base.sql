-- Base: the pgvector extension every later migration (case store, retrieval) relies on.
CREATE EXTENSION IF NOT EXISTS vector;
