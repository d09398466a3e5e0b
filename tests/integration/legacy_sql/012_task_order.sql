-- A job's tasks run in index order; a batch never waits for a lock; a
-- cancelled job is one whose run cancelled something.
--
-- Task order. The outcome of a job must be exactly that of registering its
-- tasks one by one in index order (duplicates within the job, who gets the
-- last seats, waitlist positions), whichever consumer receives which
-- message. A batch used to claim a job's tasks above its lowest DELIVERED
-- index, so tasks delivered to a slower consumer ran after later ones. Now
-- a job's tasks are registered only by the transaction holding the job's
-- row lock, and always from the job's lowest QUEUED index upwards: every
-- task a batch registers has every task below it registered, by this
-- batch or an earlier one. A batch takes, for each job it holds, the
-- queued tasks up to its highest delivered index (so every delivered task
-- of the job is done), then more of them while p_claim allows.
--
-- No waiting. A batch locks the jobs, then the sessions, of its delivered
-- tasks with SKIP LOCKED. A delivered task whose job another transaction
-- holds (a batch elsewhere registering it), or whose session is held (a
-- registration elsewhere, or a frozen process whose transaction keeps the
-- row until idle_in_transaction_session_timeout ends it), is reported
-- `busy` and left for later: the worker keeps its message and offers it
-- again in a later batch. So one stuck session stalls only its own tasks.
--
-- Cancellation. DELETE /v1/jobs/:id waits for the job's row lock, so it
-- never races a batch: afterwards every task not committed is queued and
-- is cancelled. A job ends `cancelled` only when its current run had a
-- task cancelled (cancelled_at is set only then, and retry_failed clears
-- it), not because an earlier run's tasks were.

-- What a batch may register: the delivered tasks' jobs and sessions it
-- could lock, and for each such job its queued tasks from the lowest index
-- up to the highest delivered one, then more while the claim allows. Every
-- registered task is returned in (session, job, index) order; every other
-- delivered task as a row of the u_ arrays: `missing` (job deleted),
-- `skipped` (terminal; detail: its status) or `busy` (detail: `job` or
-- `session`, whichever another transaction holds).
CREATE FUNCTION batch_take(p_ids uuid[], p_claim int,
                           OUT t_ids uuid[], OUT t_jobs uuid[], OUT t_sessions uuid[],
                           OUT t_inputs jsonb[],
                           OUT u_ids uuid[], OUT u_outcomes text[], OUT u_details text[])
LANGUAGE plpgsql AS $$
DECLARE
    v_djobs uuid[];
    v_didx int[];
    v_jobs uuid[];
    v_job_sessions uuid[];
    v_sessions uuid[];
BEGIN
    -- The delivered tasks still queued: their jobs and indexes.
    SELECT coalesce(array_agg(t.job_id), '{}'), coalesce(array_agg(t.idx), '{}')
    INTO v_djobs, v_didx
    FROM tasks t WHERE t.id = ANY (p_ids) AND t.status = 'queued';
    SELECT coalesce(array_agg(x.id), '{}'), coalesce(array_agg(x.session_id), '{}')
    INTO v_jobs, v_job_sessions
    FROM (SELECT j.id, j.session_id FROM jobs j
          WHERE j.id = ANY (v_djobs)
          ORDER BY j.id
          FOR NO KEY UPDATE SKIP LOCKED) x;
    SELECT coalesce(array_agg(x.id), '{}') INTO v_sessions
    FROM (SELECT s.id FROM sessions s WHERE s.id = ANY (v_job_sessions)
          ORDER BY s.id
          FOR NO KEY UPDATE SKIP LOCKED) x;

    SELECT coalesce(array_agg(x.id ORDER BY x.session_id, x.job_id, x.idx), '{}'),
           coalesce(array_agg(x.job_id ORDER BY x.session_id, x.job_id, x.idx), '{}'),
           coalesce(array_agg(x.session_id ORDER BY x.session_id, x.job_id, x.idx), '{}'),
           coalesce(array_agg(x.input ORDER BY x.session_id, x.job_id, x.idx), '{}')
    INTO t_ids, t_jobs, t_sessions, t_inputs
    FROM (SELECT t.id, t.job_id, j.session_id, t.idx, t.input,
                 t.idx <= d.last AS needed,
                 row_number() OVER (ORDER BY j.id, t.idx) AS n
          FROM unnest((SELECT v_jobs), (SELECT v_job_sessions)) AS j(id, session_id)
          JOIN (SELECT x.job, max(x.idx) AS last
                FROM unnest((SELECT v_djobs), (SELECT v_didx)) AS x(job, idx)
                GROUP BY x.job) d ON d.job = j.id
          JOIN tasks t ON t.job_id = j.id AND t.status = 'queued'
          WHERE j.session_id = ANY (v_sessions)) x
    WHERE x.needed OR x.n <= p_claim;

    SELECT coalesce(array_agg(x), '{}'),
           coalesce(array_agg(CASE WHEN t.id IS NULL THEN 'missing'
                                   WHEN t.status <> 'queued' THEN 'skipped'
                                   ELSE 'busy' END), '{}'),
           coalesce(array_agg(CASE WHEN t.id IS NULL THEN NULL
                                   WHEN t.status <> 'queued' THEN t.status
                                   WHEN t.job_id = ANY (v_jobs) THEN 'session'
                                   ELSE 'job' END), '{}')
    INTO u_ids, u_outcomes, u_details
    FROM unnest(p_ids) AS x LEFT JOIN tasks t ON t.id = x
    WHERE NOT (x = ANY (t_ids));
END
$$;

-- The common path: take, register each session's tasks with one
-- register_people(), store the outcomes in one statement, count once per
-- job. Only queued tasks are written, so a batch of redeliveries writes
-- nothing and its commit costs no WAL flush. Raises on any unexpected
-- error; the caller's subtransaction undoes all of it.
CREATE OR REPLACE FUNCTION batch_fast(p_ids uuid[], p_claim int,
                                      OUT ids uuid[], OUT outcomes text[], OUT details text[],
                                      OUT ended boolean[])
LANGUAGE plpgsql AS $$
DECLARE
    b record;
    g record;
    c record;
    r_outcomes text[] := '{}';
    r_codes text[] := '{}';
    r_persons uuid[] := '{}';
    r_ended boolean[];
    g_outcomes text[];
    g_codes text[];
    g_persons uuid[];
BEGIN
    b := batch_take(p_ids, p_claim);
    ids := b.u_ids;
    outcomes := b.u_outcomes;
    details := b.u_details;
    ended := array_fill(false, ARRAY[cardinality(b.u_ids)]);
    IF cardinality(b.t_ids) = 0 THEN
        RETURN;
    END IF;

    -- Session by session, each session's tasks in job and index order.
    FOR g IN
        SELECT x.session_id,
               array_agg(x.id ORDER BY x.n) AS ids,
               array_agg(x.input ORDER BY x.n) AS inputs,
               array_agg(j.override_duplicates ORDER BY x.n) AS overrides,
               array_agg(j.auto_approve ORDER BY x.n) AS auto_approves
        FROM unnest((SELECT b.t_ids), (SELECT b.t_jobs), (SELECT b.t_sessions), (SELECT b.t_inputs))
             WITH ORDINALITY AS x(id, job, session_id, input, n)
        JOIN jobs j ON j.id = x.job
        GROUP BY x.session_id
        ORDER BY x.session_id
    LOOP
        SELECT array_agg(r.outcome ORDER BY r.ord), array_agg(r.error_code ORDER BY r.ord),
               array_agg(r.person_id ORDER BY r.ord)
        INTO g_outcomes, g_codes, g_persons
        FROM register_people(g.session_id, g.inputs, g.overrides, g.auto_approves, g.ids) r;
        r_outcomes := r_outcomes || g_outcomes;
        r_codes := r_codes || g_codes;
        r_persons := r_persons || g_persons;
    END LOOP;
    PERFORM store_outcomes(b.t_ids, r_outcomes, r_codes, r_persons);

    -- Counters once per job, in job order; the job's last task carries
    -- job_ended when the count ended it.
    r_ended := array_fill(false, ARRAY[cardinality(b.t_ids)]);
    FOR c IN
        SELECT x.job, count(*) FILTER (WHERE x.o = 'succeeded')::int AS n_success,
               count(*) FILTER (WHERE x.o = 'failed')::int AS n_fail, max(x.n)::int AS last
        FROM unnest(b.t_jobs, r_outcomes) WITH ORDINALITY AS x(job, o, n)
        GROUP BY x.job
        ORDER BY x.job
    LOOP
        r_ended[c.last] := job_add_counts(c.job, c.n_success, c.n_fail, 0);
    END LOOP;

    ids := ids || b.t_ids;
    outcomes := outcomes || r_outcomes;
    details := details || r_codes;
    ended := ended || r_ended;
END
$$;

-- The careful path, after the fast one raised (and its locks went with its
-- subtransaction): the same take, then each task in its own
-- subtransaction; a task that raises is reported `error` and stays queued.
-- Its job's later tasks still run: an unexpected error is the task's
-- failure as far as the others are concerned (its registration wrote
-- nothing), which the broker makes final after x-delivery-limit
-- deliveries (internal_error). Holding them back instead could starve the
-- failing task's own message of a consumer.
CREATE OR REPLACE FUNCTION batch_careful(p_ids uuid[], p_claim int,
                                         OUT ids uuid[], OUT outcomes text[],
                                         OUT details text[], OUT ended boolean[])
LANGUAGE plpgsql AS $$
DECLARE
    b record;
    j jobs;
    reg record;
    v_outcome text;
    v_detail text;
    v_ended boolean;
BEGIN
    b := batch_take(p_ids, p_claim);
    ids := b.u_ids;
    outcomes := b.u_outcomes;
    details := b.u_details;
    ended := array_fill(false, ARRAY[cardinality(b.u_ids)]);
    FOR i IN 1..cardinality(b.t_ids) LOOP
        v_detail := NULL;
        v_ended := false;
        BEGIN
            SELECT * INTO j FROM jobs WHERE id = b.t_jobs[i];
            reg := register_person(j.session_id, b.t_inputs[i], j.override_duplicates,
                                   j.auto_approve, b.t_ids[i]);
            PERFORM store_outcomes(ARRAY[b.t_ids[i]], ARRAY[reg.outcome],
                                   ARRAY[reg.error_code], ARRAY[reg.person_id]);
            v_ended := job_count_task(b.t_jobs[i], reg.outcome);
            v_outcome := reg.outcome;
            v_detail := reg.error_code;
        EXCEPTION
            WHEN serialization_failure OR deadlock_detected OR query_canceled
                 OR admin_shutdown OR lock_not_available THEN
                RAISE;
            WHEN OTHERS THEN
                v_outcome := 'error';
                v_detail := SQLSTATE || ': ' || SQLERRM;
        END;
        ids := ids || b.t_ids[i];
        outcomes := outcomes || v_outcome;
        details := details || v_detail;
        ended := ended || v_ended;
    END LOOP;
END
$$;

-- One worker batch, in the caller's transaction: registers what
-- batch_take() gives, claiming up to p_claim tasks beyond the delivered
-- ones' needs. One row per task it saw: succeeded, failed, skipped
-- (already terminal; detail is its status), busy (its job or session held
-- by another transaction: offer it again later),
-- missing (job deleted) or error (raised; detail is the error). job_ended
-- is true on the row whose count ended its job.
CREATE OR REPLACE FUNCTION process_batch(p_ids uuid[], p_claim int)
RETURNS TABLE (task_id uuid, outcome text, detail text, job_ended boolean)
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
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
            b := batch_careful(p_ids, p_claim);
    END;
    RETURN QUERY SELECT * FROM unnest(b.ids, b.outcomes, b.details, b.ended);
END
$$;

-- The careful path took (p_ids, p_wait boolean) before; nothing calls
-- that form any more.
DROP FUNCTION batch_careful(uuid[], boolean);

-- A dead-lettered task fails like any finished task, under its job's lock
-- (the lock every writer of a job's tasks holds).
CREATE OR REPLACE FUNCTION fail_task(p_task uuid, p_code text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    t tasks;
BEGIN
    SELECT * INTO t FROM tasks WHERE id = p_task;
    IF NOT FOUND OR t.status <> 'queued' THEN
        RETURN false;
    END IF;
    PERFORM 1 FROM jobs WHERE id = t.job_id FOR NO KEY UPDATE;
    SELECT * INTO t FROM tasks WHERE id = p_task;
    IF t.status <> 'queued' THEN
        RETURN false;
    END IF;
    UPDATE tasks SET status = 'failed', error_code = p_code,
                     error_message = task_error_message(p_code),
                     attempts = attempts + 1, completed_at = now(), updated_at = now()
    WHERE id = p_task;
    RETURN job_count_task(t.job_id, 'failed');
END
$$;

-- Completion: `cancelled` when this run cancelled a task (cancelled_at).
CREATE OR REPLACE FUNCTION job_add_counts(p_job uuid, p_success int, p_fail int, p_cancelled int)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    j jobs;
BEGIN
    UPDATE jobs SET
        total_success = total_success + p_success,
        total_fail = total_fail + p_fail,
        total_cancelled = total_cancelled + p_cancelled,
        updated_at = now()
    WHERE id = p_job
    RETURNING * INTO j;
    IF NOT FOUND OR j.status <> 'processing'
       OR j.total_success + j.total_fail + j.total_cancelled < j.total_items THEN
        RETURN false;
    END IF;
    UPDATE jobs SET
        status = CASE WHEN cancelled_at IS NOT NULL THEN 'cancelled'
                      WHEN total_fail > 0 THEN 'failed'
                      ELSE 'ended' END,
        completed_at = now()
    WHERE id = p_job
    RETURNING * INTO j;
    PERFORM emit_event(j.organization_id, 'job.ended', j.id, j.retry_count, job_resource(j));
    RETURN true;
END
$$;

-- DELETE /v1/jobs/:id. While processing: under the job's lock (waiting for
-- a batch that holds it to commit), every task not committed is queued and
-- becomes cancelled with job_cancelled; the job ends cancelled with one
-- job.ended. When finished: the job and its tasks are deleted (people
-- stay). outcome: 'cancelled', 'deleted' or 'not_found'.
CREATE OR REPLACE FUNCTION cancel_or_delete_job(p_org uuid, p_job uuid,
                                                OUT outcome text, OUT job json)
LANGUAGE plpgsql AS $$
DECLARE
    j jobs;
    n int;
BEGIN
    SELECT * INTO j FROM jobs WHERE id = p_job AND organization_id = p_org FOR UPDATE;
    IF NOT FOUND THEN
        outcome := 'not_found'; RETURN;
    END IF;
    IF j.status <> 'processing' THEN
        DELETE FROM jobs WHERE id = p_job;
        outcome := 'deleted'; RETURN;
    END IF;
    WITH c AS (
        UPDATE tasks SET status = 'cancelled', error_code = 'job_cancelled',
                         error_message = task_error_message('job_cancelled'),
                         completed_at = now(), updated_at = now()
        WHERE job_id = p_job AND status = 'queued'
        RETURNING 1
    )
    SELECT count(*) INTO n FROM c;
    -- A processing job always has a queued task here; without one there is
    -- nothing this cancel did, and the job ends as its tasks say.
    IF n > 0 THEN
        UPDATE jobs SET cancelled_at = now() WHERE id = p_job;
        PERFORM job_add_counts(p_job, 0, 0, n);
    END IF;
    SELECT job_resource(x) INTO job FROM jobs x WHERE x.id = p_job;
    outcome := 'cancelled';
END
$$;
