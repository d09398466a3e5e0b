-- Webhook endpoints: creation under the per-organization cap.
--
-- A function file: applied after the schema migrations, again whenever its
-- text changes; see docs/architecture.md, "SQL layout".

-- Inserts an endpoint unless the organization already has p_max of them
-- (disabled ones count until deleted); returns the new row, or no row when
-- the cap is reached (POST /v1/webhooks answers 422 too_many_endpoints).
--
-- Race-safe: the organization's row is locked first (FOR NO KEY UPDATE, so
-- inserts that merely reference the organization are not blocked), and the
-- count is a later statement of this function, which in READ COMMITTED sees
-- every endpoint committed by a concurrent creation that held the lock
-- before us. One statement could not: its snapshot predates the lock wait.
CREATE OR REPLACE FUNCTION webhook_endpoint_create(p_org uuid, p_url text, p_events text[],
                                                   p_secret text, p_max int)
RETURNS SETOF webhook_endpoints
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM organizations WHERE id = p_org FOR NO KEY UPDATE;
    IF (SELECT count(*) FROM webhook_endpoints WHERE organization_id = p_org) >= p_max THEN
        RETURN;
    END IF;
    RETURN QUERY
    INSERT INTO webhook_endpoints (organization_id, url, events, secret)
    VALUES (p_org, p_url, p_events, p_secret)
    RETURNING *;
END
$$;

-- 410 Gone: the endpoint is disabled (emit_event() writes no more deliveries
-- for it) and its pending deliveries fail. The row lock first waits for the
-- events being written with a delivery for it (they hold it FOR KEY SHARE);
-- the deliveries are then failed by a later statement, whose snapshot sees
-- what those transactions committed, so none stays pending behind a
-- disabled endpoint.
CREATE OR REPLACE FUNCTION webhook_endpoint_disable(p_id uuid)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM webhook_endpoints WHERE id = p_id FOR UPDATE;
    UPDATE webhook_endpoints SET disabled_at = coalesce(disabled_at, now()), leased_until = NULL
    WHERE id = p_id;
    UPDATE webhook_deliveries SET status = 'failed', locked_until = NULL, updated_at = now()
    WHERE endpoint_id = p_id AND status = 'pending';
END
$$;
