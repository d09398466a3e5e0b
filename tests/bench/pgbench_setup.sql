-- Throwaway sessions for one pgbench reference run (scripts/bench), in the
-- real sessions table, owned by the "pgbench" organization (made once).
-- psql variables: run (a number new for each pgbench run), n (how many).
INSERT INTO organizations (name) VALUES ('pgbench') ON CONFLICT (name) DO NOTHING;
INSERT INTO sessions (id, organization_id, title, capacity)
SELECT ('00000000-0000-4000-8000-' || lpad((:run * 1000 + i)::text, 12, '0'))::uuid,
       (SELECT id FROM organizations WHERE name = 'pgbench'), 'pgbench', 1000000
FROM generate_series(1, :n) AS i;
