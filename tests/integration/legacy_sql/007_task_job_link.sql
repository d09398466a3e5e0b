-- tasks.job_id stops being a foreign key; a statement trigger on jobs
-- deletes the tasks of deleted jobs instead of ON DELETE CASCADE.
--
-- Tasks are only ever inserted by create_job(), in the statement that
-- inserts their job, so the check the constraint made on every task (a
-- lookup of the job and a key-share lock on its row, from an after-row
-- trigger) could never fail: fifty checks per bulk request, about a tenth
-- of PostgreSQL's time accepting a job. What the constraint did do is
-- delete a deleted job's tasks, whether the job goes alone (DELETE
-- /v1/jobs/:id) or with its session or organization. The trigger keeps
-- that, once per statement and with one join, also when the jobs are
-- deleted by the sessions' or organizations' own cascades.

CREATE FUNCTION delete_tasks_of_deleted_jobs() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM tasks t USING deleted_jobs d WHERE t.job_id = d.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_delete_tasks AFTER DELETE ON jobs
    REFERENCING OLD TABLE AS deleted_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION delete_tasks_of_deleted_jobs();

ALTER TABLE tasks DROP CONSTRAINT IF EXISTS tasks_job_id_fkey;
