-- Triggers: which of a tenant's events go to which function, or a function pinged on a
-- schedule. `spec` is kl_events::trigger::TriggerSpec as JSON.
CREATE TABLE triggers (
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant, name)
);

-- Events the ingress accepted, by (tenant, source, id), for as long as the idempotency
-- window lasts: a producer's retry of an accepted event is acknowledged, not delivered again.
CREATE TABLE accepted_events (
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    source TEXT NOT NULL,
    id TEXT NOT NULL,
    -- Unix microseconds: compared in SQL when the window is checked and swept.
    accepted_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, source, id)
) WITHOUT ROWID;
CREATE INDEX accepted_events_at ON accepted_events (accepted_at);

-- Async invocations (`Prefer: respond-async`) and their outcome.
CREATE TABLE invocations (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    function TEXT NOT NULL,
    -- queued, running, succeeded, failed or timeout.
    status TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    -- Where the response event goes besides the tenant's triggers: a kl_events Sink as JSON.
    destination TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    status_code INTEGER,
    -- The function's response body, at most the server's limit (result_truncated says so).
    result BLOB,
    result_type TEXT,
    result_truncated INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    duration_ms INTEGER,
    cold_start INTEGER,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT
);
CREATE INDEX invocations_created ON invocations (created_at);
