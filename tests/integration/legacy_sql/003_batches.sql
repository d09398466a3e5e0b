-- Worker batches that keep a session's registrations together.
--
-- process_batch() replaces process_tasks() for the workers; process_tasks
-- becomes a wrapper of it, for a worker of the previous release during an
-- upgrade. batch_careful() is process_tasks' old body, kept as the fallback.
-- Three things differ, each measured in docs/performance.md:
--
--  * Job affinity. The broker spreads a job's messages over every consumer,
--    so each batch used to hold a few tasks of many jobs, and all of them
--    queued on the same session and job rows. A batch now also claims the
--    other queued tasks of the jobs it touches (FOR UPDATE SKIP LOCKED, up
--    to p_claim tasks in all) and registers them in the same transaction.
--    Their own messages arrive later, find the task terminal and are acked
--    as `skipped`: still one message per task, still ack after commit.
--    A delivered task that another transaction holds is reported `busy`;
--    the worker waits for it with p_claim = 0 once this batch committed.
--
--  * No subtransaction per task on the common path. Expected outcomes
--    (duplicate, full, closed) never raise, so the whole batch runs in ONE
--    subtransaction: one lock owner per row, where a subtransaction per task
--    made every task add a member to a MultiXact on the session row. Only if
--    something raises is that subtransaction rolled back and the delivered
--    tasks run again one by one, each in its own subtransaction, so a
--    failure still affects only its task.
--
--  * One counter update per job per batch, and an index set on jobs that
--    lets that update be HOT: jobs_processing indexed updated_at, which
--    every counter update changes. It now indexes created_at, and the
--    sweeper's search for stranded tasks goes through it (processing jobs,
--    then their queued tasks by index) instead of scanning all tasks.

DROP INDEX jobs_processing;
CREATE INDEX jobs_processing ON jobs (created_at) WHERE status = 'processing';
ALTER TABLE jobs SET (fillfactor = 80);

-- Stores the outcomes of registered tasks (locked, queued) in one statement.
CREATE FUNCTION store_outcomes(p_ids uuid[], p_outcomes text[], p_codes text[],
                               p_persons uuid[]) RETURNS void
LANGUAGE sql AS $$
    UPDATE tasks t SET
        status = u.outcome,
        person_id = u.person_id,
        error_code = u.error_code,
        error_message = task_error_message(u.error_code),
        attempts = t.attempts + 1,
        completed_at = now(),
        updated_at = now()
    FROM unnest(p_ids, p_outcomes, p_codes, p_persons) AS u(id, outcome, error_code, person_id)
    WHERE t.id = u.id
$$;

-- Delivered ids this transaction did not lock: `skipped` when the task is
-- already terminal (detail: its status), `busy` when another transaction
-- holds it, `missing` when it is gone (job deleted).
CREATE FUNCTION batch_unlocked(p_ids uuid[], p_locked uuid[])
RETURNS TABLE (task_id uuid, outcome text, detail text)
LANGUAGE sql STABLE AS $$
    SELECT x, CASE WHEN t.id IS NULL THEN 'missing'
                   WHEN t.status = 'queued' THEN 'busy'
                   ELSE 'skipped' END,
           CASE WHEN t.status <> 'queued' THEN t.status END
    FROM unnest(p_ids) AS x LEFT JOIN tasks t ON t.id = x
    WHERE NOT (x = ANY (p_locked))
$$;

-- The common path: lock, claim, register, count once per job, store the
-- outcomes in one statement. Only queued tasks are locked, so a batch of
-- redeliveries writes nothing and its commit costs no WAL flush. Raises on
-- any unexpected error; the caller's subtransaction undoes all of it.
CREATE FUNCTION batch_fast(p_ids uuid[], p_claim int,
                           OUT ids uuid[], OUT outcomes text[], OUT details text[],
                           OUT ended boolean[])
LANGUAGE plpgsql AS $$
DECLARE
    v_locked uuid[];
    v_job uuid;
    v_persons uuid[] := '{}';
    r record;
    reg record;
    n_success int := 0;
    n_fail int := 0;
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

    -- Session by session (the order every batch takes its rows in), job by
    -- job. Every locked task is queued: the lock re-checked its status.
    FOR r IN
        SELECT t.id, t.job_id, t.input, j.session_id, j.override_duplicates, j.auto_approve,
               lead(t.job_id) OVER w IS DISTINCT FROM t.job_id AS last_of_job
        FROM tasks t JOIN jobs j ON j.id = t.job_id
        WHERE t.id = ANY (v_locked)
        WINDOW w AS (ORDER BY j.session_id, t.job_id, t.idx)
        ORDER BY j.session_id, t.job_id, t.idx
    LOOP
        reg := register_person(r.session_id, r.input, r.override_duplicates, r.auto_approve,
                               r.id);
        ids := ids || r.id;
        outcomes := outcomes || reg.outcome;
        details := details || reg.error_code;
        v_persons := v_persons || reg.person_id;
        ended := ended || false;
        n_success := n_success + (reg.outcome = 'succeeded')::int;
        n_fail := n_fail + (reg.outcome = 'failed')::int;
        IF r.last_of_job THEN
            ended[cardinality(ended)] := job_add_counts(r.job_id, n_success, n_fail, 0);
            n_success := 0;
            n_fail := 0;
        END IF;
    END LOOP;

    -- The registered tasks are the last cardinality(v_persons) entries.
    PERFORM store_outcomes(ids[cardinality(ids) - cardinality(v_persons) + 1:],
                           outcomes[cardinality(ids) - cardinality(v_persons) + 1:],
                           details[cardinality(ids) - cardinality(v_persons) + 1:],
                           v_persons);
END
$$;

-- The careful path: the delivered tasks only, one subtransaction each (what
-- process_tasks() used to do); a task that raises is reported `error`.
CREATE FUNCTION batch_careful(p_ids uuid[], p_wait boolean,
                              OUT ids uuid[], OUT outcomes text[], OUT details text[],
                              OUT ended boolean[])
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    t tasks;
    j jobs;
    reg record;
    v_outcome text;
    v_detail text;
    v_ended boolean;
BEGIN
    ids := '{}'; outcomes := '{}'; details := '{}'; ended := '{}';
    FOR r IN
        SELECT x AS id FROM unnest(p_ids) AS x
        LEFT JOIN tasks tk ON tk.id = x LEFT JOIN jobs jb ON jb.id = tk.job_id
        ORDER BY jb.session_id, tk.job_id, tk.idx
    LOOP
        v_detail := NULL;
        v_ended := false;
        BEGIN
            IF p_wait THEN
                SELECT * INTO t FROM tasks WHERE id = r.id AND status = 'queued' FOR UPDATE;
            ELSE
                SELECT * INTO t FROM tasks WHERE id = r.id AND status = 'queued'
                FOR UPDATE SKIP LOCKED;
            END IF;
            IF NOT FOUND THEN
                SELECT u.outcome, u.detail INTO v_outcome, v_detail
                FROM batch_unlocked(ARRAY[r.id], '{}') u;
            ELSE
                SELECT * INTO j FROM jobs WHERE id = t.job_id;
                reg := register_person(j.session_id, t.input, j.override_duplicates,
                                       j.auto_approve, t.id);
                PERFORM store_outcomes(ARRAY[t.id], ARRAY[reg.outcome], ARRAY[reg.error_code],
                                       ARRAY[reg.person_id]);
                v_ended := job_count_task(t.job_id, reg.outcome);
                v_outcome := reg.outcome;
                v_detail := reg.error_code;
            END IF;
        EXCEPTION
            WHEN serialization_failure OR deadlock_detected OR query_canceled
                 OR admin_shutdown OR lock_not_available THEN
                RAISE;
            WHEN OTHERS THEN
                v_outcome := 'error';
                v_detail := SQLSTATE || ': ' || SQLERRM;
        END;
        ids := ids || r.id;
        outcomes := outcomes || v_outcome;
        details := details || v_detail;
        ended := ended || v_ended;
    END LOOP;
END
$$;

-- One worker batch, in the caller's transaction. p_claim > 0: lock without
-- waiting and claim up to p_claim tasks in all; p_claim = 0: wait for the
-- delivered tasks, claim nothing. One row per task it saw: succeeded,
-- failed, skipped (already terminal; detail is its status), busy (held by
-- another transaction), missing (job deleted) or error (raised; detail is
-- the error). job_ended is true on the row whose count ended its job.
CREATE FUNCTION process_batch(p_ids uuid[], p_claim int)
RETURNS TABLE (task_id uuid, outcome text, detail text, job_ended boolean)
LANGUAGE plpgsql AS $$
DECLARE
    b record;
BEGIN
    BEGIN
        b := batch_fast(p_ids, p_claim);
    EXCEPTION
        WHEN serialization_failure OR deadlock_detected OR query_canceled
             OR admin_shutdown OR lock_not_available THEN
            RAISE;
        WHEN OTHERS THEN
            b := batch_careful(p_ids, p_claim = 0);
    END;
    RETURN QUERY SELECT * FROM unnest(b.ids, b.outcomes, b.details, b.ended);
END
$$;

-- The previous release's worker entry point: the same batch, waiting for
-- busy tasks instead of claiming others.
CREATE OR REPLACE FUNCTION process_tasks(p_ids uuid[])
RETURNS TABLE (task_id uuid, outcome text, detail text, job_ended boolean)
LANGUAGE sql AS $$
    SELECT * FROM process_batch(p_ids, 0)
$$;

-- Marks a job's run published. Asynchronous commit: losing this mark in a
-- crash only makes the sweeper publish the job again, which processing
-- tolerates, and it spares the POST a second WAL flush.
CREATE FUNCTION mark_job_published(p_job uuid) RETURNS void
LANGUAGE sql AS $$
    SELECT set_config('synchronous_commit', 'off', true);
    UPDATE jobs SET published_at = now() WHERE id = p_job AND published_at IS NULL;
$$;
