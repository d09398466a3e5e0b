-- bulkreg schema, version 1.
--
-- The database enforces every invariant it can: one person per session by
-- lower(email), a session's seats never exceed its capacity, status domains,
-- non-negative counters, total_processed_items derived from its parts, one
-- job.ended event per completion of a job. Indexes follow the access paths of
-- the API: tokens by hash, jobs by organization and time, tasks by job
-- and index, people by session and position, due webhook deliveries.

CREATE TABLE organizations (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 255),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- A token is shown once; only its SHA-256 is kept. prefix (its first 12
-- characters) names it for operators and for `bulkreg-admin token revoke`.
CREATE TABLE api_tokens (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id  uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    prefix           text NOT NULL CHECK (length(prefix) BETWEEN 4 AND 32),
    token_hash       bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    created_at       timestamptz NOT NULL DEFAULT now(),
    revoked_at       timestamptz
);
CREATE INDEX api_tokens_prefix ON api_tokens (prefix);
CREATE INDEX api_tokens_organization ON api_tokens (organization_id);

-- Seats: registered and pending_approval people hold one each; waitlisted
-- people hold none. people_count numbers every person of the session, so a
-- page of people is a range of positions.
CREATE TABLE sessions (
    id                      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id         uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    title                   text NOT NULL CHECK (length(title) BETWEEN 1 AND 255),
    starts_at               timestamptz,
    capacity                int CHECK (capacity IS NULL OR capacity >= 0),
    registration_opens_at   timestamptz,
    registration_closes_at  timestamptz,
    approval                text NOT NULL DEFAULT 'automatic'
                            CHECK (approval IN ('automatic', 'manual')),
    waitlist                boolean NOT NULL DEFAULT false,
    registrants_count       int NOT NULL DEFAULT 0 CHECK (registrants_count >= 0),
    waitlist_count          int NOT NULL DEFAULT 0 CHECK (waitlist_count >= 0),
    pending_count           int NOT NULL DEFAULT 0 CHECK (pending_count >= 0),
    people_count            int NOT NULL DEFAULT 0 CHECK (people_count >= 0),
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT sessions_capacity_respected
        CHECK (capacity IS NULL OR registrants_count + pending_count <= capacity),
    CONSTRAINT sessions_window_ordered
        CHECK (registration_opens_at IS NULL OR registration_closes_at IS NULL
               OR registration_opens_at <= registration_closes_at)
);
CREATE INDEX sessions_organization ON sessions (organization_id, created_at DESC);

CREATE TABLE people (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    session_id           uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    position             int NOT NULL CHECK (position >= 0),
    email                text NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
    first_name           text CHECK (length(first_name) <= 255),
    last_name            text CHECK (length(last_name) <= 255),
    fields               jsonb NOT NULL DEFAULT '[]'::jsonb
                         CHECK (jsonb_typeof(fields) = 'array' AND jsonb_array_length(fields) <= 50),
    referrer             text CHECK (length(referrer) <= 2048),
    utm_source           text CHECK (length(utm_source) <= 255),
    utm_medium           text CHECK (length(utm_medium) <= 255),
    utm_campaign         text CHECK (length(utm_campaign) <= 255),
    utm_term             text CHECK (length(utm_term) <= 255),
    utm_content          text CHECK (length(utm_content) <= 255),
    reference            text CHECK (length(reference) <= 255),
    registration_status  text NOT NULL
                         CHECK (registration_status IN ('registered', 'waitlisted', 'pending_approval')),
    join_token           text NOT NULL UNIQUE CHECK (length(join_token) >= 22),
    -- The task that last wrote this person: a redelivered task finds its own
    -- work here instead of reporting already_registered against itself.
    task_id              uuid,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX people_session_email ON people (session_id, lower(email));
CREATE UNIQUE INDEX people_session_position ON people (session_id, position);

CREATE TABLE jobs (
    id                     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id        uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    session_id             uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    status                 text NOT NULL DEFAULT 'processing'
                           CHECK (status IN ('processing', 'ended', 'failed', 'cancelled')),
    total_items            int NOT NULL CHECK (total_items > 0),
    total_success          int NOT NULL DEFAULT 0 CHECK (total_success >= 0),
    total_fail             int NOT NULL DEFAULT 0 CHECK (total_fail >= 0),
    total_cancelled        int NOT NULL DEFAULT 0 CHECK (total_cancelled >= 0),
    total_processed_items  int GENERATED ALWAYS AS
                           (total_success + total_fail + total_cancelled) STORED,
    retry_count            int NOT NULL DEFAULT 0 CHECK (retry_count >= 0),
    override_duplicates    boolean NOT NULL DEFAULT false,
    auto_approve           boolean NOT NULL DEFAULT false,
    -- Set once the broker confirmed every task message of the current run;
    -- NULL marks work the sweeper must publish.
    published_at           timestamptz,
    -- DELETE while processing: the job ends cancelled once its running
    -- tasks finish, even when none was left to cancel.
    cancelled_at           timestamptz,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    completed_at           timestamptz,
    CONSTRAINT jobs_counts_bounded
        CHECK (total_success + total_fail + total_cancelled <= total_items),
    CONSTRAINT jobs_completion_consistent
        CHECK ((status = 'processing') = (completed_at IS NULL)),
    CONSTRAINT jobs_ended_only_when_done
        CHECK (status = 'processing'
               OR total_success + total_fail + total_cancelled = total_items)
);
CREATE INDEX jobs_organization_created ON jobs (organization_id, created_at DESC, id DESC);
CREATE INDEX jobs_organization_status_created
    ON jobs (organization_id, status, created_at DESC, id DESC);
CREATE INDEX jobs_organization_session_created
    ON jobs (organization_id, session_id, created_at DESC, id DESC);
CREATE INDEX jobs_session ON jobs (session_id);
CREATE INDEX jobs_unpublished ON jobs (created_at) WHERE published_at IS NULL;
CREATE INDEX jobs_processing ON jobs (updated_at) WHERE status = 'processing';

CREATE TABLE tasks (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    job_id         uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    idx            int NOT NULL CHECK (idx >= 0),
    status         text NOT NULL DEFAULT 'queued'
                   CHECK (status IN ('queued', 'succeeded', 'failed', 'cancelled')),
    input          jsonb NOT NULL,
    reference      text CHECK (length(reference) <= 255),
    person_id      uuid REFERENCES people (id) ON DELETE SET NULL,
    result         jsonb,
    error_code     text CHECK (error_code IN ('already_registered', 'session_full',
                       'registration_closed', 'session_not_found', 'job_cancelled',
                       'internal_error')),
    error_message  text,
    attempts       int NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    completed_at   timestamptz,
    CONSTRAINT tasks_job_index UNIQUE (job_id, idx),
    CONSTRAINT tasks_error_iff_unsuccessful
        CHECK ((status IN ('failed', 'cancelled')) = (error_code IS NOT NULL)),
    CONSTRAINT tasks_terminal_has_completion
        CHECK ((status = 'queued') = (completed_at IS NULL))
);
CREATE INDEX tasks_job_status_idx ON tasks (job_id, status, idx);

CREATE TABLE webhook_endpoints (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id  uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    url              text NOT NULL CHECK (length(url) BETWEEN 8 AND 2048),
    events           text[] NOT NULL
                     CHECK (cardinality(events) > 0
                            AND events <@ ARRAY['job.created', 'job.ended']),
    secret           text NOT NULL CHECK (secret LIKE 'whsec\_%'),
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_organization ON webhook_endpoints (organization_id, created_at);

-- The outbox. An event row is written in the transaction that causes it; its
-- id is the webhook-id of every delivery attempt. job_id has no foreign key:
-- the event outlives a deleted job.
CREATE TABLE webhook_events (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id  uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    type             text NOT NULL CHECK (type IN ('job.created', 'job.ended')),
    job_id           uuid NOT NULL,
    run              int NOT NULL DEFAULT 0 CHECK (run >= 0),
    payload          text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
-- Exactly one event of each type per run (retry_count) of a job.
CREATE UNIQUE INDEX webhook_events_once ON webhook_events (job_id, type, run);

CREATE TABLE webhook_deliveries (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    event_id         uuid NOT NULL REFERENCES webhook_events (id) ON DELETE CASCADE,
    endpoint_id      uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts         int NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    -- A deliverer leases a delivery while it tries it, so two never race.
    locked_until     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_deliveries_once UNIQUE (event_id, endpoint_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, created_at DESC);

CREATE TABLE webhook_attempts (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    delivery_id  uuid NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempted_at timestamptz NOT NULL DEFAULT now(),
    http_status  int,
    duration_ms  int NOT NULL CHECK (duration_ms >= 0),
    error        text
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, attempted_at);

-- Idempotency-Key records: response_status is NULL while the first request
-- is still being handled.
CREATE TABLE idempotency_keys (
    organization_id    uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    key                text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    request_hash       bytea NOT NULL CHECK (length(request_hash) = 32),
    response_status    int,
    response_body      text,
    response_location  text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
