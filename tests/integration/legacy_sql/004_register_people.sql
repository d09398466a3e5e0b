-- Registration by set: a batch registers each session's people with one
-- statement, instead of four statements and a function call per person.
--
-- register_people() is now the only implementation of the registration rules.
-- register_person() becomes a call of it with one person (for register_one
-- and the careful path), and batch_fast() calls it once per session.
--
-- It gives the same outcomes, seats, positions and stored fields as running
-- register_person() on each person in the given order:
--
--  * The session row is locked first (FOR NO KEY UPDATE, the lock the
--    counter UPDATE takes anyway). Every writer of people takes that lock
--    before writing, so under it the statement's snapshot sees every person
--    of the session, and nobody inserts an address concurrently.
--  * An address is a duplicate when the session already has it, or when an
--    earlier person of the same call was inserted with it. A later copy of
--    an address whose first copy found the session full is full as well:
--    nothing in between freed a seat.
--  * Every other person wants a seat (registered, or pending_approval for a
--    manual session without auto_approve); the k-th of them in order gets
--    one when k <= the free seats, else is waitlisted or session_full.
--    Positions follow the order of insertion.
--  * Duplicates are handled after the insert, in order: already_registered,
--    or with override the same field-by-field update as before. They never
--    take a seat or a position, so doing them last changes nothing.

CREATE FUNCTION register_people(p_session uuid, p_people jsonb[], p_override boolean[],
                                p_auto_approve boolean[], p_tasks uuid[])
RETURNS TABLE (ord int, outcome text, error_code text, person_id uuid)
LANGUAGE plpgsql AS $$
DECLARE
    s sessions;
    v_seats int;
    v_kind text[];
    v_email text[];
    v_outcome text[];
    v_code text[];
    v_person uuid[];
    v_planned int;
    v_inserted int;
    v_registered int;
    v_pending int;
    v_waitlisted int;
    v_id uuid;
    p jsonb;
BEGIN
    SELECT * INTO s FROM sessions WHERE id = p_session FOR NO KEY UPDATE;
    IF NOT FOUND OR (s.registration_opens_at IS NOT NULL AND now() < s.registration_opens_at)
       OR (s.registration_closes_at IS NOT NULL AND now() >= s.registration_closes_at) THEN
        RETURN QUERY
        SELECT i, 'failed'::text,
               CASE WHEN s.id IS NULL THEN 'session_not_found' ELSE 'registration_closed' END,
               NULL::uuid
        FROM generate_series(1, cardinality(p_people)) AS i;
        RETURN;
    END IF;
    v_seats := CASE WHEN s.capacity IS NOT NULL
                    THEN greatest(s.capacity - s.registrants_count - s.pending_count, 0) END;

    -- Plan every person, insert the new ones, and read back what happened.
    WITH u AS (
        SELECT x.i::int AS i, x.p, lower(x.p->>'email') AS email, x.au, x.tk,
               EXISTS (SELECT 1 FROM people pp
                       WHERE pp.session_id = p_session
                         AND lower(pp.email) = lower(x.p->>'email')) AS known
        FROM unnest(p_people, p_auto_approve, p_tasks) WITH ORDINALITY AS x(p, au, tk, i)
    ), firsts AS (
        -- seat: the rank among the people who want one (first copies of new addresses)
        SELECT m.*, m.i = m.min_i AS first,
               count(*) FILTER (WHERE NOT m.known AND m.i = m.min_i) OVER (ORDER BY m.i) AS seat
        FROM (SELECT u.*, min(u.i) OVER (PARTITION BY u.email) AS min_i FROM u) m
    ), wanted AS (
        SELECT f.*,
               CASE WHEN f.known OR NOT f.first THEN NULL
                    WHEN v_seats IS NULL OR f.seat <= v_seats THEN
                        CASE WHEN s.approval = 'manual' AND NOT f.au
                             THEN 'pending_approval' ELSE 'registered' END
                    WHEN s.waitlist THEN 'waitlisted'
                    ELSE 'full' END AS status
        FROM firsts f
    ), plan AS (
        SELECT w.i, w.p, w.email, w.tk,
               CASE WHEN w.known THEN 'duplicate'
                    WHEN w.first THEN CASE WHEN w.status = 'full' THEN 'full' ELSE 'insert' END
                    WHEN first_value(w.status) OVER (PARTITION BY w.email ORDER BY w.i) = 'full'
                        THEN 'full'
                    ELSE 'duplicate' END AS kind,
               w.status
        FROM wanted w
    ), ins AS (
        INSERT INTO people (session_id, position, email, first_name, last_name, fields,
                            referrer, utm_source, utm_medium, utm_campaign, utm_term,
                            utm_content, reference, registration_status, join_token, task_id)
        SELECT p_session, s.people_count + (row_number() OVER (ORDER BY pl.i))::int - 1,
               pl.p->>'email', pl.p->>'first_name', pl.p->>'last_name',
               COALESCE(pl.p->'fields', '[]'::jsonb), pl.p->>'referrer',
               pl.p->>'utm_source', pl.p->>'utm_medium', pl.p->>'utm_campaign',
               pl.p->>'utm_term', pl.p->>'utm_content', pl.p->>'reference', pl.status,
               new_join_token(), pl.tk
        FROM plan pl WHERE pl.kind = 'insert'
        ON CONFLICT (session_id, lower(email)) DO NOTHING
        RETURNING id, lower(email) AS email, registration_status
    )
    SELECT array_agg(pl.kind ORDER BY pl.i), array_agg(pl.email ORDER BY pl.i),
           array_agg(CASE pl.kind WHEN 'insert' THEN 'succeeded' WHEN 'full' THEN 'failed' END
                     ORDER BY pl.i),
           array_agg(CASE WHEN pl.kind = 'full' THEN 'session_full' END ORDER BY pl.i),
           array_agg(ins.id ORDER BY pl.i),
           count(*) FILTER (WHERE pl.kind = 'insert'), count(ins.id),
           count(*) FILTER (WHERE ins.registration_status = 'registered'),
           count(*) FILTER (WHERE ins.registration_status = 'pending_approval'),
           count(*) FILTER (WHERE ins.registration_status = 'waitlisted')
    INTO v_kind, v_email, v_outcome, v_code, v_person, v_planned, v_inserted,
         v_registered, v_pending, v_waitlisted
    FROM plan pl LEFT JOIN ins ON pl.kind = 'insert' AND ins.email = pl.email;

    -- Under the session lock nobody else can have inserted one of these
    -- addresses; if it happened anyway, let the caller run the batch again.
    IF v_inserted <> v_planned THEN
        RAISE EXCEPTION 'registration into session % conflicted', p_session
            USING ERRCODE = 'serialization_failure';
    END IF;
    IF v_inserted > 0 THEN
        UPDATE sessions SET
            registrants_count = registrants_count + v_registered,
            pending_count = pending_count + v_pending,
            waitlist_count = waitlist_count + v_waitlisted,
            people_count = people_count + v_inserted,
            updated_at = now()
        WHERE id = p_session;
    END IF;

    FOR i IN 1..cardinality(v_kind) LOOP
        CONTINUE WHEN v_kind[i] <> 'duplicate';
        IF NOT p_override[i] THEN
            v_outcome[i] := 'failed';
            v_code[i] := 'already_registered';
            CONTINUE;
        END IF;
        p := p_people[i];
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
            task_id      = p_tasks[i],
            updated_at   = now()
        WHERE session_id = p_session AND lower(email) = v_email[i]
        RETURNING id INTO STRICT v_id;
        v_outcome[i] := 'succeeded';
        v_person[i] := v_id;
    END LOOP;

    RETURN QUERY
    SELECT x.i::int, x.o, x.c, x.pid
    FROM unnest(v_outcome, v_code, v_person) WITH ORDINALITY AS x(o, c, pid, i);
END
$$;

-- One person: the same rules (register_one, and batch_careful's per-task path).
CREATE OR REPLACE FUNCTION register_person(p_session uuid, p_person jsonb, p_override boolean,
                                           p_auto_approve boolean, p_task uuid,
                                           OUT outcome text, OUT error_code text,
                                           OUT person_id uuid)
LANGUAGE sql AS $$
    SELECT r.outcome, r.error_code, r.person_id
    FROM register_people(p_session, ARRAY[p_person], ARRAY[p_override], ARRAY[p_auto_approve],
                         ARRAY[p_task]) r
$$;

-- sql/003's batch with the registration done per session: lock, claim,
-- register each session's tasks with one register_people(), store the
-- outcomes in one statement, count once per job.
CREATE OR REPLACE FUNCTION batch_fast(p_ids uuid[], p_claim int,
                                      OUT ids uuid[], OUT outcomes text[], OUT details text[],
                                      OUT ended boolean[])
LANGUAGE plpgsql AS $$
DECLARE
    v_locked uuid[];
    v_job uuid;
    g record;
    c record;
    r_ids uuid[] := '{}';
    r_jobs uuid[] := '{}';
    r_outcomes text[] := '{}';
    r_codes text[] := '{}';
    r_persons uuid[] := '{}';
    r_ended boolean[];
    g_outcomes text[];
    g_codes text[];
    g_persons uuid[];
BEGIN
    IF p_claim > 0 THEN
        SELECT coalesce(array_agg(x.id), '{}') INTO v_locked
        FROM (SELECT t.id FROM tasks t WHERE t.id = ANY (p_ids) AND t.status = 'queued'
              FOR UPDATE SKIP LOCKED) x;
    ELSE
        SELECT coalesce(array_agg(x.id), '{}') INTO v_locked
        FROM (SELECT t.id FROM tasks t WHERE t.id = ANY (p_ids) AND t.status = 'queued'
              ORDER BY t.job_id, t.idx FOR UPDATE) x;
    END IF;
    SELECT coalesce(array_agg(u.task_id), '{}'), coalesce(array_agg(u.outcome), '{}'),
           coalesce(array_agg(u.detail), '{}'), coalesce(array_agg(false), '{}')
    INTO ids, outcomes, details, ended
    FROM batch_unlocked(p_ids, v_locked) u;

    -- Job affinity: the rest of each job, while the claim allows.
    IF p_claim > cardinality(v_locked) THEN
        FOR v_job IN SELECT DISTINCT t.job_id FROM tasks t WHERE t.id = ANY (v_locked) LOOP
            SELECT v_locked || coalesce(array_agg(x.id), '{}') INTO v_locked
            FROM (SELECT t.id FROM tasks t
                  WHERE t.job_id = v_job AND t.status = 'queued'
                    AND NOT (t.id = ANY (v_locked))
                  ORDER BY t.idx
                  LIMIT p_claim - cardinality(v_locked)
                  FOR UPDATE SKIP LOCKED) x;
            EXIT WHEN cardinality(v_locked) >= p_claim;
        END LOOP;
    END IF;
    IF cardinality(v_locked) = 0 THEN
        RETURN;
    END IF;

    -- Session by session (the order every batch takes its rows in), each
    -- session's tasks in job and index order. Every locked task is queued:
    -- the lock re-checked its status.
    FOR g IN
        SELECT j.session_id,
               array_agg(t.id ORDER BY t.job_id, t.idx) AS ids,
               array_agg(t.job_id ORDER BY t.job_id, t.idx) AS jobs,
               array_agg(t.input ORDER BY t.job_id, t.idx) AS inputs,
               array_agg(j.override_duplicates ORDER BY t.job_id, t.idx) AS overrides,
               array_agg(j.auto_approve ORDER BY t.job_id, t.idx) AS auto_approves
        FROM tasks t JOIN jobs j ON j.id = t.job_id
        WHERE t.id = ANY (v_locked)
        GROUP BY j.session_id
        ORDER BY j.session_id
    LOOP
        SELECT array_agg(r.outcome ORDER BY r.ord), array_agg(r.error_code ORDER BY r.ord),
               array_agg(r.person_id ORDER BY r.ord)
        INTO g_outcomes, g_codes, g_persons
        FROM register_people(g.session_id, g.inputs, g.overrides, g.auto_approves, g.ids) r;
        r_ids := r_ids || g.ids;
        r_jobs := r_jobs || g.jobs;
        r_outcomes := r_outcomes || g_outcomes;
        r_codes := r_codes || g_codes;
        r_persons := r_persons || g_persons;
    END LOOP;
    PERFORM store_outcomes(r_ids, r_outcomes, r_codes, r_persons);

    -- Counters once per job, in job order; the job's last task carries
    -- job_ended when the count ended it.
    r_ended := array_fill(false, ARRAY[cardinality(r_ids)]);
    FOR c IN
        SELECT x.job, count(*) FILTER (WHERE x.o = 'succeeded')::int AS n_success,
               count(*) FILTER (WHERE x.o = 'failed')::int AS n_fail, max(x.n)::int AS last
        FROM unnest(r_jobs, r_outcomes) WITH ORDINALITY AS x(job, o, n)
        GROUP BY x.job
        ORDER BY x.job
    LOOP
        r_ended[c.last] := job_add_counts(c.job, c.n_success, c.n_fail, 0);
    END LOOP;

    ids := ids || r_ids;
    outcomes := outcomes || r_outcomes;
    details := details || r_codes;
    ended := ended || r_ended;
END
$$;
