-- Webhook endpoints that said 410 Gone, and the deliverer's per-endpoint lease
-- (docs/architecture.md, "Webhooks").
--
-- disabled_at: set when a receiver answers 410 Gone (Standard Webhooks: the
-- endpoint no longer exists). A disabled endpoint gets no new deliveries
-- (emit_event()), its pending ones are failed, and the deliverer never
-- claims for it; deleting it is the way out.
--
-- leased_until: while a deliverer has an attempt in flight to the endpoint,
-- set to that attempt's lease end. The claim skips leased endpoints, so at
-- most one attempt per endpoint is in flight across all workers, and a
-- receiver that hangs holds one delivery slot, never all of them. Cleared
-- when the attempt is recorded; a worker that dies leaves it to expire.
ALTER TABLE webhook_endpoints
    ADD COLUMN disabled_at timestamptz,
    ADD COLUMN leased_until timestamptz;

-- The claim reads, per endpoint, its earliest pending delivery.
CREATE INDEX webhook_deliveries_endpoint_due ON webhook_deliveries (endpoint_id, next_attempt_at)
    WHERE status = 'pending';
