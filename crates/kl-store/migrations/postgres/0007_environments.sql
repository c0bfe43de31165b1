-- A tenant's environments, each run as a tenant of its own (env_tenant) with a share of the
-- tenant's quotas and its own priority class (spec, JSON).
CREATE TABLE environments (
    tenant TEXT COLLATE "C" NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    name TEXT COLLATE "C" NOT NULL,
    env_tenant TEXT COLLATE "C" NOT NULL UNIQUE,
    spec TEXT COLLATE "C" NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (tenant, name)
);
