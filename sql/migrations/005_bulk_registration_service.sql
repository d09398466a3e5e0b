-- The Bulk Registration Service compatible API (docs/compat/bulk-registrations.md):
-- activities and the bulk registrations of mentors into them.
--
-- An activity is a session of its organization named by an activity type
-- and a date, created by its first bulk registration. The unique index
-- makes two concurrent first uses one session (INSERT ... ON CONFLICT in
-- brs_activity_session(), sql/functions/compat_bulk_registrations.sql).
-- Workers update sessions' counters, never these columns, so the index
-- keeps those updates HOT.
--
-- A bulk registration is a registration job (jobs, tasks) with what the
-- foreign request said besides its mentors' registrations: the
-- coordinator, the activity, the mentor ids as sent, the duration and the
-- notes. They live in a side table keyed by the job's id, written once
-- with the job and never updated, so the jobs rows that workers update
-- carry no new column and no new index. No foreign key, as for tasks: the
-- statement trigger jobs_delete_bulk_registrations (in the function file)
-- deletes the rows of deleted jobs, whichever way the jobs go.

ALTER TABLE sessions
    ADD COLUMN activity_type text CHECK (length(activity_type) BETWEEN 1 AND 255),
    ADD COLUMN activity_date date,
    ADD CONSTRAINT sessions_activity_whole
        CHECK ((activity_type IS NULL) = (activity_date IS NULL));
CREATE UNIQUE INDEX sessions_activity ON sessions (organization_id, activity_type, activity_date)
    WHERE activity_type IS NOT NULL;

CREATE TABLE bulk_registrations (
    id                uuid PRIMARY KEY, -- the job's id
    organization_id   uuid NOT NULL,
    coordinator_id    text NOT NULL CHECK (length(coordinator_id) BETWEEN 1 AND 255),
    activity_type     text NOT NULL CHECK (length(activity_type) BETWEEN 1 AND 255),
    activity_date     date NOT NULL,
    mentor_ids        text[] NOT NULL CHECK (cardinality(mentor_ids) > 0),
    duration_minutes  int CHECK (duration_minutes BETWEEN 1 AND 1440),
    notes             text CHECK (length(notes) <= 4096),
    created_at        timestamptz NOT NULL
);
-- The list, newest first, and its two filters by equality.
CREATE INDEX bulk_registrations_organization_created
    ON bulk_registrations (organization_id, created_at DESC, id DESC);
CREATE INDEX bulk_registrations_coordinator_created
    ON bulk_registrations (organization_id, coordinator_id, created_at DESC, id DESC);
CREATE INDEX bulk_registrations_activity_created
    ON bulk_registrations (organization_id, activity_type, created_at DESC, id DESC);
