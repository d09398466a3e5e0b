-- Worker batches: process_batch() is the one statement a worker runs per
-- batch of deliveries (worker/consumer.c). docs/performance.md measures
-- each of the choices below.
--
-- A function file: applied after the schema migrations, again whenever its
-- text changes; see docs/architecture.md, "SQL layout".
--
-- Task order. The outcome of a job is exactly that of registering its tasks
-- one by one in index order (duplicates within the job, who gets the last
-- seats, waitlist positions), whichever consumer receives which message. A
-- job's tasks are registered only by the transaction holding the job's row
-- lock, and always from the job's lowest QUEUED index upwards: every task a
-- batch registers has every task below it registered, by this batch or an
-- earlier one. A batch takes, for each job it holds, the queued tasks up to
-- its highest delivered index (so every delivered task of the job is done),
-- then more of them while p_claim allows (job affinity: their own messages
-- arrive later, find the task terminal and are acked as `skipped`).
--
-- No waiting. A batch locks the sessions, then the jobs, of its delivered
-- tasks with SKIP LOCKED (a batch that cannot have a session takes none of
-- its jobs). A delivered task whose session is held (another batch, a
-- registration elsewhere, or a frozen process whose transaction keeps the
-- row until idle_in_transaction_session_timeout ends it), or whose job
-- another batch holds, is reported `busy` and left for later: the worker
-- keeps its message and offers it again after a backoff. So one stuck
-- session stalls only its own tasks. Only a batch that can have none of
-- its sessions, and so has nothing else to do, waits for one, up to 200 ms
-- (batch_wait_session()).
--
-- The scan of a job. Jobs keep queued_from, a lower bound of their lowest
-- queued index; a batch reads a job's tasks from there and no further than
-- it takes, so a batch costs the same at any depth of a large job.
--
-- No subtransaction per task on the common path. Expected outcomes
-- (duplicate, full, closed) never raise, so the whole batch runs in ONE
-- subtransaction (batch_fast). Only if something raises is it rolled back
-- and the tasks run again one by one, each in its own subtransaction
-- (batch_careful), so a failure still affects only its task.
--
-- Plans by key. process_batch() (and all it calls) runs with sequential
-- scans priced out: PL/pgSQL keeps one plan per statement and connection,
-- and a worker's first batches often run against a small tasks table,
-- where a sequential scan looks cheaper; that plan then stayed while the
-- table grew. Every statement a batch runs finds its rows through a key.

-- Stores the outcomes of registered tasks (locked, queued) in one
-- statement: a HOT update (no index of tasks covers a column it changes).
-- PL/pgSQL, so the UPDATE is planned once per connection; the arrays are
-- unnested from sub-selects so their lengths cannot tempt the planner into
-- a custom plan on every call.
CREATE OR REPLACE FUNCTION store_outcomes(p_ids uuid[], p_outcomes text[], p_codes text[],
                                          p_persons uuid[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE tasks t SET
        status = u.outcome,
        person_id = u.person_id,
        error_code = u.error_code,
        error_message = task_error_message(u.error_code),
        attempts = t.attempts + 1,
        completed_at = now(),
        updated_at = now()
    FROM unnest((SELECT p_ids), (SELECT p_outcomes), (SELECT p_codes), (SELECT p_persons))
         AS u(id, outcome, error_code, person_id)
    WHERE t.id = u.id;
END
$$;

-- A batch whose every session is held has nothing else to do: it waits
-- for one of them, briefly, instead of coming back later. Where one
-- session is busy with batch after batch (one large event), the next batch
-- then takes the row the moment the holder commits, as a plain lock wait
-- would, instead of after a backoff. The wait is bounded (200 ms) so that a
-- holder that does not commit (a frozen process) delays the deliveries
-- that arrive meanwhile for other sessions by no more than that; the
-- batch's own deliveries are then parked. The first session, in id order,
-- or none.
CREATE OR REPLACE FUNCTION batch_wait_session(p_jobs uuid[]) RETURNS uuid[]
LANGUAGE plpgsql AS $$
DECLARE
    v_timeout text := current_setting('lock_timeout');
    v_session uuid;
BEGIN
    PERFORM set_config('lock_timeout', '200ms', true);
    BEGIN
        SELECT s.id INTO v_session FROM sessions s
        WHERE s.id = (SELECT j.session_id FROM jobs j WHERE j.id = ANY (p_jobs)
                      ORDER BY j.session_id LIMIT 1)
        FOR NO KEY UPDATE;
    EXCEPTION WHEN lock_not_available THEN
        v_session := NULL;
    END;
    PERFORM set_config('lock_timeout', v_timeout, true);
    RETURN CASE WHEN v_session IS NULL THEN '{}'::uuid[] ELSE ARRAY[v_session] END;
END
$$;

-- What a batch may register: the delivered tasks' jobs and sessions it
-- could lock, and for each such job its queued tasks from the lowest index
-- up to the highest delivered one, then more while the claim allows. Every
-- registered task is returned in (session, job, index) order; every other
-- delivered task as a row of the u_ arrays: `missing` (job deleted),
-- `skipped` (terminal; detail: its status) or `busy` (detail: `job` or
-- `session`, whichever another transaction holds).
CREATE OR REPLACE FUNCTION batch_take(p_ids uuid[], p_claim int,
                           OUT t_ids uuid[], OUT t_jobs uuid[], OUT t_sessions uuid[],
                           OUT t_inputs jsonb[], OUT t_idx int[],
                           OUT u_ids uuid[], OUT u_outcomes text[], OUT u_details text[])
LANGUAGE plpgsql AS $$
DECLARE
    v_djobs uuid[];
    v_didx int[];
    v_jobs uuid[];
    v_job_sessions uuid[];
    v_job_from int[];
    v_sessions uuid[];
BEGIN
    -- The delivered tasks still queued: their jobs and indexes.
    SELECT coalesce(array_agg(t.job_id), '{}'), coalesce(array_agg(t.idx), '{}')
    INTO v_djobs, v_didx
    FROM tasks t WHERE t.id = ANY (p_ids) AND t.status = 'queued';
    -- Sessions first: a batch that cannot have a session does not hold its
    -- jobs either, so it never keeps them from the batch that has it.
    SELECT coalesce(array_agg(x.id), '{}') INTO v_sessions
    FROM (SELECT s.id FROM sessions s
          WHERE s.id IN (SELECT j.session_id FROM jobs j WHERE j.id = ANY (v_djobs))
          ORDER BY s.id
          FOR NO KEY UPDATE SKIP LOCKED) x;
    IF cardinality(v_sessions) = 0 AND cardinality(v_djobs) > 0 THEN
        v_sessions := batch_wait_session(v_djobs);
    END IF;
    SELECT coalesce(array_agg(x.id), '{}'), coalesce(array_agg(x.session_id), '{}'),
           coalesce(array_agg(x.queued_from), '{}')
    INTO v_jobs, v_job_sessions, v_job_from
    FROM (SELECT j.id, j.session_id, j.queued_from FROM jobs j
          WHERE j.id = ANY (v_djobs) AND j.session_id = ANY (v_sessions)
          ORDER BY j.id
          FOR NO KEY UPDATE SKIP LOCKED) x;

    SELECT coalesce(array_agg(x.id ORDER BY x.session_id, x.job_id, x.idx), '{}'),
           coalesce(array_agg(x.job_id ORDER BY x.session_id, x.job_id, x.idx), '{}'),
           coalesce(array_agg(x.session_id ORDER BY x.session_id, x.job_id, x.idx), '{}'),
           coalesce(array_agg(x.input ORDER BY x.session_id, x.job_id, x.idx), '{}'),
           coalesce(array_agg(x.idx ORDER BY x.session_id, x.job_id, x.idx), '{}')
    INTO t_ids, t_jobs, t_sessions, t_inputs, t_idx
    FROM (SELECT t.id, t.job_id, j.session_id, t.idx, t.input,
                 t.idx <= d.last AS needed,
                 row_number() OVER (ORDER BY j.id, t.idx) AS n
          FROM unnest((SELECT v_jobs), (SELECT v_job_sessions), (SELECT v_job_from))
               AS j(id, session_id, queued_from)
          JOIN (SELECT x.job, max(x.idx) AS last
                FROM unnest((SELECT v_djobs), (SELECT v_didx)) AS x(job, idx)
                GROUP BY x.job) d ON d.job = j.id
          JOIN tasks t ON t.job_id = j.id AND t.status = 'queued'
               AND t.idx >= j.queued_from
               AND t.idx <= greatest(d.last, j.queued_from + p_claim - 1)) x
    WHERE x.needed OR x.n <= p_claim;

    SELECT coalesce(array_agg(x), '{}'),
           coalesce(array_agg(CASE WHEN t.id IS NULL THEN 'missing'
                                   WHEN t.status <> 'queued' THEN 'skipped'
                                   ELSE 'busy' END), '{}'),
           coalesce(array_agg(CASE WHEN t.id IS NULL THEN NULL
                                   WHEN t.status <> 'queued' THEN t.status
                                   WHEN j.session_id = ANY (v_sessions) THEN 'job'
                                   ELSE 'session' END), '{}')
    INTO u_ids, u_outcomes, u_details
    FROM unnest(p_ids) AS x LEFT JOIN tasks t ON t.id = x LEFT JOIN jobs j ON j.id = t.job_id
    WHERE NOT (x = ANY (t_ids));
END
$$;

-- The common path: take, apply each session's tasks with one
-- session_apply(), store the outcomes in one statement, count once per
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
               array_agg(j.action ORDER BY x.n) AS actions,
               array_agg(j.override_duplicates ORDER BY x.n) AS overrides,
               array_agg(j.auto_approve ORDER BY x.n) AS auto_approves,
               array_agg(j.waitlist ORDER BY x.n) AS waitlists
        FROM unnest((SELECT b.t_ids), (SELECT b.t_jobs), (SELECT b.t_sessions), (SELECT b.t_inputs))
             WITH ORDINALITY AS x(id, job, session_id, input, n)
        JOIN jobs j ON j.id = x.job
        GROUP BY x.session_id
        ORDER BY x.session_id
    LOOP
        SELECT array_agg(r.outcome ORDER BY r.ord), array_agg(r.error_code ORDER BY r.ord),
               array_agg(r.person_id ORDER BY r.ord)
        INTO g_outcomes, g_codes, g_persons
        FROM session_apply(g.session_id, g.actions, g.inputs, g.overrides, g.auto_approves,
                           g.waitlists, g.ids) r;
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
               count(*) FILTER (WHERE x.o = 'failed')::int AS n_fail, max(x.n)::int AS last,
               max(x.idx) AS top
        FROM unnest(b.t_jobs, r_outcomes, b.t_idx) WITH ORDINALITY AS x(job, o, idx, n)
        GROUP BY x.job
        ORDER BY x.job
    LOOP
        -- Every queued task of the job up to `top` was taken, and is now done.
        r_ended[c.last] := job_add_counts(c.job, c.n_success, c.n_fail, 0, c.top + 1);
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
            reg := person_apply(j.session_id, j.action, b.t_inputs[i], j.override_duplicates,
                                j.auto_approve, j.waitlist, b.t_ids[i]);
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
-- by another transaction: offer it again later), missing (job deleted) or
-- error (raised; detail is the error). job_ended is true on the row whose
-- count ended its job.
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

-- The same batch, claiming nothing beyond the delivered tasks (tests use it
-- to redeliver tasks by hand).
CREATE OR REPLACE FUNCTION process_tasks(p_ids uuid[])
RETURNS TABLE (task_id uuid, outcome text, detail text, job_ended boolean)
LANGUAGE sql AS $$
    SELECT * FROM process_batch(p_ids, 0)
$$;
