-- The requests that change people and sessions one at a time: the
-- synchronous registration, PATCH and DELETE of a person, PATCH and DELETE
-- of a session (docs/openapi.yaml, Sessions and People). Each locks the
-- session row as every writer of its people does, and applies the rules of
-- sql/functions/registration.sql: no rule is written twice.
--
-- A function file: applied after the schema migrations, again whenever its
-- text changes; see docs/architecture.md, "SQL layout".

-- The session of the organization, locked for a change of its people.
CREATE OR REPLACE FUNCTION session_locked(p_org uuid, p_session uuid) RETURNS sessions
LANGUAGE sql AS $$
    SELECT * FROM sessions WHERE id = p_session AND organization_id = p_org FOR NO KEY UPDATE
$$;

-- POST /v1/sessions/:id/people: outcome 'succeeded' with the person as it
-- now stands, 'failed' with the task error code (session_not_found when the
-- session is not the organization's).
CREATE OR REPLACE FUNCTION register_one(p_org uuid, p_session uuid, p_person jsonb,
                                        p_override boolean, p_auto_approve boolean,
                                        p_waitlist boolean, p_join_base text,
                                        OUT outcome text, OUT error_code text, OUT person json)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    PERFORM 1 FROM sessions WHERE id = p_session AND organization_id = p_org;
    IF NOT FOUND THEN
        outcome := 'failed'; error_code := 'session_not_found'; RETURN;
    END IF;
    r := person_apply(p_session, 'register', p_person, p_override, p_auto_approve, p_waitlist,
                      NULL);
    outcome := r.outcome;
    error_code := r.error_code;
    SELECT person_resource(p, p_join_base) INTO person FROM people p WHERE p.id = r.person_id;
END
$$;

-- PATCH /v1/sessions/:id/people/:person_id. p_attrs holds the attributes
-- to change; registration_status, when it differs from the person's, is a
-- transition (person_transition()). Everything is checked before anything
-- is written. outcome: 'updated', 'not_found', or a failure code:
-- already_registered (the new email or external_id is another person's),
-- unknown_track, unidentified (neither email nor external_id would be
-- left), invalid_transition, session_full.
CREATE OR REPLACE FUNCTION person_patch(p_org uuid, p_session uuid, p_person uuid,
                                        p_attrs jsonb, p_join_base text,
                                        OUT outcome text, OUT person json)
LANGUAGE plpgsql AS $$
DECLARE
    s sessions;
    x people;
    r record;
    v_email text;
    v_external text;
BEGIN
    s := session_locked(p_org, p_session);
    SELECT * INTO x FROM people WHERE id = p_person AND session_id = s.id;
    IF NOT FOUND THEN
        outcome := 'not_found'; RETURN;
    END IF;
    v_email := CASE WHEN p_attrs ? 'email' THEN p_attrs->>'email' ELSE x.email END;
    v_external := CASE WHEN p_attrs ? 'external_id' THEN p_attrs->>'external_id'
                       ELSE x.external_id END;
    IF v_email IS NULL AND v_external IS NULL THEN
        outcome := 'unidentified'; RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM people o
               WHERE o.session_id = s.id AND o.id <> x.id
                 AND ((email_key(o.email) = email_key(v_email) AND o.email_conflict_of IS NULL)
                      OR o.external_id = v_external)) THEN
        outcome := 'already_registered'; RETURN;
    END IF;
    IF coalesce(jsonb_typeof(p_attrs->'track_id'), 'null') <> 'null'
       AND NOT s.tracks @> jsonb_build_array(jsonb_build_object('id', p_attrs->'track_id')) THEN
        outcome := 'unknown_track'; RETURN;
    END IF;
    IF p_attrs->>'registration_status' IS DISTINCT FROM x.registration_status
       AND p_attrs ? 'registration_status' THEN
        r := person_transition(s, x.id, p_attrs->>'registration_status');
        IF r.outcome <> 'succeeded' THEN
            outcome := r.error_code; RETURN;
        END IF;
        PERFORM session_store_counts(r.s);
    END IF;
    PERFORM person_take_fields(x.id, p_attrs, NULL);
    UPDATE people SET email = v_email, external_id = v_external WHERE id = x.id;
    outcome := 'updated';
    SELECT person_resource(p, p_join_base) INTO person FROM people p WHERE p.id = x.id;
END
$$;

-- DELETE /v1/sessions/:id/people/:person_id, or ?email= / ?external_id=:
-- the registration is cancelled (a seat it held goes to the waiting list);
-- a person already cancelled is returned as is. outcome: 'cancelled' or
-- 'not_found'.
CREATE OR REPLACE FUNCTION person_cancel(p_org uuid, p_session uuid, p_person uuid,
                                         p_email text, p_external text, p_join_base text,
                                         OUT outcome text, OUT person json)
LANGUAGE plpgsql AS $$
DECLARE
    s sessions;
    x people;
    r record;
BEGIN
    s := session_locked(p_org, p_session);
    SELECT * INTO x FROM people p
    WHERE p.session_id = s.id
      AND (p_person IS NULL OR p.id = p_person)
      AND (p_email IS NULL OR (email_key(p.email) = email_key(p_email)
                               AND p.email_conflict_of IS NULL))
      AND (p_external IS NULL OR p.external_id = p_external);
    IF NOT FOUND OR num_nonnulls(p_person, p_email, p_external) = 0 THEN
        outcome := 'not_found'; RETURN;
    END IF;
    IF x.registration_status <> 'cancelled' THEN
        r := person_transition(s, x.id, 'cancelled');
        PERFORM session_store_counts(r.s);
    END IF;
    outcome := 'cancelled';
    SELECT person_resource(p, p_join_base) INTO person FROM people p WHERE p.id = x.id;
END
$$;

-- PATCH /v1/sessions/:id: any of the session's attributes. A capacity under
-- the seats taken is refused, as is removing a track that people (other
-- than cancelled or denied ones) hold; raising the capacity (or making it
-- unlimited) promotes waitlisted people at once. outcome: 'updated',
-- 'not_found', 'capacity_below_registrants', 'track_held', 'invalid_window'.
CREATE OR REPLACE FUNCTION session_patch(p_org uuid, p_session uuid, p_attrs jsonb,
                                         OUT outcome text, OUT session json)
LANGUAGE plpgsql AS $$
DECLARE
    s sessions;
    -- null tracks are none, as at creation: a JSON null is no SQL NULL, and
    -- would neither compare as a list nor pass sessions_tracks_bounded.
    a jsonb := CASE WHEN p_attrs->'tracks' = 'null'::jsonb THEN p_attrs || '{"tracks": []}'
                    ELSE p_attrs END;
BEGIN
    s := session_locked(p_org, p_session);
    IF s.id IS NULL THEN
        outcome := 'not_found'; RETURN;
    END IF;
    IF a ? 'capacity' AND (a->>'capacity')::int < s.registrants_count + s.pending_count THEN
        outcome := 'capacity_below_registrants'; RETURN;
    END IF;
    IF a ? 'tracks' AND EXISTS (
           SELECT 1 FROM people p
           WHERE p.session_id = s.id AND p.track_id IS NOT NULL
             AND p.registration_status NOT IN ('cancelled', 'denied')
             AND NOT a->'tracks' @> jsonb_build_array(jsonb_build_object('id', p.track_id))) THEN
        outcome := 'track_held'; RETURN;
    END IF;
    IF (CASE WHEN a ? 'registration_opens_at' THEN (a->>'registration_opens_at')::timestamptz
             ELSE s.registration_opens_at END)
       > (CASE WHEN a ? 'registration_closes_at' THEN (a->>'registration_closes_at')::timestamptz
               ELSE s.registration_closes_at END) THEN
        outcome := 'invalid_window'; RETURN;
    END IF;
    UPDATE sessions SET
        title = CASE WHEN a ? 'title' THEN a->>'title' ELSE title END,
        starts_at = CASE WHEN a ? 'starts_at' THEN (a->>'starts_at')::timestamptz ELSE starts_at END,
        capacity = CASE WHEN a ? 'capacity' THEN (a->>'capacity')::int ELSE capacity END,
        registration_opens_at = CASE WHEN a ? 'registration_opens_at'
                                     THEN (a->>'registration_opens_at')::timestamptz
                                     ELSE registration_opens_at END,
        registration_closes_at = CASE WHEN a ? 'registration_closes_at'
                                      THEN (a->>'registration_closes_at')::timestamptz
                                      ELSE registration_closes_at END,
        approval = CASE WHEN a ? 'approval' THEN a->>'approval' ELSE approval END,
        waitlist = CASE WHEN a ? 'waitlist' THEN (a->>'waitlist')::boolean ELSE waitlist END,
        tracks = CASE WHEN a ? 'tracks' THEN coalesce(a->'tracks', '[]') ELSE tracks END,
        updated_at = now()
    WHERE id = s.id
    RETURNING * INTO s;
    IF a ? 'capacity' THEN
        s := session_promote(s);
        PERFORM session_store_counts(s);
    END IF;
    outcome := 'updated';
    SELECT session_resource(x) INTO session FROM sessions x WHERE x.id = s.id;
END
$$;

-- DELETE /v1/sessions/:id: job_in_progress while a job of the session is
-- processing, else the session goes with its people and jobs. outcome:
-- 'deleted', 'not_found', 'job_in_progress'.
CREATE OR REPLACE FUNCTION session_delete(p_org uuid, p_session uuid, OUT outcome text)
LANGUAGE plpgsql AS $$
BEGIN
    -- FOR UPDATE: a job being created for the session (create_job() holds
    -- FOR KEY SHARE) commits first and is seen processing below.
    PERFORM 1 FROM sessions WHERE id = p_session AND organization_id = p_org FOR UPDATE;
    IF NOT FOUND THEN
        outcome := 'not_found'; RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM jobs WHERE session_id = p_session AND status = 'processing') THEN
        outcome := 'job_in_progress'; RETURN;
    END IF;
    DELETE FROM sessions WHERE id = p_session;
    outcome := 'deleted';
END
$$;
