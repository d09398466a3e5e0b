-- The registration rules and the life of a registration written the plain
-- way, one entry at a time (docs/architecture.md, "The registration rules,
-- once"), which tests/integration/test_register_people.c installs as
-- temporary functions and compares session_apply()
-- (sql/functions/registration.sql) with.
--
-- Written apart from that file on purpose, and differently: every decision
-- reads the people rows (the seats held are counted, not kept in counters),
-- people are found by plain lookups rather than by an INSERT's conflict,
-- and the session's counters are counted again from the rows after every
-- entry. It shares with production only the tables, email_key()
-- (sql/migrations/003_email_key_and_job_scan.sql) and new_join_token().
--
-- outcome is 'succeeded' (with person_id) or 'failed' (with error_code).

-- Whether the session has a seat free now: registered and pending_approval
-- people hold one, a NULL capacity has no end.
CREATE FUNCTION pg_temp.seat_free_sequential(p_session uuid) RETURNS boolean
LANGUAGE sql AS $$
    SELECT s.capacity IS NULL
           OR (SELECT count(*) FROM people p
               WHERE p.session_id = s.id
                 AND p.registration_status IN ('registered', 'pending_approval')) < s.capacity
    FROM sessions s WHERE s.id = p_session
$$;

-- The session's counters, counted from its people.
CREATE FUNCTION pg_temp.recount_sequential(p_session uuid) RETURNS void
LANGUAGE sql AS $$
    UPDATE sessions s SET
        registrants_count = (SELECT count(*) FROM people p WHERE p.session_id = s.id
                             AND p.registration_status = 'registered'),
        pending_count = (SELECT count(*) FROM people p WHERE p.session_id = s.id
                         AND p.registration_status = 'pending_approval'),
        waitlist_count = (SELECT count(*) FROM people p WHERE p.session_id = s.id
                          AND p.registration_status = 'waitlisted'),
        people_count = (SELECT count(*) FROM people p WHERE p.session_id = s.id),
        updated_at = now()
    WHERE s.id = p_session
$$;

-- A seat freed (or the capacity grew): while a seat is free, the person
-- who joined the waiting list earliest takes it.
CREATE FUNCTION pg_temp.promote_sequential(p_session uuid) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_first uuid;
BEGIN
    WHILE pg_temp.seat_free_sequential(p_session) LOOP
        SELECT p.id INTO v_first FROM people p
        WHERE p.session_id = p_session AND p.registration_status = 'waitlisted'
        ORDER BY p.waitlist_seq LIMIT 1;
        EXIT WHEN NOT FOUND;
        UPDATE people SET
            registration_status = (SELECT CASE WHEN s.approval = 'manual'
                                               THEN 'pending_approval' ELSE 'registered' END
                                   FROM sessions s WHERE s.id = p_session),
            waitlist_seq = NULL, updated_at = now()
        WHERE id = v_first;
    END LOOP;
END
$$;

-- An action (approve, deny, cancel) on the person its email and/or
-- external_id name, both matching when both are given.
CREATE FUNCTION pg_temp.act_sequential(p_session uuid, p_action text, p_person jsonb,
                                       OUT outcome text, OUT error_code text,
                                       OUT person_id uuid)
LANGUAGE plpgsql AS $$
DECLARE
    v_email text := p_person->>'email';
    v_external text := p_person->>'external_id';
    x people;
    v_to text;
BEGIN
    outcome := 'failed';
    SELECT * INTO x FROM people p
    WHERE p.session_id = p_session
      AND (v_email IS NOT NULL OR v_external IS NOT NULL)
      AND (v_email IS NULL
           OR (p.email_conflict_of IS NULL AND email_key(p.email) = email_key(v_email)))
      AND (v_external IS NULL OR p.external_id = v_external);
    IF NOT FOUND THEN
        error_code := 'person_not_found'; RETURN;
    END IF;
    IF p_action IN ('approve', 'deny') AND x.registration_status = 'pending_approval' THEN
        v_to := CASE p_action WHEN 'approve' THEN 'registered' ELSE 'denied' END;
    ELSIF p_action = 'cancel' AND x.registration_status <> 'cancelled' THEN
        v_to := 'cancelled';
    ELSE
        error_code := 'invalid_transition'; RETURN;
    END IF;
    UPDATE people SET registration_status = v_to, waitlist_seq = NULL, updated_at = now()
    WHERE id = x.id;
    IF x.registration_status IN ('registered', 'pending_approval') AND v_to <> 'registered' THEN
        PERFORM pg_temp.promote_sequential(p_session);
    END IF;
    outcome := 'succeeded';
    person_id := x.id;
END
$$;

-- The attributes an entry gives replace the person's (override, or a
-- cancelled or denied person registering anew); identity stays.
CREATE FUNCTION pg_temp.take_sequential(p_id uuid, p jsonb, p_task uuid) RETURNS void
LANGUAGE sql AS $$
    UPDATE people SET
        first_name   = CASE WHEN p ? 'first_name' THEN p->>'first_name' ELSE first_name END,
        last_name    = CASE WHEN p ? 'last_name' THEN p->>'last_name' ELSE last_name END,
        fields       = CASE WHEN p ? 'fields' THEN p->'fields' ELSE fields END,
        referrer     = CASE WHEN p ? 'referrer' THEN p->>'referrer' ELSE referrer END,
        utm_source   = CASE WHEN p ? 'utm_source' THEN p->>'utm_source' ELSE utm_source END,
        utm_medium   = CASE WHEN p ? 'utm_medium' THEN p->>'utm_medium' ELSE utm_medium END,
        utm_campaign = CASE WHEN p ? 'utm_campaign' THEN p->>'utm_campaign' ELSE utm_campaign END,
        utm_term     = CASE WHEN p ? 'utm_term' THEN p->>'utm_term' ELSE utm_term END,
        utm_content  = CASE WHEN p ? 'utm_content' THEN p->>'utm_content' ELSE utm_content END,
        reference    = CASE WHEN p ? 'reference' THEN p->>'reference' ELSE reference END,
        track_id     = CASE WHEN p ? 'track_id' THEN (p->>'track_id')::int ELSE track_id END,
        center_id    = CASE WHEN p ? 'center_id' THEN p->>'center_id' ELSE center_id END,
        task_id      = p_task,
        updated_at   = now()
    WHERE id = p_id
$$;

-- One entry: p_action 'register' (with its override, auto_approve and
-- waitlist flags) or an action. The window binds registrations only.
CREATE FUNCTION pg_temp.register_person_sequential(p_session uuid, p_action text,
                                                   p_person jsonb, p_override boolean,
                                                   p_auto_approve boolean, p_waitlist boolean,
                                                   p_task uuid, OUT outcome text,
                                                   OUT error_code text, OUT person_id uuid)
LANGUAGE plpgsql AS $$
DECLARE
    s sessions;
    v_email text := p_person->>'email';
    v_external text := p_person->>'external_id';
    by_email people;
    by_external people;
    x people;
    v_status text;
    v_seq int;
BEGIN
    outcome := 'failed';
    SELECT * INTO s FROM sessions WHERE id = p_session FOR UPDATE;
    IF NOT FOUND THEN
        error_code := 'session_not_found'; RETURN;
    END IF;
    IF p_action <> 'register' THEN
        SELECT * INTO outcome, error_code, person_id
        FROM pg_temp.act_sequential(p_session, p_action, p_person);
        PERFORM pg_temp.recount_sequential(p_session);
        RETURN;
    END IF;
    IF (s.registration_opens_at IS NOT NULL AND now() < s.registration_opens_at)
       OR (s.registration_closes_at IS NOT NULL AND now() >= s.registration_closes_at) THEN
        error_code := 'registration_closed'; RETURN;
    END IF;
    IF jsonb_typeof(p_person->'track_id') = 'number'
       AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(s.tracks) t
                       WHERE (t->>'id')::numeric = (p_person->>'track_id')::numeric) THEN
        error_code := 'unknown_track'; RETURN;
    END IF;

    SELECT * INTO by_email FROM people p
    WHERE p.session_id = p_session AND p.email_conflict_of IS NULL
      AND email_key(p.email) = email_key(v_email);
    SELECT * INTO by_external FROM people p
    WHERE p.session_id = p_session AND p.external_id = v_external;
    IF by_email.id IS NOT NULL AND by_external.id IS NOT NULL AND by_email.id <> by_external.id
    THEN
        error_code := 'already_registered'; RETURN;
    END IF;
    x := CASE WHEN by_email.id IS NOT NULL THEN by_email ELSE by_external END;
    IF x.id IS NOT NULL AND x.registration_status NOT IN ('cancelled', 'denied') THEN
        IF NOT p_override THEN
            error_code := 'already_registered'; RETURN;
        END IF;
        PERFORM pg_temp.take_sequential(x.id, p_person, p_task);
        outcome := 'succeeded'; person_id := x.id; RETURN;
    END IF;

    -- A newcomer, or a cancelled or denied person registering anew.
    IF p_waitlist THEN
        v_status := 'waitlisted';
    ELSIF pg_temp.seat_free_sequential(p_session) THEN
        v_status := CASE WHEN s.approval = 'manual' AND NOT p_auto_approve
                         THEN 'pending_approval' ELSE 'registered' END;
    ELSIF s.waitlist THEN
        v_status := 'waitlisted';
    ELSE
        error_code := 'session_full'; RETURN;
    END IF;
    IF v_status = 'waitlisted' THEN
        UPDATE sessions SET waitlist_seq = waitlist_seq + 1 WHERE id = p_session
        RETURNING waitlist_seq INTO v_seq;
    END IF;
    IF x.id IS NOT NULL THEN
        PERFORM pg_temp.take_sequential(x.id, p_person, p_task);
        UPDATE people SET registration_status = v_status, waitlist_seq = v_seq
        WHERE id = x.id;
        person_id := x.id;
    ELSE
        INSERT INTO people (session_id, position, email, external_id, first_name, last_name,
                            fields, referrer, utm_source, utm_medium, utm_campaign, utm_term,
                            utm_content, reference, track_id, center_id, registration_status,
                            waitlist_seq, join_token, task_id)
        VALUES (p_session, (SELECT count(*) FROM people p WHERE p.session_id = p_session),
                v_email, v_external, p_person->>'first_name', p_person->>'last_name',
                COALESCE(p_person->'fields', '[]'::jsonb), p_person->>'referrer',
                p_person->>'utm_source', p_person->>'utm_medium', p_person->>'utm_campaign',
                p_person->>'utm_term', p_person->>'utm_content', p_person->>'reference',
                (p_person->>'track_id')::int, p_person->>'center_id', v_status, v_seq,
                new_join_token(), p_task)
        RETURNING id INTO person_id;
    END IF;
    PERFORM pg_temp.recount_sequential(p_session);
    outcome := 'succeeded';
END
$$;

-- PATCH of a session's capacity, the plain way: the new capacity, then the
-- waiting list takes the seats it opened.
CREATE FUNCTION pg_temp.capacity_sequential(p_session uuid, p_capacity int) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE sessions SET capacity = p_capacity, updated_at = now() WHERE id = p_session;
    PERFORM pg_temp.promote_sequential(p_session);
    PERFORM pg_temp.recount_sequential(p_session);
END
$$;
