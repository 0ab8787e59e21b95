-- The indexes by which a decision finds a settled top-up that left a bounded state's memory,
-- by the gateway payment it holds or by its invoice (docs/design.md, "Bounded memory"). A
-- ledger created before them gets them on its next open (002_projections.sql is applied once);
-- its topups table gets the idempotency_key column at its next catch-up
-- (dcp_app.readside.missing_columns). Idempotent: safe to apply again.
CREATE INDEX IF NOT EXISTS topups_payment ON topups (payment_id);
CREATE INDEX IF NOT EXISTS topups_invoice ON topups (invoice_id);
