-- Zoom's batch registration, a compatible API (docs/compat/zoom.md):
-- POST /v2/webinars/:webinarId/batch_registrants, served by api/compat/zoom.c.
-- A translation only: the registrants go through session_apply()
-- (sql/functions/registration.sql), the rules every registration follows.
--
-- A function file: applied after the schema migrations, again whenever its
-- text changes; see docs/architecture.md, "SQL layout". PL/pgSQL, so it may
-- call the functions of files later in name order.

-- Registers p_people (a JSON array of {email, first_name, last_name}), in
-- order, into the organization's session, all or nothing:
--   'registered' with body {"registrants": [{registrant_id, email,
--     join_url}, ...]} in the order of p_people. A person the session
--     already has (an email registered before, or twice in the list) is
--     returned as they are, with their id and join URL, as Zoom does;
--   'session_full' when a newcomer finds no seat (a session without a
--     waiting list): the whole batch is rolled back, nobody is registered;
--   'registration_closed' outside the registration window (nobody is);
--   'session_not_found' when the session is not the organization's.
-- Manual approval without p_auto_approve makes newcomers pending_approval;
-- they are returned all the same.
CREATE OR REPLACE FUNCTION zoom_batch_register(p_org uuid, p_session uuid, p_people jsonb,
                                               p_auto_approve boolean, p_join_base text,
                                               OUT outcome text, OUT body json)
LANGUAGE plpgsql AS $$
DECLARE
    n int := jsonb_array_length(p_people);
    v_people jsonb[];
    v_ids uuid[];
    v_errors text[];
    v_rows int;
BEGIN
    PERFORM 1 FROM sessions WHERE id = p_session AND organization_id = p_org;
    IF NOT FOUND THEN
        outcome := 'session_not_found'; RETURN;
    END IF;
    SELECT array_agg(e ORDER BY i) INTO v_people
    FROM jsonb_array_elements(p_people) WITH ORDINALITY AS x(e, i);
    -- A subtransaction: a batch that does not fit is undone whole.
    BEGIN
        SELECT array_agg(a.person_id ORDER BY a.ord), array_agg(a.error_code ORDER BY a.ord)
        INTO v_ids, v_errors
        FROM session_apply(p_session, array_fill('register'::text, ARRAY[n]), v_people,
                           array_fill(false, ARRAY[n]), array_fill(p_auto_approve, ARRAY[n]),
                           array_fill(false, ARRAY[n]), array_fill(NULL::uuid, ARRAY[n])) a;
        IF 'session_full' = ANY (v_errors) THEN
            RAISE EXCEPTION 'batch of % does not fit session %', n, p_session
                USING ERRCODE = 'BRZ01';
        END IF;
    EXCEPTION WHEN SQLSTATE 'BRZ01' THEN
        outcome := 'session_full'; RETURN;
    END;
    IF 'session_not_found' = ANY (v_errors) OR 'registration_closed' = ANY (v_errors) THEN
        outcome := CASE WHEN 'session_not_found' = ANY (v_errors) THEN 'session_not_found'
                        ELSE 'registration_closed' END;
        RETURN;
    END IF;
    -- Each entry's person: the one registered, or the one the session has
    -- by that email (already_registered, under the session lock still held).
    SELECT count(*), json_build_object('registrants', json_agg(json_build_object(
               'registrant_id', p.id, 'email', p.email,
               'join_url', p_join_base || p.join_token) ORDER BY x.i))
    INTO v_rows, body
    FROM unnest(v_people, v_ids) WITH ORDINALITY AS x(e, pid, i)
    JOIN people p ON p.id = coalesce(x.pid,
        (SELECT q.id FROM people q
         WHERE q.session_id = p_session AND email_key(q.email) = email_key(x.e->>'email')
           AND q.email_conflict_of IS NULL));
    IF v_rows <> n THEN
        RAISE EXCEPTION 'batch into session % left % of % registrants unresolved',
            p_session, n - v_rows, n;
    END IF;
    outcome := 'registered';
END
$$;
