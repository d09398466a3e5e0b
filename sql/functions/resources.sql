-- The resources the API returns and webhooks carry, built in SQL so a
-- job.ended event's data is byte for byte what GET /v1/jobs/:id returns
-- (docs/openapi.yaml describes them), and the helpers they share.
--
-- A function file: applied after the schema migrations, again whenever its
-- text changes; see docs/architecture.md, "SQL layout".

-- Timestamps as the API writes them: UTC, milliseconds, a Z.
CREATE OR REPLACE FUNCTION rfc3339(t timestamptz) RETURNS text
LANGUAGE sql STABLE STRICT AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
$$;

CREATE OR REPLACE FUNCTION job_resource(j jobs) RETURNS json
LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'type', 'jobs',
        'id', j.id,
        'attributes', json_build_object(
            'status', j.status,
            'action', j.action,
            'session_id', j.session_id,
            'total_items', j.total_items,
            'total_processed_items', j.total_success + j.total_fail + j.total_cancelled,
            'total_success', j.total_success,
            'total_fail', j.total_fail,
            'total_cancelled', j.total_cancelled,
            'retry_count', j.retry_count,
            'override_duplicates', j.override_duplicates,
            'auto_approve', j.auto_approve,
            'waitlist', j.waitlist,
            'created_at', rfc3339(j.created_at),
            'updated_at', rfc3339(j.updated_at),
            'completed_at', rfc3339(j.completed_at)),
        'links', json_build_object(
            'self', '/v1/jobs/' || j.id,
            'tasks', '/v1/jobs/' || j.id || '/tasks'))
$$;

CREATE OR REPLACE FUNCTION person_resource(p people, join_base text) RETURNS json
LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'type', 'people',
        'id', p.id,
        'attributes', json_build_object(
            'email', p.email,
            'external_id', p.external_id,
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
            'track_id', p.track_id,
            'center_id', p.center_id,
            'registration_status', p.registration_status,
            'waitlist_position', CASE WHEN p.registration_status = 'waitlisted' THEN
                (SELECT count(*) FROM people q
                 WHERE q.session_id = p.session_id AND q.registration_status = 'waitlisted'
                   AND q.waitlist_seq <= p.waitlist_seq) END,
            'join_url', join_base || p.join_token,
            'created_at', rfc3339(p.created_at),
            'updated_at', rfc3339(p.updated_at)))
$$;

CREATE OR REPLACE FUNCTION session_resource(s sessions) RETURNS json
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
            'tracks', s.tracks,
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
CREATE OR REPLACE FUNCTION task_resource(t tasks, p people, join_base text) RETURNS json
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

CREATE OR REPLACE FUNCTION task_error_message(code text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE code
        WHEN 'already_registered' THEN 'User already registered for this session.'
        WHEN 'session_full' THEN 'The session has no seat left.'
        WHEN 'registration_closed' THEN 'Registration for this session is not open.'
        WHEN 'session_not_found' THEN 'The session no longer exists.'
        WHEN 'unknown_track' THEN 'The session has no such track.'
        WHEN 'person_not_found' THEN 'The session has no person with this email or external_id.'
        WHEN 'invalid_transition' THEN 'The person''s registration status does not allow this change.'
        WHEN 'job_cancelled' THEN 'The job was cancelled before this task ran.'
        WHEN 'internal_error' THEN 'The task could not be processed; it was given up after repeated attempts.'
    END
$$;

-- 128+ random bits, URL-safe: two v4 UUIDs (244 random bits) in base64url.
CREATE OR REPLACE FUNCTION new_join_token() RETURNS text
LANGUAGE sql VOLATILE AS $$
    SELECT rtrim(translate(encode(uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()),
                                  'base64'), '+/', '-_'), '=')
$$;
