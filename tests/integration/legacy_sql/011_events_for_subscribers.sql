-- A job.created event is written only when an endpoint wants it.
--
-- emit_event() wrote every event, then one delivery per subscribed
-- endpoint. Nothing reads an event without deliveries except for
-- job.ended, whose row is also the record that a completion emitted its
-- one event (webhook_events_once). Every bulk request paid for a
-- job.created row nobody would read: building its payload, the row, two
-- index entries. In an intake run on the dev stack that was 0.3 ms a job,
-- a tenth of create_job().
--
-- An endpoint that subscribes later never got events from before its
-- subscription, so no delivery changes.
CREATE OR REPLACE FUNCTION emit_event(p_org uuid, p_type text, p_job uuid, p_run int, p_data json)
RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
    v_id uuid;
    v_endpoints uuid[];
BEGIN
    -- The subscribed endpoints, read once: they decide whether the event is
    -- written and receive its deliveries.
    SELECT array_agg(e.id) INTO v_endpoints FROM webhook_endpoints e
    WHERE e.organization_id = p_org AND p_type = ANY (e.events);
    IF v_endpoints IS NULL AND p_type <> 'job.ended' THEN
        RETURN NULL;
    END IF;
    v_id := gen_random_uuid();
    INSERT INTO webhook_events (id, organization_id, type, job_id, run, payload)
    VALUES (v_id, p_org, p_type, p_job, p_run,
            json_build_object('type', p_type, 'timestamp', rfc3339(now()), 'data', p_data)::text);
    IF v_endpoints IS NOT NULL THEN
        INSERT INTO webhook_deliveries (event_id, endpoint_id)
        SELECT v_id, e FROM unnest(v_endpoints) AS e;
        PERFORM pg_notify('bulkreg_webhooks', '');
    END IF;
    RETURN v_id;
END
$$;
