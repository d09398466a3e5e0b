-- The registration rules as first written, one person at a time, which
-- tests/integration/test_register_people.c installs as a temporary function
-- and compares register_people() (sql/functions/registration.sql) with.
-- Unchanged from the original but for what makes two addresses one:
-- email_key() (sql/migrations/001_baseline.sql) where it said lower(), and
-- the partial unique index people_session_email as the conflict target.
--
-- outcome is 'succeeded' or 'failed' (with error_code). Seats are taken by
-- a conditional UPDATE of the session row, so capacity holds under any
-- concurrency; the row stays locked only from that UPDATE to the end of the
-- caller's transaction.
CREATE FUNCTION pg_temp.register_person_sequential(p_session uuid, p_person jsonb,
                                                   p_override boolean, p_auto_approve boolean,
                                                   p_task uuid, OUT outcome text,
                                                   OUT error_code text, OUT person_id uuid)
LANGUAGE plpgsql AS $$
DECLARE
    s sessions;
    v_status text;
    v_pos int;
    v_id uuid;
BEGIN
    SELECT * INTO s FROM sessions WHERE id = p_session;
    IF NOT FOUND THEN
        outcome := 'failed'; error_code := 'session_not_found'; RETURN;
    END IF;
    IF (s.registration_opens_at IS NOT NULL AND now() < s.registration_opens_at)
       OR (s.registration_closes_at IS NOT NULL AND now() >= s.registration_closes_at) THEN
        outcome := 'failed'; error_code := 'registration_closed'; RETURN;
    END IF;

    FOR attempt IN 1..2 LOOP
        SELECT p.id INTO v_id FROM people p
        WHERE p.session_id = p_session AND email_key(p.email) = email_key(p_person->>'email')
        FOR UPDATE;
        IF FOUND THEN
            IF NOT p_override THEN
                outcome := 'failed'; error_code := 'already_registered'; RETURN;
            END IF;
            UPDATE people SET
                first_name   = CASE WHEN p_person ? 'first_name' THEN p_person->>'first_name' ELSE first_name END,
                last_name    = CASE WHEN p_person ? 'last_name' THEN p_person->>'last_name' ELSE last_name END,
                fields       = CASE WHEN p_person ? 'fields' THEN p_person->'fields' ELSE fields END,
                referrer     = CASE WHEN p_person ? 'referrer' THEN p_person->>'referrer' ELSE referrer END,
                utm_source   = CASE WHEN p_person ? 'utm_source' THEN p_person->>'utm_source' ELSE utm_source END,
                utm_medium   = CASE WHEN p_person ? 'utm_medium' THEN p_person->>'utm_medium' ELSE utm_medium END,
                utm_campaign = CASE WHEN p_person ? 'utm_campaign' THEN p_person->>'utm_campaign' ELSE utm_campaign END,
                utm_term     = CASE WHEN p_person ? 'utm_term' THEN p_person->>'utm_term' ELSE utm_term END,
                utm_content  = CASE WHEN p_person ? 'utm_content' THEN p_person->>'utm_content' ELSE utm_content END,
                reference    = CASE WHEN p_person ? 'reference' THEN p_person->>'reference' ELSE reference END,
                task_id      = p_task,
                updated_at   = now()
            WHERE id = v_id;
            outcome := 'succeeded'; person_id := v_id; RETURN;
        END IF;

        v_status := CASE WHEN s.approval = 'manual' AND NOT p_auto_approve
                         THEN 'pending_approval' ELSE 'registered' END;
        UPDATE sessions SET
            registrants_count = registrants_count + (v_status = 'registered')::int,
            pending_count = pending_count + (v_status = 'pending_approval')::int,
            people_count = people_count + 1,
            updated_at = now()
        WHERE id = p_session
          AND (capacity IS NULL OR registrants_count + pending_count < capacity)
        RETURNING people_count INTO v_pos;
        IF NOT FOUND THEN
            IF NOT s.waitlist THEN
                outcome := 'failed'; error_code := 'session_full'; RETURN;
            END IF;
            v_status := 'waitlisted';
            UPDATE sessions SET waitlist_count = waitlist_count + 1,
                                people_count = people_count + 1, updated_at = now()
            WHERE id = p_session
            RETURNING people_count INTO v_pos;
        END IF;

        INSERT INTO people (session_id, position, email, first_name, last_name, fields,
                            referrer, utm_source, utm_medium, utm_campaign, utm_term,
                            utm_content, reference, registration_status, join_token, task_id)
        VALUES (p_session, v_pos - 1, p_person->>'email', p_person->>'first_name',
                p_person->>'last_name', COALESCE(p_person->'fields', '[]'::jsonb),
                p_person->>'referrer', p_person->>'utm_source', p_person->>'utm_medium',
                p_person->>'utm_campaign', p_person->>'utm_term', p_person->>'utm_content',
                p_person->>'reference', v_status, new_join_token(), p_task)
        ON CONFLICT (session_id, email_key(email)) WHERE email_conflict_of IS NULL DO NOTHING
        RETURNING id INTO v_id;
        IF FOUND THEN
            outcome := 'succeeded'; person_id := v_id; RETURN;
        END IF;

        -- Someone registered this address concurrently and committed first:
        -- give the seat back (we still hold the session row, so nobody took
        -- a position after ours) and take the duplicate path again.
        UPDATE sessions SET
            registrants_count = registrants_count - (v_status = 'registered')::int,
            pending_count = pending_count - (v_status = 'pending_approval')::int,
            waitlist_count = waitlist_count - (v_status = 'waitlisted')::int,
            people_count = people_count - 1
        WHERE id = p_session;
    END LOOP;
    RAISE EXCEPTION 'registration of % kept conflicting', p_person->>'email'
        USING ERRCODE = 'serialization_failure';
END
$$;
