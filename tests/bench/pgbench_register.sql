-- pgbench reference for scripts/bench: the bare registration transaction of
-- issue 7. Take a seat by the same conditional UPDATE of the session row
-- that the first register_person() did, then insert the person (real people table,
-- its unique indexes and new_join_token()), one commit per registration.
--
-- The sessions are throwaway rows of the real sessions table, owned by the
-- "pgbench" organization, made by pgbench_setup.sql with ids derived from a
-- number: 00000000-0000-4000-8000-<run * 1000 + n, 12 digits>.
-- Variables (pgbench -D): run, nsessions (100: spread, 1: one hot session).
\set sid :run * 1000 + random(1, :nsessions)
BEGIN;
UPDATE sessions SET registrants_count = registrants_count + 1,
                    people_count = people_count + 1, updated_at = now()
WHERE id = ('00000000-0000-4000-8000-' || lpad(:sid::text, 12, '0'))::uuid
  AND (capacity IS NULL OR registrants_count + pending_count < capacity)
RETURNING people_count AS pos \gset
INSERT INTO people (session_id, position, email, first_name, last_name, reference,
                    registration_status, join_token)
VALUES (('00000000-0000-4000-8000-' || lpad(:sid::text, 12, '0'))::uuid, :pos - 1,
        'pgb-' || :pos || '@bench.example', 'Bench', 'Person', 'row', 'registered',
        new_join_token());
END;
