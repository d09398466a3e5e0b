-- Marking a job published is a HOT update, planned once per connection.
--
-- mark_job_published() runs once per bulk request, after its publishes. As
-- an SQL function of two statements it was planned again on every call,
-- and its UPDATE could never be HOT: published_at is in the predicate of
-- jobs_unpublished, so every mark wrote a new row version and an entry in
-- each of the seven indexes of jobs. In a spread run on the dev stack the
-- call took 0.68 ms a job, 0.24 ms of it the UPDATE.
--
-- The sweeper now looks for unpublished jobs among the processing ones
-- (jobs_processing, in the same created_at order): a job has queued tasks
-- only while it is processing, so it finds everything it did before.
DROP INDEX jobs_unpublished;

CREATE OR REPLACE FUNCTION mark_job_published(p_job uuid) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    -- Asynchronous commit (sql/003): a mark lost in a crash only makes the
    -- sweeper publish the job again.
    PERFORM set_config('synchronous_commit', 'off', true);
    UPDATE jobs SET published_at = now() WHERE id = p_job AND published_at IS NULL;
END
$$;
