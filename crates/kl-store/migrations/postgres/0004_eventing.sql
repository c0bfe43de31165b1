-- Triggers: which of a tenant's events go to which function, or a function pinged on a
-- schedule. `spec` is kl_events::trigger::TriggerSpec as JSON.
CREATE TABLE triggers (
    tenant TEXT COLLATE "C" NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    name TEXT COLLATE "C" NOT NULL,
    spec TEXT NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL,
    updated_at TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (tenant, name)
);

-- Events the ingress accepted, by (tenant, source, id), for as long as the idempotency
-- window lasts: a producer's retry of an accepted event is acknowledged, not delivered again.
CREATE TABLE accepted_events (
    tenant TEXT COLLATE "C" NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    source TEXT COLLATE "C" NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    -- Unix microseconds: compared in SQL when the window is checked and swept.
    accepted_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, source, id)
);
CREATE INDEX accepted_events_at ON accepted_events (accepted_at);

-- Async invocations (`Prefer: respond-async`) and their outcome.
CREATE TABLE invocations (
    id TEXT COLLATE "C" PRIMARY KEY,
    tenant TEXT COLLATE "C" NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    function TEXT COLLATE "C" NOT NULL,
    -- queued, running, succeeded, failed or timeout.
    status TEXT COLLATE "C" NOT NULL,
    correlation_id TEXT COLLATE "C" NOT NULL,
    -- Where the response event goes besides the tenant's triggers: a kl_events Sink as JSON.
    destination TEXT,
    attempts BIGINT NOT NULL DEFAULT 0,
    status_code BIGINT,
    -- The function's response body, at most the server's limit (result_truncated says so).
    result BYTEA,
    result_type TEXT,
    -- 0 or 1, as on SQLite.
    result_truncated BIGINT NOT NULL DEFAULT 0,
    error TEXT,
    duration_ms BIGINT,
    cold_start BIGINT,
    created_at TEXT COLLATE "C" NOT NULL,
    started_at TEXT COLLATE "C",
    finished_at TEXT COLLATE "C"
);
CREATE INDEX invocations_created ON invocations (created_at);
