-- pgbench reference for the reads scenario (scripts/bench): the statement
-- GET /v1/jobs/:id runs (api/routes_jobs.c, jobs_get), on the job wrk reads.
-- The API also looks the token up (api/auth.c) for every request; pgbench
-- does not. Variables (pgbench -D): job, org.
SELECT job_resource(j) FROM jobs j WHERE j.id = :job AND j.organization_id = :org;
