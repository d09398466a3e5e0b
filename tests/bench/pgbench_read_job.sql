-- pgbench reference for the reads scenario (scripts/bench): what one
-- GET /v1/jobs/:id needs, one statement per request, which looks the token
-- up and reads the job together, on the job wrk reads with wrk's token.
-- The API runs the same joins for every request of a batch at once
-- (api/routes_jobs.c, jobs_read; api/readbatch.h); this is its one-request
-- form, as a client of PostgreSQL alone would run it.
-- Variables (pgbench -D): job, hash (the token's SHA-256).
SELECT t.organization_id, t.id, CASE WHEN j.id IS NOT NULL THEN job_resource(j) END
FROM api_tokens t
LEFT JOIN jobs j ON j.id = :job::uuid AND j.organization_id = t.organization_id
WHERE t.token_hash = :hash::bytea AND t.revoked_at IS NULL;
