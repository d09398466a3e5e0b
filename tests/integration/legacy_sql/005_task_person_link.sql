-- tasks.person_id stops being a foreign key.
--
-- The constraint only ever had work to do when a person is deleted, and a
-- person is deleted only with its session (or its organization), which
-- deletes the session's jobs and so every task that can point at that
-- person (a task registers into its own job's session). Its ON DELETE SET
-- NULL therefore nulled rows about to be deleted anyway, after scanning
-- all of tasks for each person (person_id has no index): a session with
-- many people took minutes to delete on a large tasks table.
--
-- Meanwhile every registered task paid for it: storing the outcome ran the
-- foreign-key check, which key-share-locks the person row just inserted,
-- one more row lock and WAL record per task.
--
-- Readers join people on person_id with a LEFT JOIN (task_resource shows
-- `data: null` when the person is gone), so a link that outlived its
-- person would read as it did with SET NULL.

ALTER TABLE tasks DROP CONSTRAINT IF EXISTS tasks_person_id_fkey;
