-- The PostgreSQL twin of sqlite/0001_init.sql, column for column (see src/dialect.rs for the
-- mapping): INTEGER is BIGINT (SQLite integers are 64-bit), and text compares bytewise
-- (COLLATE "C", SQLite's BINARY), so names and RFC 3339 times sort as on SQLite.
CREATE TABLE tenants (
    name TEXT COLLATE "C" PRIMARY KEY,
    created_at TEXT COLLATE "C" NOT NULL
);

CREATE TABLE tokens (
    id TEXT COLLATE "C" PRIMARY KEY,
    hash TEXT COLLATE "C" NOT NULL UNIQUE,
    tenant TEXT COLLATE "C" REFERENCES tenants(name) ON DELETE CASCADE,
    role TEXT COLLATE "C" NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL
);

CREATE TABLE functions (
    tenant TEXT COLLATE "C" NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    name TEXT COLLATE "C" NOT NULL,
    serving_revision BIGINT,
    next_revision BIGINT NOT NULL DEFAULT 1,
    created_at TEXT COLLATE "C" NOT NULL,
    updated_at TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (tenant, name)
);

CREATE TABLE revisions (
    tenant TEXT COLLATE "C" NOT NULL,
    function TEXT COLLATE "C" NOT NULL,
    number BIGINT NOT NULL,
    status TEXT COLLATE "C" NOT NULL,
    settings TEXT NOT NULL,
    spec TEXT,
    source_key TEXT COLLATE "C" NOT NULL,
    source_digest TEXT COLLATE "C" NOT NULL,
    artifact_digest TEXT COLLATE "C",
    error TEXT,
    build_ms BIGINT,
    created_at TEXT COLLATE "C" NOT NULL,
    finished_at TEXT COLLATE "C",
    PRIMARY KEY (tenant, function, number),
    FOREIGN KEY (tenant, function) REFERENCES functions(tenant, name) ON DELETE CASCADE
);
