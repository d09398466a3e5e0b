-- The operator console (docs/console.md): operator tokens and process
-- heartbeats.
--
-- operator_tokens: tokens of the people who run bulkreg, created with
-- `bulkreg-admin operator-token create`. They belong to no organization and
-- open only /console; an organization's token never opens it, nor does an
-- operator token open /v1. Kept as api_tokens are: the SHA-256 of the token
-- and its first 12 characters, which name it in the log and for revocation.
CREATE TABLE operator_tokens (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
    prefix      text NOT NULL CHECK (length(prefix) BETWEEN 4 AND 32),
    token_hash  bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX operator_tokens_prefix ON operator_tokens (prefix);

-- One row per worker process, written by its sweeper thread every
-- BULKREG_SWEEP_INTERVAL_MS: whether its consumers are connected, and when it
-- last said so. The console shows a process whose row is older than three
-- intervals as silent. Rows of processes gone for a day are removed by the
-- next heartbeat of any worker.
CREATE TABLE process_heartbeats (
    id            text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 300),
    kind          text NOT NULL CHECK (kind IN ('worker')),
    host          text NOT NULL CHECK (length(host) BETWEEN 1 AND 255),
    pid           int NOT NULL CHECK (pid > 0),
    metrics_port  int CHECK (metrics_port BETWEEN 0 AND 65535),
    ready         boolean NOT NULL,
    interval_ms   int NOT NULL CHECK (interval_ms > 0),
    started_at    timestamptz NOT NULL,
    seen_at       timestamptz NOT NULL DEFAULT now()
);

-- The console lists jobs of every organization newest first. created_at never
-- changes, so this index leaves the workers' counter updates HOT.
CREATE INDEX jobs_created ON jobs (created_at DESC, id DESC);
