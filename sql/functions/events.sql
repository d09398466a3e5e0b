-- The webhook outbox's writer.
--
-- A function file: applied after the schema migrations, again whenever its
-- text changes; see docs/architecture.md, "SQL layout".

-- Writes an outbox event about a job (p_job, p_run) or a person (p_person)
-- and one pending delivery per subscribed endpoint, in the caller's
-- transaction. The unique index webhook_events_once refuses
-- a second event of a type for the same run of a job: exactly one job.ended
-- per completion.
--
-- A job.created event is written only when an endpoint wants it: nothing
-- reads an event without deliveries except job.ended, whose row is also the
-- record that a completion emitted its one event. An endpoint that
-- subscribes later never gets events from before its subscription, and a
-- disabled one (it answered 410 Gone) gets none at all.
CREATE OR REPLACE FUNCTION emit_event(p_org uuid, p_type text, p_job uuid, p_run int, p_data json,
                                      p_person uuid)
RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
    v_id uuid;
    v_endpoints uuid[];
BEGIN
    -- The subscribed endpoints, read once: they decide whether the event is
    -- written and receive its deliveries. FOR KEY SHARE (which only FOR
    -- UPDATE waits for) orders this against webhook_endpoint_disable(): an
    -- endpoint it is disabling is read again once it commits, and is then
    -- left out; one it waits for has its deliveries failed after we commit.
    SELECT array_agg(s.id) INTO v_endpoints
    FROM (SELECT e.id FROM webhook_endpoints e
          WHERE e.organization_id = p_org AND p_type = ANY (e.events) AND e.disabled_at IS NULL
          FOR KEY SHARE) s;
    IF v_endpoints IS NULL AND p_type <> 'job.ended' THEN
        RETURN NULL;
    END IF;
    v_id := gen_random_uuid();
    INSERT INTO webhook_events (id, organization_id, type, job_id, person_id, run, payload)
    VALUES (v_id, p_org, p_type, p_job, p_person, p_run,
            json_build_object('type', p_type, 'timestamp', rfc3339(now()), 'data', p_data)::text);
    IF v_endpoints IS NOT NULL THEN
        INSERT INTO webhook_deliveries (event_id, endpoint_id)
        SELECT v_id, e FROM unnest(v_endpoints) AS e;
        PERFORM pg_notify('bulkreg_webhooks', '');
    END IF;
    RETURN v_id;
END
$$;

-- person.updated: a person's registration_status changed other than by the
-- request that created them (approval, denial, cancellation, promotion, a
-- registration anew). The data is the person resource as it now stands,
-- with the previous status in its meta; the join URL's base is the
-- process's BULKREG_JOIN_URL_BASE, which every connection carries as
-- bulkreg.join_url_base (common/db.c). Nothing is built when no endpoint
-- of the organization subscribes.
CREATE OR REPLACE FUNCTION emit_person_updated(p_org uuid, p_person uuid, p_previous text)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM webhook_endpoints e
                   WHERE e.organization_id = p_org AND 'person.updated' = ANY (e.events)
                     AND e.disabled_at IS NULL) THEN
        RETURN;
    END IF;
    -- The resource as the API writes it (its members in their order), and
    -- the meta.
    PERFORM emit_event(p_org, 'person.updated', NULL, 0,
                       (SELECT json_build_object('type', r->'type', 'id', r->'id',
                                                 'attributes', r->'attributes',
                                                 'meta', json_build_object('previous_status',
                                                                           p_previous))
                        FROM people p,
                             person_resource(p, coalesce(current_setting('bulkreg.join_url_base',
                                                                         true), '')) AS r
                        WHERE p.id = p_person),
                       p_person);
END
$$;
