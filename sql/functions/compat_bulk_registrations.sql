-- The Bulk Registration Service compatible API (api/compat/bulk_registrations.c,
-- docs/compat/bulk-registrations.md): a translation, with no registration
-- rule of its own. An activity is the organization's session for an
-- (activity_type, activity_date); a bulk registration is a registration job
-- into it made by create_job(), whose tasks register each mentor as a person
-- with external_id = the mentor id, run by the workers like any job
-- (session_apply() in registration.sql); retry and cancel are
-- retry_failed() and cancel_or_delete_job() (jobs.sql). Only jobs with a
-- bulk_registrations row are bulk registrations.
--
-- The functions that call functions of later files (rfc3339() in
-- resources.sql, the job functions) are PL/pgSQL: their bodies are
-- resolved when they run, not when this file is applied (this file comes
-- first in name order; docs/architecture.md, "SQL layout").
--
-- A function file: applied after the schema migrations, again whenever its
-- text changes.

-- The foreign status of a job: processing, completed (ended or failed: the
-- job is over whatever its tasks' outcomes) or cancelled.
CREATE OR REPLACE FUNCTION brs_status(p_status text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_status WHEN 'processing' THEN 'processing'
                         WHEN 'cancelled' THEN 'cancelled' ELSE 'completed' END
$$;

-- The native statuses a foreign status filter stands for (NULL: any).
CREATE OR REPLACE FUNCTION brs_native_statuses(p_status text) RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_status WHEN 'completed' THEN ARRAY['ended', 'failed']
                         WHEN 'processing' THEN ARRAY['processing']
                         WHEN 'cancelled' THEN ARRAY['cancelled'] END
$$;

-- One result per mentor, in request order: success with the person's id
-- as activity_id, failed or cancelled with the task's error, pending while
-- the task is queued.
CREATE OR REPLACE FUNCTION brs_results(p_job uuid) RETURNS json
LANGUAGE sql STABLE AS $$
    SELECT coalesce(json_agg(json_build_object(
        'mentor_id', t.input->>'external_id',
        'activity_id', CASE WHEN t.status = 'succeeded' THEN t.person_id END,
        'status', CASE t.status WHEN 'succeeded' THEN 'success' WHEN 'queued' THEN 'pending'
                                ELSE t.status END,
        'error', CASE WHEN t.error_code IS NOT NULL THEN
                     json_build_object('code', t.error_code, 'message', t.error_message) END)
        ORDER BY t.idx), '[]'::json)
    FROM tasks t WHERE t.job_id = p_job
$$;

-- A bulk registration as the list shows it (GET of one adds its results).
CREATE OR REPLACE FUNCTION brs_summary(j jobs, b bulk_registrations) RETURNS json
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN json_build_object(
        'id', j.id,
        'coordinator_id', b.coordinator_id,
        'mentor_ids', b.mentor_ids,
        'activity_type', b.activity_type,
        'activity_date', to_char(b.activity_date, 'YYYY-MM-DD'),
        'duration_minutes', b.duration_minutes,
        'mentor_count', j.total_items,
        'status', brs_status(j.status),
        'success_count', j.total_success,
        'failure_count', j.total_fail,
        'retry_count', j.retry_count,
        'created_at', rfc3339(j.created_at),
        'updated_at', rfc3339(j.updated_at),
        'completed_at', rfc3339(j.completed_at));
END
$$;

-- GET /api/v1/bulk-registrations/:id: the organization's bulk registration
-- with its results, or NULL.
CREATE OR REPLACE FUNCTION brs_read(p_org uuid, p_id uuid) RETURNS json
LANGUAGE plpgsql STABLE AS $$
DECLARE
    j jobs;
    b bulk_registrations;
BEGIN
    SELECT * INTO b FROM bulk_registrations x WHERE x.id = p_id AND x.organization_id = p_org;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT * INTO j FROM jobs x WHERE x.id = p_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    -- The summary's members in their order, then the results (jsonb would
    -- sort the keys).
    RETURN (left(brs_summary(j, b)::text, -1) || ', "results" : ' || brs_results(p_id)::text
            || '}')::json;
END
$$;

-- The list: the organization's bulk registrations, newest first, filtered
-- by foreign status, coordinator and activity type (each NULL: any).
CREATE OR REPLACE FUNCTION brs_list(p_org uuid, p_status text, p_coordinator text, p_type text,
                                    p_offset bigint, p_limit int,
                                    OUT total bigint, OUT data json)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_statuses text[] := brs_native_statuses(p_status);
BEGIN
    SELECT count(*) INTO total
    FROM bulk_registrations b JOIN jobs j ON j.id = b.id
    WHERE b.organization_id = p_org
      AND (p_coordinator IS NULL OR b.coordinator_id = p_coordinator)
      AND (p_type IS NULL OR b.activity_type = p_type)
      AND (v_statuses IS NULL OR j.status = ANY (v_statuses));
    SELECT coalesce(json_agg(brs_summary(x.j, x.b) ORDER BY x.created_at DESC, x.id DESC),
                    '[]'::json) INTO data
    FROM (SELECT j, b, b.created_at, b.id
          FROM bulk_registrations b JOIN jobs j ON j.id = b.id
          WHERE b.organization_id = p_org
            AND (p_coordinator IS NULL OR b.coordinator_id = p_coordinator)
            AND (p_type IS NULL OR b.activity_type = p_type)
            AND (v_statuses IS NULL OR j.status = ANY (v_statuses))
          ORDER BY b.created_at DESC, b.id DESC
          OFFSET p_offset LIMIT p_limit) x;
END
$$;

-- The organization's session for an activity, created on first use. Two
-- concurrent first uses insert the same key: the second waits for the
-- first's commit, inserts nothing and reads the first's row. The loop
-- covers that row being deleted in between.
CREATE OR REPLACE FUNCTION brs_activity_session(p_org uuid, p_type text, p_date date)
RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
    v_id uuid;
BEGIN
    LOOP
        INSERT INTO sessions (organization_id, title, activity_type, activity_date)
        VALUES (p_org, left(p_type, 240) || ' ' || to_char(p_date, 'YYYY-MM-DD'), p_type,
                p_date)
        ON CONFLICT (organization_id, activity_type, activity_date)
            WHERE activity_type IS NOT NULL DO NOTHING
        RETURNING id INTO v_id;
        IF v_id IS NOT NULL THEN
            RETURN v_id;
        END IF;
        SELECT s.id INTO v_id FROM sessions s
        WHERE s.organization_id = p_org AND s.activity_type = p_type
          AND s.activity_date = p_date;
        IF v_id IS NOT NULL THEN
            RETURN v_id;
        END IF;
    END LOOP;
END
$$;

-- POST /api/v1/bulk-registrations: the activity's session (created on
-- first use), then create_job() registering each mentor as a person with
-- external_id = the mentor id and the fields duration_minutes and notes
-- (each when given), then the bulk_registrations row; all in the caller's
-- transaction. Returns the job's id, the 202 body and the task ids to
-- publish after the commit.
CREATE OR REPLACE FUNCTION brs_create(p_org uuid, p_coordinator text, p_mentors text[],
                                      p_type text, p_date date, p_duration int, p_notes text,
                                      p_override boolean,
                                      OUT o_id uuid, OUT o_body json, OUT o_tasks uuid[])
LANGUAGE plpgsql AS $$
DECLARE
    v_fields jsonb;
    v_tasks jsonb;
    v_session uuid;
    c record;
    j jobs;
BEGIN
    SELECT coalesce(jsonb_agg(f.v ORDER BY f.n), '[]'::jsonb) INTO v_fields
    FROM (VALUES (1, CASE WHEN p_duration IS NOT NULL THEN
                     jsonb_build_object('id', 'duration_minutes', 'value', p_duration::text) END),
                 (2, CASE WHEN p_notes IS NOT NULL THEN
                     jsonb_build_object('id', 'notes', 'value', p_notes) END)) AS f(n, v)
    WHERE f.v IS NOT NULL;
    SELECT jsonb_agg(jsonb_build_object('external_id', m.id, 'fields', v_fields) ORDER BY m.n)
    INTO v_tasks FROM unnest(p_mentors) WITH ORDINALITY AS m(id, n);
    LOOP
        v_session := brs_activity_session(p_org, p_type, p_date);
        SELECT * INTO c FROM create_job(p_org, v_session, 'register', p_override, false, false,
                                        v_tasks);
        EXIT WHEN FOUND; -- none: the session went in between
    END LOOP;
    SELECT * INTO j FROM jobs x WHERE x.id = c.job_id;
    INSERT INTO bulk_registrations (id, organization_id, coordinator_id, activity_type,
                                    activity_date, mentor_ids, duration_minutes, notes,
                                    created_at)
    VALUES (j.id, p_org, p_coordinator, p_type, p_date, p_mentors, p_duration, p_notes,
            j.created_at);
    o_id := j.id;
    o_tasks := c.task_ids;
    o_body := json_build_object(
        'id', j.id, 'coordinator_id', p_coordinator, 'mentor_ids', p_mentors,
        'activity_type', p_type, 'activity_date', to_char(p_date, 'YYYY-MM-DD'),
        'mentor_count', j.total_items, 'status', brs_status(j.status),
        'created_at', rfc3339(j.created_at));
END
$$;

-- PUT {"action":"retry_failed"}: retry_failed() on a bulk registration of
-- the organization. outcome: retried, not_found, job_in_progress or
-- nothing_to_retry; o_body and o_tasks when retried.
CREATE OR REPLACE FUNCTION brs_retry(p_org uuid, p_id uuid, p_override boolean,
                                     OUT outcome text, OUT o_body json, OUT o_tasks uuid[])
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    PERFORM 1 FROM bulk_registrations b WHERE b.id = p_id AND b.organization_id = p_org;
    IF NOT FOUND THEN
        outcome := 'not_found'; RETURN;
    END IF;
    SELECT * INTO r FROM retry_failed(p_org, p_id, p_override);
    outcome := r.outcome;
    IF outcome = 'retried' THEN
        o_tasks := r.task_ids;
        SELECT json_build_object('id', j.id, 'status', brs_status(j.status),
                                 'retry_count', j.retry_count,
                                 'updated_at', rfc3339(j.updated_at))
        INTO o_body FROM jobs j WHERE j.id = p_id;
    END IF;
END
$$;

-- DELETE: cancel_or_delete_job() on a bulk registration of the
-- organization. outcome: cancelled, deleted or not_found.
CREATE OR REPLACE FUNCTION brs_cancel_or_delete(p_org uuid, p_id uuid, OUT outcome text)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM bulk_registrations b WHERE b.id = p_id AND b.organization_id = p_org;
    IF NOT FOUND THEN
        outcome := 'not_found'; RETURN;
    END IF;
    SELECT r.outcome INTO outcome FROM cancel_or_delete_job(p_org, p_id) r;
END
$$;

-- A deleted job's bulk_registrations row goes with it (a DELETE, or its
-- session's or organization's cascade), once per statement, as the tasks
-- do (jobs_delete_tasks in jobs.sql).
CREATE OR REPLACE FUNCTION delete_bulk_registrations_of_deleted_jobs() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM bulk_registrations b USING deleted_jobs d WHERE b.id = d.id;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER jobs_delete_bulk_registrations AFTER DELETE ON jobs
    REFERENCING OLD TABLE AS deleted_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION delete_bulk_registrations_of_deleted_jobs();
