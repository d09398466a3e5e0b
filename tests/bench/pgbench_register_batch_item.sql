-- One registration of the batched pgbench reference (scripts/bench): the
-- transaction of pgbench_register.sql inside its own savepoint. scripts/bench
-- writes the script pgbench runs: "\set sid ...", BEGIN, this block 50 times,
-- END: 50 registrations into one session (as a job's tasks are) per commit.
-- All 50 go to one session: 50 random sessions per transaction taken by 8
-- clients in random order would deadlock, which the pipeline avoids by
-- ordering its batches by session.
SAVEPOINT reg;
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
RELEASE SAVEPOINT reg;
