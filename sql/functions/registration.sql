-- The registration rules and the life of a registration: the only
-- implementation of them. docs/architecture.md, "The registration rules,
-- once", states them; every path runs them through session_apply(): a
-- worker batch (once per session, sql/functions/batches.sql), the careful
-- one-task path, the synchronous POST /v1/sessions/:id/people, and the
-- requests of sql/functions/lifecycle.sql (PATCH and DELETE of people,
-- capacity changes) through the same transition and promotion functions.
--
-- A function file: applied after the schema migrations, again whenever its
-- text changes; see docs/architecture.md, "SQL layout".
--
-- How it holds under concurrency. Every writer of a session's people locks
-- the session row first (FOR NO KEY UPDATE) and keeps it to its commit, so
-- a session's people change one transaction at a time and each sees all of
-- them. The functions below work on the locked row as a value (INOUT s):
-- the counters move in memory, person by person, and the caller writes the
-- row back once. One person at a time, in list order: the outcomes, seats,
-- waitlist order and promotions of a list are by construction those of its
-- people registered one by one, which is what the rules promise within a
-- job; tests/integration/test_register_people.c checks them against an
-- independent one-at-a-time reference.
--
-- A new person costs one INSERT: the statement is tried with the status the
-- person would get, ON CONFLICT DO NOTHING on both identities (the unique
-- indexes on email_key(email) and on external_id); only a conflict, or a
-- session without a seat for a newcomer, looks the person up.

-- The status a newcomer gets, or NULL when the session has no room for
-- them (session_full): the rule of seats, waiting list and approval, once.
-- p_ahead counts the newcomers wanting a seat who come before this one in
-- the same statement (session_register_new()) and are not in s's counters
-- yet: 0 when s is up to date (person_register()).
CREATE OR REPLACE FUNCTION session_status_for(s sessions, p_auto_approve boolean,
                                              p_waitlist boolean, p_ahead int) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_waitlist THEN 'waitlisted'
                WHEN s.capacity IS NULL
                     OR s.registrants_count + s.pending_count + p_ahead < s.capacity
                    THEN CASE WHEN s.approval = 'manual' AND NOT p_auto_approve
                              THEN 'pending_approval' ELSE 'registered' END
                WHEN s.waitlist THEN 'waitlisted' END
$$;

-- Whether a track_id names none of the session's tracks (a track_id that
-- is no number, which the API refuses, is no track either).
CREATE OR REPLACE FUNCTION session_lacks_track(s sessions, p_track jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(jsonb_typeof(p_track), 'null') <> 'null'
           AND NOT s.tracks @> jsonb_build_array(jsonb_build_object('id', p_track))
$$;

-- The session's counters once a person goes from p_from (NULL: a newcomer)
-- to p_to. A waitlisted person takes the next waitlist_seq.
CREATE OR REPLACE FUNCTION session_moved(s sessions, p_from text, p_to text) RETURNS sessions
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    s.registrants_count := s.registrants_count + (p_to = 'registered')::int
                           - (p_from IS NOT DISTINCT FROM 'registered')::int;
    s.pending_count := s.pending_count + (p_to = 'pending_approval')::int
                       - (p_from IS NOT DISTINCT FROM 'pending_approval')::int;
    s.waitlist_count := s.waitlist_count + (p_to = 'waitlisted')::int
                        - (p_from IS NOT DISTINCT FROM 'waitlisted')::int;
    s.waitlist_seq := s.waitlist_seq + (p_to = 'waitlisted')::int;
    s.people_count := s.people_count + (p_from IS NULL)::int;
    RETURN s;
END
$$;

-- The attributes an input gives, over a person's own: each one present
-- replaces the stored value (override_duplicates, a registration anew, a
-- PATCH). email and external_id are the person's identity and change only
-- by PATCH (person_patch()).
CREATE OR REPLACE FUNCTION person_take_fields(p_id uuid, p jsonb, p_task uuid) RETURNS void
LANGUAGE sql AS $$
    UPDATE people SET
        first_name   = CASE WHEN p ? 'first_name' THEN p->>'first_name' ELSE first_name END,
        last_name    = CASE WHEN p ? 'last_name' THEN p->>'last_name' ELSE last_name END,
        fields       = CASE WHEN p ? 'fields' THEN coalesce(p->'fields', '[]') ELSE fields END,
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

-- Moves a person of the locked session s from p_from to p_to: the row, the
-- counters in s, and a person.updated event with the previous status.
CREATE OR REPLACE FUNCTION person_move(INOUT s sessions, p_id uuid, p_from text, p_to text)
LANGUAGE plpgsql AS $$
BEGIN
    s := session_moved(s, p_from, p_to);
    UPDATE people SET registration_status = p_to,
                      waitlist_seq = CASE WHEN p_to = 'waitlisted' THEN s.waitlist_seq END,
                      updated_at = now()
    WHERE id = p_id;
    PERFORM emit_person_updated(s.organization_id, p_id, p_from);
END
$$;

-- Whenever seats are free and people wait, the earliest waitlisted take
-- them, one by one in waitlist order: registered, or pending_approval in a
-- manual-approval session.
CREATE OR REPLACE FUNCTION session_promote(INOUT s sessions)
LANGUAGE plpgsql AS $$
DECLARE
    v_id uuid;
BEGIN
    WHILE s.waitlist_count > 0
          AND (s.capacity IS NULL OR s.registrants_count + s.pending_count < s.capacity) LOOP
        SELECT p.id INTO v_id FROM people p
        WHERE p.session_id = s.id AND p.registration_status = 'waitlisted'
        ORDER BY p.waitlist_seq LIMIT 1;
        EXIT WHEN NOT FOUND;
        s := person_move(s, v_id, 'waitlisted',
                         CASE WHEN s.approval = 'manual' THEN 'pending_approval'
                              ELSE 'registered' END);
    END LOOP;
END
$$;

-- A registration_status transition of a person of the locked session s:
-- pending_approval -> registered or denied, waitlisted -> registered (when
-- a seat is free, else session_full), anything but cancelled -> cancelled;
-- any other is invalid_transition. A seat that frees goes to the waiting
-- list at once.
CREATE OR REPLACE FUNCTION person_transition(INOUT s sessions, p_id uuid, p_to text,
                                             OUT outcome text, OUT error_code text)
LANGUAGE plpgsql AS $$
DECLARE
    v_from text;
BEGIN
    outcome := 'failed';
    SELECT p.registration_status INTO v_from FROM people p
    WHERE p.id = p_id AND p.session_id = s.id;
    IF NOT FOUND THEN
        error_code := 'person_not_found'; RETURN;
    END IF;
    IF NOT ((v_from = 'pending_approval' AND p_to IN ('registered', 'denied'))
            OR (v_from = 'waitlisted' AND p_to = 'registered')
            OR (v_from <> 'cancelled' AND p_to = 'cancelled')) THEN
        error_code := 'invalid_transition'; RETURN;
    END IF;
    IF v_from = 'waitlisted' AND p_to = 'registered'
       AND NOT (s.capacity IS NULL OR s.registrants_count + s.pending_count < s.capacity) THEN
        error_code := 'session_full'; RETURN;
    END IF;
    s := person_move(s, p_id, v_from, p_to);
    IF v_from IN ('registered', 'pending_approval') AND p_to IN ('denied', 'cancelled') THEN
        s := session_promote(s);
    END IF;
    outcome := 'succeeded';
END
$$;

-- Registers one person into the locked session s (the window checked by
-- the caller): unknown_track; a new person; a duplicate of a person the
-- session has by email or external_id (already_registered, or with
-- override their attributes updated); a cancelled or denied person
-- registered anew (same id); or session_full.
CREATE OR REPLACE FUNCTION person_register(INOUT s sessions, p jsonb, p_override boolean,
                                           p_auto_approve boolean, p_waitlist boolean,
                                           p_task uuid, OUT outcome text, OUT error_code text,
                                           OUT person_id uuid)
LANGUAGE plpgsql AS $$
DECLARE
    v_status text;
    v_found int;
    v_prev text;
BEGIN
    outcome := 'failed';
    IF session_lacks_track(s, p->'track_id') THEN
        error_code := 'unknown_track'; RETURN;
    END IF;
    v_status := session_status_for(s, p_auto_approve, p_waitlist, 0);
    IF v_status IS NOT NULL THEN
        INSERT INTO people (session_id, position, email, external_id, first_name, last_name,
                            fields, referrer, utm_source, utm_medium, utm_campaign, utm_term,
                            utm_content, reference, track_id, center_id, registration_status,
                            waitlist_seq, join_token, task_id)
        VALUES (s.id, s.people_count, p->>'email', p->>'external_id', p->>'first_name',
                p->>'last_name', coalesce(p->'fields', '[]'), p->>'referrer',
                p->>'utm_source', p->>'utm_medium', p->>'utm_campaign', p->>'utm_term',
                p->>'utm_content', p->>'reference', (p->>'track_id')::int, p->>'center_id',
                v_status, CASE WHEN v_status = 'waitlisted' THEN s.waitlist_seq + 1 END,
                new_join_token(), p_task)
        ON CONFLICT DO NOTHING
        RETURNING id INTO person_id;
        IF FOUND THEN
            s := session_moved(s, NULL, v_status);
            outcome := 'succeeded';
            RETURN;
        END IF;
    END IF;

    -- The session knows this person, or has no room for a newcomer.
    SELECT count(*), (array_agg(x.id))[1], (array_agg(x.registration_status))[1]
    INTO v_found, person_id, v_prev
    FROM people x
    WHERE x.session_id = s.id
      AND ((email_key(x.email) = email_key(p->>'email') AND x.email_conflict_of IS NULL)
           OR x.external_id = p->>'external_id');
    IF v_found = 0 AND v_status IS NULL THEN
        error_code := 'session_full';
    ELSIF v_found = 0 THEN
        -- Under the session lock nobody else inserts into it; let the
        -- caller's transaction run again if that ever happened.
        RAISE EXCEPTION 'registration into session % conflicted', s.id
            USING ERRCODE = 'serialization_failure';
    ELSIF v_found > 1 THEN
        error_code := 'already_registered'; -- its email and its external_id are two people's
    ELSIF v_prev NOT IN ('cancelled', 'denied') THEN
        IF p_override THEN
            PERFORM person_take_fields(person_id, p, p_task);
            outcome := 'succeeded';
        ELSE
            error_code := 'already_registered';
        END IF;
    ELSIF v_status IS NULL THEN
        error_code := 'session_full';
    ELSE
        PERFORM person_take_fields(person_id, p, p_task);
        s := person_move(s, person_id, v_prev, v_status);
        outcome := 'succeeded';
    END IF;
    IF outcome = 'failed' THEN
        person_id := NULL;
    END IF;
END
$$;

-- A list of registrations whose people are all new to the session and
-- distinct from one another (no email_key and no external_id twice, none
-- that the session has), the common case of a worker batch, is inserted
-- by one statement. Each person's status is session_status_for() with the
-- seats taken by the newcomers before them in the list, which is what
-- registering them one by one gives, since a newcomer only ever takes a
-- seat; entries failing unknown_track take nothing. done = false, with
-- nothing written, when the list is not such a list: session_apply() then
-- takes its entries one at a time. The check and the insert are one
-- statement (a separate check cost as much as the insert). The INSERT has
-- no ON CONFLICT clause: under the session lock nobody else adds people to
-- the session, and a clause without a target would probe every unique
-- index of people for every row; a conflict that could not happen raises
-- unique_violation.
CREATE OR REPLACE FUNCTION session_register_new(INOUT s sessions, p_people jsonb[],
                                                p_auto_approve boolean[], p_waitlist boolean[],
                                                p_tasks uuid[], OUT done boolean,
                                                OUT outcomes text[], OUT codes text[],
                                                OUT persons uuid[])
LANGUAGE plpgsql AS $$
DECLARE
    v_planned int;
    v_counts int[];
BEGIN
    -- One statement checks the list and, when it is one of newcomers,
    -- inserts them; otherwise `fits` is false and nothing is inserted.
    WITH u AS (
        SELECT x.i::int AS i, x.p, x.au, x.wl, x.tk, email_key(x.p->>'email') AS ek,
               x.p->>'external_id' AS xid, session_lacks_track(s, x.p->'track_id') AS bad
        FROM unnest(p_people, p_auto_approve, p_waitlist, p_tasks)
             WITH ORDINALITY AS x(p, au, wl, tk, i)
    ), known AS (
        -- Looked up entry by entry, through the unique indexes (a person
        -- marked email_conflict_of has an unmarked one of the address).
        SELECT u.*,
               NOT u.bad
               AND ((u.ek IS NOT NULL
                     AND (count(*) FILTER (WHERE NOT u.bad) OVER (PARTITION BY u.ek) > 1
                          OR EXISTS (SELECT 1 FROM people pp
                                     WHERE pp.session_id = s.id AND email_key(pp.email) = u.ek
                                       AND pp.email_conflict_of IS NULL)))
                    OR (u.xid IS NOT NULL
                        AND (count(*) FILTER (WHERE NOT u.bad) OVER (PARTITION BY u.xid) > 1
                             OR EXISTS (SELECT 1 FROM people pp
                                        WHERE pp.session_id = s.id
                                          AND pp.external_id = u.xid)))) AS clash
        FROM u
    ), fits AS (
        SELECT coalesce(NOT bool_or(k.clash), true) AS yes FROM known k
    ), wanting AS (
        -- ahead: the seat-wanting newcomers before this one
        SELECT k.*, (count(*) FILTER (WHERE NOT k.bad AND NOT k.wl) OVER (ORDER BY k.i)
                     - (NOT k.bad AND NOT k.wl)::int)::int AS ahead
        FROM known k WHERE (SELECT f.yes FROM fits f)
    ), planned AS (
        SELECT w.*, CASE WHEN NOT w.bad THEN session_status_for(s, w.au, w.wl, w.ahead) END
                        AS status
        FROM wanting w
    ), plan AS (
        SELECT pl.*,
               s.people_count - 1 + (count(*) FILTER (WHERE pl.status IS NOT NULL)
                                     OVER (ORDER BY pl.i))::int AS pos,
               s.waitlist_seq + (count(*) FILTER (WHERE pl.status = 'waitlisted')
                                 OVER (ORDER BY pl.i))::int AS seq
        FROM planned pl
    ), ins AS (
        INSERT INTO people (session_id, position, email, external_id, first_name, last_name,
                            fields, referrer, utm_source, utm_medium, utm_campaign, utm_term,
                            utm_content, reference, track_id, center_id, registration_status,
                            waitlist_seq, join_token, task_id)
        SELECT s.id, pl.pos, pl.p->>'email', pl.p->>'external_id', pl.p->>'first_name',
               pl.p->>'last_name', coalesce(pl.p->'fields', '[]'), pl.p->>'referrer',
               pl.p->>'utm_source', pl.p->>'utm_medium', pl.p->>'utm_campaign',
               pl.p->>'utm_term', pl.p->>'utm_content', pl.p->>'reference',
               (pl.p->>'track_id')::int, pl.p->>'center_id', pl.status,
               CASE WHEN pl.status = 'waitlisted' THEN pl.seq END, new_join_token(), pl.tk
        FROM plan pl WHERE pl.status IS NOT NULL
        RETURNING id, position
    )
    SELECT (SELECT f.yes FROM fits f),
           array_agg(CASE WHEN pl.status IS NULL THEN 'failed' ELSE 'succeeded' END
                     ORDER BY pl.i),
           array_agg(CASE WHEN pl.bad THEN 'unknown_track'
                          WHEN pl.status IS NULL THEN 'session_full' END ORDER BY pl.i),
           array_agg(ins.id ORDER BY pl.i),
           count(*) FILTER (WHERE pl.status IS NOT NULL),
           ARRAY[count(ins.id) FILTER (WHERE pl.status = 'registered'),
                 count(ins.id) FILTER (WHERE pl.status = 'pending_approval'),
                 count(ins.id) FILTER (WHERE pl.status = 'waitlisted')]
    INTO done, outcomes, codes, persons, v_planned, v_counts
    FROM plan pl LEFT JOIN ins ON pl.status IS NOT NULL AND ins.position = pl.pos;
    IF NOT done THEN
        RETURN;
    END IF;
    s.registrants_count := s.registrants_count + v_counts[1];
    s.pending_count := s.pending_count + v_counts[2];
    s.waitlist_count := s.waitlist_count + v_counts[3];
    s.waitlist_seq := s.waitlist_seq + v_counts[3];
    s.people_count := s.people_count + v_planned;
END
$$;

-- A bulk action's task: the person its email and/or external_id name (both
-- must match when both are given) moves to the action's status. An entry
-- naming neither names nobody (person_not_found), not the session's first
-- person.
CREATE OR REPLACE FUNCTION person_act(INOUT s sessions, p_action text, p jsonb,
                                      OUT outcome text, OUT error_code text, OUT person_id uuid)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    SELECT x.id INTO person_id FROM people x
    WHERE x.session_id = s.id
      AND num_nonnulls(p->>'email', p->>'external_id') > 0
      AND (p->>'email' IS NULL
           OR (email_key(x.email) = email_key(p->>'email') AND x.email_conflict_of IS NULL))
      AND (p->>'external_id' IS NULL OR x.external_id = p->>'external_id');
    IF NOT FOUND THEN
        outcome := 'failed'; error_code := 'person_not_found'; RETURN;
    END IF;
    IF p_action IN ('approve', 'deny') AND (SELECT x.registration_status FROM people x
                                            WHERE x.id = person_id) <> 'pending_approval' THEN
        outcome := 'failed'; error_code := 'invalid_transition'; person_id := NULL; RETURN;
    END IF;
    r := person_transition(s, person_id,
                           CASE p_action WHEN 'approve' THEN 'registered'
                                         WHEN 'deny' THEN 'denied' ELSE 'cancelled' END);
    s := r.s;
    outcome := r.outcome;
    error_code := r.error_code;
    IF outcome = 'failed' THEN
        person_id := NULL;
    END IF;
END
$$;

-- Applies a list of tasks to one session, one by one in list order: a
-- registration (p_actions[i] = 'register', with its override, auto_approve
-- and waitlist flags) or a bulk action (approve, deny, cancel). Locks the
-- session, writes its counters once. A registration outside the window
-- fails registration_closed; actions are not bound by the window. Every
-- entry fails session_not_found when the session is gone. A list of
-- newcomers only goes in with one statement (session_register_new()).
CREATE OR REPLACE FUNCTION session_apply(p_session uuid, p_actions text[], p_people jsonb[],
                                         p_override boolean[], p_auto_approve boolean[],
                                         p_waitlist boolean[], p_tasks uuid[])
RETURNS TABLE (ord int, outcome text, error_code text, person_id uuid)
LANGUAGE plpgsql AS $$
DECLARE
    s sessions;
    v_before sessions;
    v_open boolean;
    r record;
BEGIN
    SELECT * INTO s FROM sessions x WHERE x.id = p_session FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT i, 'failed'::text, 'session_not_found'::text, NULL::uuid
                     FROM generate_series(1, cardinality(p_people)) AS i;
        RETURN;
    END IF;
    v_before := s;
    v_open := (s.registration_opens_at IS NULL OR now() >= s.registration_opens_at)
              AND (s.registration_closes_at IS NULL OR now() < s.registration_closes_at);
    IF v_open AND cardinality(p_people) > 1 AND 'register' = ALL (p_actions) THEN
        r := session_register_new(s, p_people, p_auto_approve, p_waitlist, p_tasks);
        IF r.done THEN
            PERFORM session_store_counts(r.s);
            RETURN QUERY SELECT x.i::int, x.o, x.c, x.pid
                         FROM unnest(r.outcomes, r.codes, r.persons) WITH ORDINALITY
                              AS x(o, c, pid, i);
            RETURN;
        END IF;
    END IF;
    FOR i IN 1..cardinality(p_people) LOOP
        ord := i;
        IF p_actions[i] <> 'register' OR v_open THEN
            IF p_actions[i] <> 'register' THEN
                r := person_act(s, p_actions[i], p_people[i]);
            ELSE
                r := person_register(s, p_people[i], p_override[i], p_auto_approve[i],
                                     p_waitlist[i], p_tasks[i]);
            END IF;
            s := r.s;
            outcome := r.outcome;
            error_code := r.error_code;
            person_id := r.person_id;
        ELSE
            -- Not through a ROW() into r: its fields would be f1..f4, not s.
            outcome := 'failed';
            error_code := 'registration_closed';
            person_id := NULL;
        END IF;
        RETURN NEXT;
    END LOOP;
    IF s IS DISTINCT FROM v_before THEN
        PERFORM session_store_counts(s);
    END IF;
END
$$;

-- Writes the counters of a locked session that session_apply() or a
-- lifecycle request moved in memory.
CREATE OR REPLACE FUNCTION session_store_counts(s sessions) RETURNS void
LANGUAGE sql AS $$
    UPDATE sessions SET registrants_count = s.registrants_count,
                        pending_count = s.pending_count,
                        waitlist_count = s.waitlist_count,
                        waitlist_seq = s.waitlist_seq,
                        people_count = s.people_count,
                        updated_at = now()
    WHERE id = s.id
$$;

-- One task or one request: the same rules for a single entry.
CREATE OR REPLACE FUNCTION person_apply(p_session uuid, p_action text, p_person jsonb,
                                        p_override boolean, p_auto_approve boolean,
                                        p_waitlist boolean, p_task uuid,
                                        OUT outcome text, OUT error_code text,
                                        OUT person_id uuid)
LANGUAGE sql AS $$
    SELECT r.outcome, r.error_code, r.person_id
    FROM session_apply(p_session, ARRAY[p_action], ARRAY[p_person], ARRAY[p_override],
                       ARRAY[p_auto_approve], ARRAY[p_waitlist], ARRAY[p_task]) r
$$;
