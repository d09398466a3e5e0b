-- The life of a registration: people known by the client's own id, tracks,
-- denial and cancellation, an ordered waiting list, bulk actions, and
-- person.updated events (docs/architecture.md, "The life of a
-- registration").
--
-- Sessions get their tracks (the parts of a session a person may register
-- for: [{"id": 7, "name": "Beginners"}, ...]) and the counter that orders
-- their waiting list. A person is known by email, by external_id (the
-- client's own id for them, unique per session and compared exactly) or
-- both, may hold a track and a center, and may be denied or cancelled:
-- such a person keeps their row (and their address and id), holds no seat,
-- and is the same person if they register again.
--
-- The waiting list is ordered by waitlist_seq, taken from the session's
-- counter when a person joins it; a person's waitlist_position is their
-- rank in it. Existing waitlisted people keep their order: their sequence
-- is their position.

ALTER TABLE sessions
    ADD COLUMN tracks jsonb NOT NULL DEFAULT '[]'::jsonb
        CONSTRAINT sessions_tracks_bounded
        CHECK (jsonb_typeof(tracks) = 'array' AND jsonb_array_length(tracks) <= 100),
    ADD COLUMN waitlist_seq int NOT NULL DEFAULT 0 CHECK (waitlist_seq >= 0);

ALTER TABLE people
    ALTER COLUMN email DROP NOT NULL,
    ADD COLUMN external_id text CHECK (length(external_id) BETWEEN 1 AND 255),
    ADD COLUMN track_id int,
    ADD COLUMN center_id text CHECK (length(center_id) <= 255),
    ADD COLUMN waitlist_seq int,
    DROP CONSTRAINT people_registration_status_check;

UPDATE people SET waitlist_seq = position + 1 WHERE registration_status = 'waitlisted';
UPDATE sessions s SET waitlist_seq = s.people_count
WHERE EXISTS (SELECT 1 FROM people p
              WHERE p.session_id = s.id AND p.registration_status = 'waitlisted');

ALTER TABLE people
    ADD CONSTRAINT people_registration_status_check
        CHECK (registration_status IN ('registered', 'waitlisted', 'pending_approval',
                                       'denied', 'cancelled')),
    ADD CONSTRAINT people_identified CHECK (email IS NOT NULL OR external_id IS NOT NULL),
    ADD CONSTRAINT people_waitlisted_in_order
        CHECK ((registration_status = 'waitlisted') = (waitlist_seq IS NOT NULL));

CREATE UNIQUE INDEX people_session_external ON people (session_id, external_id)
    WHERE external_id IS NOT NULL;
-- Promotion takes the head of the list; a position is a count below it.
CREATE INDEX people_session_waitlist ON people (session_id, waitlist_seq)
    WHERE registration_status = 'waitlisted';

-- A bulk action job applies one transition to the person each task names;
-- waitlist puts a registration job's people on the waiting list.
ALTER TABLE jobs
    ADD COLUMN action text NOT NULL DEFAULT 'register'
        CHECK (action IN ('register', 'approve', 'deny', 'cancel')),
    ADD COLUMN waitlist boolean NOT NULL DEFAULT false;

ALTER TABLE tasks
    DROP CONSTRAINT tasks_error_code_check,
    ADD CONSTRAINT tasks_error_code_check
        CHECK (error_code IN ('already_registered', 'session_full', 'registration_closed',
                              'session_not_found', 'unknown_track', 'person_not_found',
                              'invalid_transition', 'job_cancelled', 'internal_error'));

-- person.updated: an event about a person, not a job.
ALTER TABLE webhook_endpoints
    DROP CONSTRAINT webhook_endpoints_events_check,
    ADD CONSTRAINT webhook_endpoints_events_check
        CHECK (cardinality(events) > 0
               AND events <@ ARRAY['job.created', 'job.ended', 'person.updated']);

ALTER TABLE webhook_events
    ALTER COLUMN job_id DROP NOT NULL,
    ADD COLUMN person_id uuid,
    DROP CONSTRAINT webhook_events_type_check,
    ADD CONSTRAINT webhook_events_type_check
        CHECK (type IN ('job.created', 'job.ended', 'person.updated')),
    ADD CONSTRAINT webhook_events_subject
        CHECK ((type = 'person.updated') = (job_id IS NULL AND person_id IS NOT NULL));

-- The functions whose arguments changed (the new forms are in
-- sql/functions/); an old form left beside a new one would make calls
-- ambiguous.
DROP FUNCTION IF EXISTS register_one(uuid, uuid, jsonb, boolean, boolean, text);
DROP FUNCTION IF EXISTS register_person(uuid, jsonb, boolean, boolean, uuid);
DROP FUNCTION IF EXISTS register_people(uuid, jsonb[], boolean[], boolean[], uuid[]);
DROP FUNCTION IF EXISTS create_job(uuid, uuid, boolean, boolean, jsonb);
DROP FUNCTION IF EXISTS emit_event(uuid, text, uuid, int, json);
