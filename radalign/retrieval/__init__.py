"""Retrieval: similar historical cases from the case store (pgvector), for the draft to rest on."""
