-- The registration rules and the job life cycle, in one place.
--
-- register_person() is the only implementation of the registration rules: the
-- synchronous POST /v1/sessions/:id/people and every bulk task call it.
-- process_tasks() runs a batch of tasks in the caller's transaction, each in
-- its own subtransaction, so a failure affects only its task. The resources
-- returned by the API and carried by webhooks are built here too, so a
-- job.ended event's data is byte for byte what GET /v1/jobs/:id returns.

CREATE FUNCTION rfc3339(t timestamptz) RETURNS text
LANGUAGE sql STABLE STRICT AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
$$;

CREATE FUNCTION job_resource(j jobs) RETURNS json
LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'type', 'jobs',
        'id', j.id,
        'attributes', json_build_object(
            'status', j.status,
            'session_id', j.session_id,
            'total_items', j.total_items,
            'total_processed_items', j.total_success + j.total_fail + j.total_cancelled,
            'total_success', j.total_success,
            'total_fail', j.total_fail,
            'total_cancelled', j.total_cancelled,
            'retry_count', j.retry_count,
            'override_duplicates', j.override_duplicates,
            'auto_approve', j.auto_approve,
            'created_at', rfc3339(j.created_at),
            'updated_at', rfc3339(j.updated_at),
            'completed_at', rfc3339(j.completed_at)),
        'links', json_build_object(
            'self', '/v1/jobs/' || j.id,
            'tasks', '/v1/jobs/' || j.id || '/tasks'))
$$;

CREATE FUNCTION person_resource(p people, join_base text) RETURNS json
LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'type', 'people',
        'id', p.id,
        'attributes', json_build_object(
            'email', p.email,
            'first_name', p.first_name,
            'last_name', p.last_name,
            'fields', p.fields,
            'referrer', p.referrer,
            'utm_source', p.utm_source,
            'utm_medium', p.utm_medium,
            'utm_campaign', p.utm_campaign,
            'utm_term', p.utm_term,
            'utm_content', p.utm_content,
            'reference', p.reference,
            'registration_status', p.registration_status,
            'join_url', join_base || p.join_token,
            'created_at', rfc3339(p.created_at)))
$$;

CREATE FUNCTION session_resource(s sessions) RETURNS json
LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'type', 'sessions',
        'id', s.id,
        'attributes', json_build_object(
            'title', s.title,
            'starts_at', rfc3339(s.starts_at),
            'capacity', s.capacity,
            'registration_opens_at', rfc3339(s.registration_opens_at),
            'registration_closes_at', rfc3339(s.registration_closes_at),
            'approval', s.approval,
            'waitlist', s.waitlist,
            'registrants_count', s.registrants_count,
            'waitlist_count', s.waitlist_count,
            'pending_count', s.pending_count,
            'created_at', rfc3339(s.created_at),
            'updated_at', rfc3339(s.updated_at)),
        'links', json_build_object(
            'self', '/v1/sessions/' || s.id,
            'people', '/v1/sessions/' || s.id || '/people'))
$$;

-- A task as GET /v1/jobs/:id/tasks shows it: the person when it succeeded,
-- the error and the attributes sent when it did not.
CREATE FUNCTION task_resource(t tasks, p people, join_base text) RETURNS json
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN t.status IN ('failed', 'cancelled') THEN
        json_build_object(
            'type', 'tasks', 'id', t.id, 'index', t.idx, 'reference', t.reference,
            'status', t.status,
            'errors', json_build_array(json_build_object('code', t.error_code,
                                                         'message', t.error_message)),
            'data', NULL, 'input', t.input)
    ELSE
        json_build_object(
            'type', 'tasks', 'id', t.id, 'index', t.idx, 'reference', t.reference,
            'status', t.status, 'errors', '[]'::json,
            'data', CASE WHEN p.id IS NULL THEN NULL ELSE person_resource(p, join_base) END)
    END
$$;

CREATE FUNCTION task_error_message(code text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE code
        WHEN 'already_registered' THEN 'User already registered for this session.'
        WHEN 'session_full' THEN 'The session has no seat left.'
        WHEN 'registration_closed' THEN 'Registration for this session is not open.'
        WHEN 'session_not_found' THEN 'The session no longer exists.'
        WHEN 'job_cancelled' THEN 'The job was cancelled before this task ran.'
        WHEN 'internal_error' THEN 'The task could not be processed; it was given up after repeated attempts.'
    END
$$;

-- 128+ random bits, URL-safe: two v4 UUIDs (244 random bits) in base64url.
CREATE FUNCTION new_join_token() RETURNS text
LANGUAGE sql VOLATILE AS $$
    SELECT rtrim(translate(encode(uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()),
                                  'base64'), '+/', '-_'), '=')
$$;

-- Writes an outbox event and one pending delivery per subscribed endpoint.
-- The unique index webhook_events_once refuses a second event of a type for
-- the same run of a job: exactly one job.ended per completion.
CREATE FUNCTION emit_event(p_org uuid, p_type text, p_job uuid, p_run int, p_data json)
RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
    v_id uuid := gen_random_uuid();
BEGIN
    INSERT INTO webhook_events (id, organization_id, type, job_id, run, payload)
    VALUES (v_id, p_org, p_type, p_job, p_run,
            json_build_object('type', p_type, 'timestamp', rfc3339(now()), 'data', p_data)::text);
    INSERT INTO webhook_deliveries (event_id, endpoint_id)
    SELECT v_id, e.id FROM webhook_endpoints e
    WHERE e.organization_id = p_org AND p_type = ANY (e.events);
    IF FOUND THEN
        PERFORM pg_notify('bulkreg_webhooks', '');
    END IF;
    RETURN v_id;
END
$$;

-- The registration rules. outcome is 'succeeded' or 'failed' (with
-- error_code). Seats are taken by a conditional UPDATE of the session row,
-- so capacity holds under any concurrency; the row stays locked only from
-- that UPDATE to the end of the caller's transaction.
CREATE FUNCTION register_person(p_session uuid, p_person jsonb, p_override boolean,
                                p_auto_approve boolean, p_task uuid,
                                OUT outcome text, OUT error_code text, OUT person_id uuid)
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
        WHERE p.session_id = p_session AND lower(p.email) = lower(p_person->>'email')
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
        ON CONFLICT (session_id, lower(email)) DO NOTHING
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

-- The synchronous POST /v1/sessions/:id/people: the same rules, for a
-- session of the organization, and the person as it now stands.
CREATE FUNCTION register_one(p_org uuid, p_session uuid, p_person jsonb, p_override boolean,
                             p_auto_approve boolean, p_join_base text,
                             OUT outcome text, OUT error_code text, OUT person json)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    PERFORM 1 FROM sessions WHERE id = p_session AND organization_id = p_org;
    IF NOT FOUND THEN
        outcome := 'failed'; error_code := 'session_not_found'; RETURN;
    END IF;
    r := register_person(p_session, p_person, p_override, p_auto_approve, NULL);
    outcome := r.outcome;
    error_code := r.error_code;
    SELECT person_resource(p, p_join_base) INTO person FROM people p WHERE p.id = r.person_id;
END
$$;

-- Adds finished tasks to a job's counters; when that completes the job it
-- sets the final status and completed_at and emits job.ended, all in the
-- caller's transaction. Returns true when this call ended the job.
CREATE FUNCTION job_add_counts(p_job uuid, p_success int, p_fail int, p_cancelled int)
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
        status = CASE WHEN cancelled_at IS NOT NULL OR total_cancelled > 0 THEN 'cancelled'
                      WHEN total_fail > 0 THEN 'failed'
                      ELSE 'ended' END,
        completed_at = now()
    WHERE id = p_job
    RETURNING * INTO j;
    PERFORM emit_event(j.organization_id, 'job.ended', j.id, j.retry_count, job_resource(j));
    RETURN true;
END
$$;

CREATE FUNCTION job_count_task(p_job uuid, p_status text) RETURNS boolean
LANGUAGE sql AS $$
    SELECT job_add_counts(p_job, (p_status = 'succeeded')::int, (p_status = 'failed')::int,
                          (p_status = 'cancelled')::int)
$$;

-- Runs a batch of tasks. Each task is locked, skipped when already terminal
-- (a redelivery changes nothing), registered, stored and counted inside its
-- own subtransaction: an unexpected error rolls back that task alone and is
-- reported as outcome 'error' so the caller can return its message to the
-- broker. Deadlocks and serialization failures abort the whole batch, for
-- the caller to retry. Tasks are taken in (session, job, index) order so
-- concurrent batches lock rows in one order.
CREATE FUNCTION process_tasks(p_ids uuid[])
RETURNS TABLE (task_id uuid, outcome text, detail text, job_ended boolean)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    t tasks;
    j jobs;
    reg record;
BEGIN
    FOR r IN
        SELECT tk.id FROM tasks tk JOIN jobs jb ON jb.id = tk.job_id
        WHERE tk.id = ANY (p_ids)
        ORDER BY jb.session_id, tk.job_id, tk.idx
    LOOP
        task_id := r.id;
        job_ended := false;
        detail := NULL;
        BEGIN
            SELECT * INTO t FROM tasks WHERE id = r.id FOR UPDATE;
            IF NOT FOUND THEN
                outcome := 'missing';
            ELSIF t.status <> 'queued' THEN
                outcome := 'skipped';
                detail := t.status;
            ELSE
                SELECT * INTO j FROM jobs WHERE id = t.job_id;
                reg := register_person(j.session_id, t.input, j.override_duplicates,
                                       j.auto_approve, t.id);
                UPDATE tasks SET
                    status = reg.outcome,
                    person_id = reg.person_id,
                    error_code = reg.error_code,
                    error_message = task_error_message(reg.error_code),
                    attempts = attempts + 1,
                    completed_at = now(),
                    updated_at = now()
                WHERE id = t.id;
                job_ended := job_count_task(t.job_id, reg.outcome);
                outcome := reg.outcome;
                detail := reg.error_code;
            END IF;
        EXCEPTION
            WHEN serialization_failure OR deadlock_detected OR query_canceled
                 OR admin_shutdown OR lock_not_available THEN
                RAISE;
            WHEN OTHERS THEN
                outcome := 'error';
                detail := SQLSTATE || ': ' || SQLERRM;
        END;
        RETURN NEXT;
    END LOOP;
    -- Tasks whose job was deleted meanwhile.
    RETURN QUERY
        SELECT x, 'missing'::text, NULL::text, false FROM unnest(p_ids) AS x
        WHERE NOT EXISTS (SELECT 1 FROM tasks WHERE id = x);
END
$$;

-- Marks a task failed with internal_error after the broker gave up on it
-- (dead-lettered), counting it like any other finished task.
CREATE FUNCTION fail_task(p_task uuid, p_code text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    t tasks;
BEGIN
    SELECT * INTO t FROM tasks WHERE id = p_task FOR UPDATE;
    IF NOT FOUND OR t.status <> 'queued' THEN
        RETURN false;
    END IF;
    UPDATE tasks SET status = 'failed', error_code = p_code,
                     error_message = task_error_message(p_code),
                     attempts = attempts + 1, completed_at = now(), updated_at = now()
    WHERE id = p_task;
    RETURN job_count_task(t.job_id, 'failed');
END
$$;

-- Creates a job, its tasks (one statement) and its job.created event in the
-- caller's transaction. Returns no row when the session is not the
-- organization's. p_tasks is a JSON array of person attribute objects.
CREATE FUNCTION create_job(p_org uuid, p_session uuid, p_override boolean,
                           p_auto_approve boolean, p_tasks jsonb)
RETURNS TABLE (job_id uuid, job json, task_ids uuid[])
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    j jobs;
BEGIN
    PERFORM 1 FROM sessions WHERE id = p_session AND organization_id = p_org;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    INSERT INTO jobs (organization_id, session_id, total_items, override_duplicates, auto_approve)
    VALUES (p_org, p_session, jsonb_array_length(p_tasks), p_override, p_auto_approve)
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
    PERFORM emit_event(p_org, 'job.created', j.id, 0, job);
    RETURN NEXT;
END
$$;

-- PUT /v1/jobs/:id {"action":"retry_failed"}: in one transaction the failed
-- tasks go back to queued (their counts leave total_fail and so
-- total_processed_items), the job returns to processing with retry_count + 1
-- and the request's override_duplicates (NULL keeps the job's). The caller
-- publishes task_ids.
-- outcome: 'retried', 'not_found', 'job_in_progress' or 'nothing_to_retry'.
CREATE FUNCTION retry_failed(p_org uuid, p_job uuid, p_override boolean,
                             OUT outcome text, OUT job json, OUT task_ids uuid[])
LANGUAGE plpgsql AS $$
DECLARE
    j jobs;
    n int;
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
    SELECT array_agg(t.id ORDER BY t.idx), count(*) INTO task_ids, n FROM t;
    IF n = 0 THEN
        outcome := 'nothing_to_retry'; RETURN;
    END IF;
    UPDATE jobs SET status = 'processing', total_fail = total_fail - n,
                    retry_count = retry_count + 1,
                    override_duplicates = COALESCE(p_override, override_duplicates),
                    completed_at = NULL, published_at = NULL, cancelled_at = NULL,
                    updated_at = now()
    WHERE id = p_job
    RETURNING * INTO j;
    outcome := 'retried';
    job := job_resource(j);
END
$$;

-- DELETE /v1/jobs/:id. While processing: every task not yet started (not
-- locked by a worker) becomes cancelled with job_cancelled in one
-- statement; tasks already running finish normally; the job ends
-- cancelled, now or when its last running task finishes, with one
-- job.ended. When finished: the job and its tasks are deleted (people stay).
-- outcome: 'cancelled', 'deleted' or 'not_found'.
CREATE FUNCTION cancel_or_delete_job(p_org uuid, p_job uuid, OUT outcome text, OUT job json)
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
        WHERE id IN (SELECT id FROM tasks WHERE job_id = p_job AND status = 'queued'
                     FOR UPDATE SKIP LOCKED)
        RETURNING 1
    )
    SELECT count(*) INTO n FROM c;
    UPDATE jobs SET cancelled_at = COALESCE(cancelled_at, now()) WHERE id = p_job;
    PERFORM job_add_counts(p_job, 0, 0, n);
    SELECT job_resource(x) INTO job FROM jobs x WHERE x.id = p_job;
    outcome := 'cancelled';
END
$$;
