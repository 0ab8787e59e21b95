"""Mirrors DCP's read models from the local SQLite file to PostgreSQL or Supabase.

SQLite stays the source of truth. The replicator polls the projection tables for rows whose
`last_seq` is past its checkpoint, through its own read-only connection, and sends them in
bounded batches to a sink:

- `PostgresSink`: a direct connection; batch and checkpoint commit in one transaction and rows
  only move forward, so the effect is exactly once.
- `SupabaseSink`: PostgREST through supabase-py; at least once with idempotent rows, the
  checkpoint kept locally and stored only after the sink acknowledged.
"""
