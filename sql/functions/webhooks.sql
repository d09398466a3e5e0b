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

-- The resource of delivery d (an attempt's parent): its event, endpoint,
-- status, attempts so far and when the next one is due.
CREATE OR REPLACE FUNCTION webhook_delivery_resource(d webhook_deliveries) RETURNS json
LANGUAGE sql STABLE AS $$
    SELECT json_build_object('type', 'webhook_deliveries', 'id', d.id,
        'attributes', json_build_object(
            'event_id', d.event_id, 'event_type', ev.type, 'webhook_id', d.endpoint_id,
            'status', d.status, 'attempts', d.attempts,
            'next_attempt_at', CASE WHEN d.status = 'pending' THEN rfc3339(d.next_attempt_at) END,
            'created_at', rfc3339(d.created_at), 'updated_at', rfc3339(d.updated_at)),
        'links', json_build_object('webhook', '/v1/webhooks/' || d.endpoint_id,
                                   'attempts', '/v1/webhooks/' || d.endpoint_id || '/deliveries'))
    FROM webhook_events ev WHERE ev.id = d.event_id
$$;

-- POST /v1/webhooks/:id/deliveries/:delivery_id/retry, and the console's
-- re-send (docs/console.md): the delivery becomes pending and due now, and
-- the deliverers are woken (emit_event's channel), so it is sent again at
-- once with its event's webhook-id, whatever its status. Should that
-- attempt fail, the retry schedule goes on from the delivery's attempts so
-- far: a failed delivery, whose schedule is spent, is failed again. An
-- endpoint disabled by a 410 Gone takes no delivery.
-- outcome: 'retried', 'disabled' or 'not_found' (no such delivery of that
-- endpoint of p_org); delivery is its resource after the change.
CREATE OR REPLACE FUNCTION webhook_delivery_retry(p_org uuid, p_endpoint uuid, p_delivery uuid,
                                                  OUT outcome text, OUT delivery json)
LANGUAGE plpgsql AS $$
DECLARE
    e webhook_endpoints;
    d webhook_deliveries;
BEGIN
    -- FOR KEY SHARE, as emit_event(): a 410 disabling the endpoint now either
    -- is seen here or fails the delivery after this commits.
    SELECT * INTO e FROM webhook_endpoints WHERE id = p_endpoint AND organization_id = p_org
    FOR KEY SHARE;
    IF NOT FOUND THEN
        outcome := 'not_found'; RETURN;
    END IF;
    SELECT * INTO d FROM webhook_deliveries WHERE id = p_delivery AND endpoint_id = p_endpoint
    FOR UPDATE;
    IF NOT FOUND THEN
        outcome := 'not_found'; RETURN;
    END IF;
    IF e.disabled_at IS NOT NULL THEN
        outcome := 'disabled'; delivery := webhook_delivery_resource(d); RETURN;
    END IF;
    UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = now(), updated_at = now()
    WHERE id = p_delivery RETURNING * INTO d;
    PERFORM pg_notify('bulkreg_webhooks', '');
    outcome := 'retried';
    delivery := webhook_delivery_resource(d);
END
$$;
