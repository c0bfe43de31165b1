CREATE TABLE tenants (
    name TEXT PRIMARY KEY,
    created_at TEXT NOT NULL
);

CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    tenant TEXT REFERENCES tenants(name) ON DELETE CASCADE,
    role TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE functions (
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    serving_revision INTEGER,
    next_revision INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant, name)
);

CREATE TABLE revisions (
    tenant TEXT NOT NULL,
    function TEXT NOT NULL,
    number INTEGER NOT NULL,
    status TEXT NOT NULL,
    settings TEXT NOT NULL,
    spec TEXT,
    source_key TEXT NOT NULL,
    source_digest TEXT NOT NULL,
    artifact_digest TEXT,
    error TEXT,
    build_ms INTEGER,
    created_at TEXT NOT NULL,
    finished_at TEXT,
    PRIMARY KEY (tenant, function, number),
    FOREIGN KEY (tenant, function) REFERENCES functions(tenant, name) ON DELETE CASCADE
);
