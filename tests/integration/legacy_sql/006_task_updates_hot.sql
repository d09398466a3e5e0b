-- A task's outcome is stored as a HOT update.
--
-- Storing an outcome changes the task's status. While status was a column
-- of an index (tasks_job_status_idx, on job_id, status, idx) no such update
-- could be HOT: each wrote a new entry into every index of tasks (three),
-- and the task's page was usually full anyway, so the new version went to
-- another page. Now no index of tasks covers a column a worker changes, and
-- pages keep room for the new versions (fillfactor 60; pages written before
-- this migration keep their old layout until rewritten), so the update
-- stays on the page and writes no index entry.
--
-- What the index served now reads the job's range of tasks_job_index
-- (job_id, idx) and filters on status: the tasks pages filtered by status,
-- a job's count by status, retry and cancel, and the sweeper's search for
-- queued tasks. Each reads one job's tasks, at most BULKREG_MAX_TASKS rows.
--
-- The one query that read it per batch is batch_fast()'s claim of the rest
-- of a job: in index order it would now step over every task of the job
-- already done, so for a large job each batch would read more than the last.
-- It now starts at the lowest index among the job's delivered tasks: the
-- broker hands a job's messages out in publishing order, so what lies below
-- is done or held by another batch. A queued task below is not claimed; its
-- own message registers it, as before this claim existed. batch_fast() is
-- otherwise sql/004's.

DROP INDEX IF EXISTS tasks_job_status_idx;
ALTER TABLE tasks SET (fillfactor = 60);

-- sql/004's batch_fast(), the claim starting at the job's lowest delivered index.
CREATE OR REPLACE FUNCTION batch_fast(p_ids uuid[], p_claim int,
                                      OUT ids uuid[], OUT outcomes text[], OUT details text[],
                                      OUT ended boolean[])
LANGUAGE plpgsql AS $$
DECLARE
    v_locked uuid[];
    v_job uuid;
    v_from int;
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
        FOR v_job, v_from IN SELECT t.job_id, min(t.idx) FROM tasks t
                             WHERE t.id = ANY (v_locked) GROUP BY t.job_id LOOP
            SELECT v_locked || coalesce(array_agg(x.id), '{}') INTO v_locked
            FROM (SELECT t.id FROM tasks t
                  WHERE t.job_id = v_job AND t.idx > v_from AND t.status = 'queued'
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
