-- A job's life cycle: creation, counting finished tasks into it and ending
-- it, retry, cancel and delete, dead-lettered tasks, publication marks, and
-- the trigger that deletes a deleted job's tasks.
--
-- A function file: applied after the schema migrations, again whenever its
-- text changes; see docs/architecture.md, "SQL layout".

-- Creates a job, its tasks (one statement) and its job.created event in the
-- caller's transaction. Returns no row when the session is not the
-- organization's, and a row with no job but unknown_tracks (the 0-based
-- indexes of the tasks whose track_id the session does not have) when a
-- registration job names a track the session lacks: nothing is written
-- then. p_tasks is a JSON array of person attribute objects; p_action is
-- register or a bulk action (approve, deny, cancel).
CREATE OR REPLACE FUNCTION create_job(p_org uuid, p_session uuid, p_action text,
                                      p_override boolean, p_auto_approve boolean,
                                      p_waitlist boolean, p_tasks jsonb)
RETURNS TABLE (job_id uuid, job json, task_ids uuid[], unknown_tracks int[])
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    j jobs;
    v_tracks jsonb;
BEGIN
    -- FOR KEY SHARE: a DELETE of the session waits for this job and finds
    -- it processing (session_delete()).
    SELECT s.tracks INTO v_tracks FROM sessions s
    WHERE s.id = p_session AND s.organization_id = p_org FOR KEY SHARE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF p_action = 'register' THEN
        SELECT array_agg((e.ord - 1)::int ORDER BY e.ord) INTO unknown_tracks
        FROM jsonb_array_elements(p_tasks) WITH ORDINALITY AS e(value, ord)
        WHERE jsonb_typeof(e.value->'track_id') = 'number'
          AND NOT v_tracks @> jsonb_build_array(jsonb_build_object('id', e.value->'track_id'));
        IF unknown_tracks IS NOT NULL THEN
            RETURN NEXT;
            RETURN;
        END IF;
    END IF;
    INSERT INTO jobs (organization_id, session_id, action, total_items, override_duplicates,
                      auto_approve, waitlist)
    VALUES (p_org, p_session, p_action, jsonb_array_length(p_tasks), p_override,
            p_auto_approve, p_waitlist)
    RETURNING * INTO j;
    WITH ins AS (
        INSERT INTO tasks (job_id, idx, input, reference)
        SELECT j.id, (e.ord - 1)::int, e.value, e.value->>'reference'
        FROM jsonb_array_elements(p_tasks) WITH ORDINALITY AS e(value, ord)
        RETURNING id, idx
    )
    SELECT array_agg(ins.id ORDER BY ins.idx) INTO task_ids FROM ins;
    job_id := j.id;
    job := job_resource(j);
    PERFORM emit_event(p_org, 'job.created', j.id, 0, job, NULL);
    RETURN NEXT;
END
$$;

-- Adds finished tasks to a job's counters; when that completes the job it
-- sets the final status and completed_at and emits job.ended, all in the
-- caller's transaction. Returns true when this call ended the job. The job
-- ends `cancelled` when this run cancelled a task (cancelled_at), `failed`
-- when a task failed, else `ended`. p_queued_from, when given, raises the
-- job's queued_from (every queued task below it is now done).
CREATE OR REPLACE FUNCTION job_add_counts(p_job uuid, p_success int, p_fail int, p_cancelled int,
                                          p_queued_from int DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    j jobs;
BEGIN
    UPDATE jobs SET
        total_success = total_success + p_success,
        total_fail = total_fail + p_fail,
        total_cancelled = total_cancelled + p_cancelled,
        queued_from = greatest(queued_from, coalesce(p_queued_from, queued_from)),
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
    PERFORM emit_event(j.organization_id, 'job.ended', j.id, j.retry_count, job_resource(j), NULL);
    RETURN true;
END
$$;

CREATE OR REPLACE FUNCTION job_count_task(p_job uuid, p_status text) RETURNS boolean
LANGUAGE sql AS $$
    SELECT job_add_counts(p_job, (p_status = 'succeeded')::int, (p_status = 'failed')::int,
                          (p_status = 'cancelled')::int)
$$;

-- PUT /v1/jobs/:id {"action":"retry_failed"}: in one transaction the failed
-- tasks go back to queued (their counts leave total_fail and so
-- total_processed_items), the job returns to processing with retry_count + 1
-- and the request's override_duplicates (NULL keeps the job's), and its
-- queued_from down to the first task queued again. The caller publishes
-- task_ids.
-- outcome: 'retried', 'not_found', 'job_in_progress' or 'nothing_to_retry'.
CREATE OR REPLACE FUNCTION retry_failed(p_org uuid, p_job uuid, p_override boolean,
                                        OUT outcome text, OUT job json, OUT task_ids uuid[])
LANGUAGE plpgsql AS $$
DECLARE
    j jobs;
    n int;
    v_first int;
BEGIN
    SELECT * INTO j FROM jobs WHERE id = p_job AND organization_id = p_org FOR UPDATE;
    IF NOT FOUND THEN
        outcome := 'not_found'; RETURN;
    END IF;
    IF j.status = 'processing' THEN
        outcome := 'job_in_progress'; RETURN;
    END IF;
    WITH t AS (
        UPDATE tasks SET status = 'queued', error_code = NULL, error_message = NULL,
                         completed_at = NULL, updated_at = now()
        WHERE job_id = p_job AND status = 'failed'
        RETURNING id, idx
    )
    SELECT array_agg(t.id ORDER BY t.idx), count(*), min(t.idx) INTO task_ids, n, v_first
    FROM t;
    IF n = 0 THEN
        outcome := 'nothing_to_retry'; RETURN;
    END IF;
    UPDATE jobs SET status = 'processing', total_fail = total_fail - n,
                    retry_count = retry_count + 1,
                    override_duplicates = COALESCE(p_override, override_duplicates),
                    completed_at = NULL, published_at = NULL, cancelled_at = NULL,
                    queued_from = v_first, updated_at = now()
    WHERE id = p_job
    RETURNING * INTO j;
    outcome := 'retried';
    job := job_resource(j);
END
$$;

-- Cancels a processing job: under the job's lock (waiting for a batch that
-- holds it to commit), every task not committed is queued and becomes
-- cancelled with job_cancelled; the job ends cancelled with one job.ended.
-- outcome: 'cancelled', 'finished' (the job is not processing: nothing
-- changed) or 'not_found'; job is the job resource after it. DELETE
-- /v1/jobs/:id and the console's cancel action (docs/console.md) run it.
CREATE OR REPLACE FUNCTION cancel_job(p_org uuid, p_job uuid, OUT outcome text, OUT job json)
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
        outcome := 'finished'; job := job_resource(j); RETURN;
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

-- DELETE /v1/jobs/:id. While processing: cancel_job(). When finished: the
-- job and its tasks are deleted (people stay), under the row lock
-- cancel_job() took. outcome: 'cancelled', 'deleted' or 'not_found'.
CREATE OR REPLACE FUNCTION cancel_or_delete_job(p_org uuid, p_job uuid,
                                                OUT outcome text, OUT job json)
LANGUAGE plpgsql AS $$
BEGIN
    SELECT c.outcome, c.job INTO outcome, job FROM cancel_job(p_org, p_job) c;
    IF outcome = 'finished' THEN
        DELETE FROM jobs WHERE id = p_job;
        outcome := 'deleted';
        job := NULL;
    END IF;
END
$$;

-- A dead-lettered task (the broker gave up on it) fails with p_code like
-- any finished task, under its job's lock (the lock every writer of a job's
-- tasks holds).
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

-- Marks a job's run published: a HOT update (published_at is in no index),
-- planned once per connection. Asynchronous commit: losing this mark in a
-- crash only makes the sweeper publish the job again, which processing
-- tolerates, and it spares the POST a second WAL flush.
CREATE OR REPLACE FUNCTION mark_job_published(p_job uuid) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    -- Asynchronous commit: a mark lost in a crash only makes the sweeper
    -- publish the job again.
    PERFORM set_config('synchronous_commit', 'off', true);
    UPDATE jobs SET published_at = now() WHERE id = p_job AND published_at IS NULL;
END
$$;

-- tasks.job_id is no foreign key (tasks are only ever inserted by
-- create_job(), with their job, so a check could never fail); this
-- statement trigger deletes the tasks of deleted jobs instead of ON DELETE
-- CASCADE, once per statement and with one join, also when the jobs go
-- with their session's or organization's own cascades. The trigger is
-- created here, with its function, so it exists exactly when the function
-- does; CREATE OR REPLACE makes applying this file again harmless.
CREATE OR REPLACE FUNCTION delete_tasks_of_deleted_jobs() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM tasks t USING deleted_jobs d WHERE t.job_id = d.id;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER jobs_delete_tasks AFTER DELETE ON jobs
    REFERENCING OLD TABLE AS deleted_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION delete_tasks_of_deleted_jobs();
