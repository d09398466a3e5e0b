-- The operator console's overview (docs/console.md).
--
-- A function file: applied after the schema migrations, again whenever its
-- text changes; see docs/architecture.md, "SQL layout". PL/pgSQL, whose
-- bodies are checked when first run: rfc3339() comes in a later file.

-- A time as the console shows it: UTC to the second, "2026-03-28 16:00:05 UTC".
CREATE OR REPLACE FUNCTION console_time(t timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"')
$$;

-- Tasks finished in each of the last 60 minutes, the current one last:
-- {"start": first minute, "succeeded": [60 counts], "failed": [60 counts]}.
-- Read from the tasks' completed_at through the jobs updated in that hour
-- (a task's completion updates its job), by tasks_job_index: no index on
-- tasks covers completed_at, which would cost the workers' HOT updates.
CREATE OR REPLACE FUNCTION console_task_series() RETURNS json
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (
    WITH bounds AS (SELECT date_trunc('minute', now()) - interval '59 minutes' AS since),
    done AS (
        SELECT date_trunc('minute', t.completed_at) AS minute,
               count(*) FILTER (WHERE t.status = 'succeeded') AS ok,
               count(*) FILTER (WHERE t.status = 'failed') AS bad
        FROM bounds b, jobs j JOIN tasks t ON t.job_id = j.id
        WHERE j.updated_at >= b.since AND t.completed_at >= b.since
        GROUP BY 1
    )
    SELECT json_build_object('start', rfc3339(min(m.minute)),
                             'succeeded', json_agg(coalesce(d.ok, 0) ORDER BY m.minute),
                             'failed', json_agg(coalesce(d.bad, 0) ORDER BY m.minute))
    FROM bounds b,
         generate_series(b.since, date_trunc('minute', now()), interval '1 minute') AS m(minute)
    LEFT JOIN done d ON d.minute = m.minute
    );
END
$$;

-- Webhook endpoints in trouble: disabled (410 Gone), or with deliveries
-- that failed in the last day or are being retried.
CREATE OR REPLACE FUNCTION console_failing_endpoints() RETURNS json
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (
    SELECT coalesce(json_agg(json_build_object(
               'id', x.id, 'organization', x.organization, 'url', x.url,
               'disabled', x.disabled, 'failed', x.failed, 'retrying', x.retrying)
               ORDER BY x.organization, x.url), '[]'::json)
    FROM (SELECT e.id, o.name AS organization, e.url, e.disabled_at IS NOT NULL AS disabled,
                 f.failed, f.retrying
          FROM webhook_endpoints e JOIN organizations o ON o.id = e.organization_id
          CROSS JOIN LATERAL (
              SELECT count(*) FILTER (WHERE d.status = 'failed'
                                        AND d.updated_at > now() - interval '1 day') AS failed,
                     count(*) FILTER (WHERE d.status = 'pending' AND d.attempts > 0) AS retrying
              FROM webhook_deliveries d WHERE d.endpoint_id = e.id) f
          WHERE e.disabled_at IS NOT NULL OR f.failed > 0 OR f.retrying > 0) x
    );
END
$$;

-- Everything the overview shows that the database knows, as one object
-- (the API adds the broker's figures and its own readiness).
-- dead_lettered: tasks failed with internal_error, which is what a task the
-- broker dead-lettered becomes; found through the jobs with failures.
CREATE OR REPLACE FUNCTION console_overview() RETURNS json
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (
    SELECT json_build_object(
        'now', console_time(now()),
        'jobs_in_flight', (SELECT count(*) FROM jobs WHERE status = 'processing'),
        'tasks_queued', (SELECT coalesce(sum(total_items - total_processed_items), 0)
                         FROM jobs WHERE status = 'processing'),
        'dead_lettered', (SELECT count(*) FROM jobs j JOIN tasks t ON t.job_id = j.id
                          WHERE j.total_fail > 0 AND t.status = 'failed'
                            AND t.error_code = 'internal_error'),
        'webhook_backlog', (SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'),
        'webhook_failed_day', (SELECT count(*) FROM webhook_deliveries
                               WHERE status = 'failed' AND updated_at > now() - interval '1 day'),
        'failing_endpoints', console_failing_endpoints(),
        'workers', (SELECT coalesce(json_agg(json_build_object(
                        'id', h.id, 'host', h.host, 'pid', h.pid,
                        'metrics_port', h.metrics_port, 'ready', h.ready,
                        'silent', h.seen_at < now() - 3 * h.interval_ms * interval '1 millisecond',
                        'seen_at', console_time(h.seen_at)) ORDER BY h.id), '[]'::json)
                    FROM process_heartbeats h),
        'series', console_task_series())
    );
END
$$;
