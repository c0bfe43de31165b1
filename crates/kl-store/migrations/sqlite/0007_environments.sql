-- A tenant's environments, each run as a tenant of its own (env_tenant) with a share of the
-- tenant's quotas and its own priority class (spec, JSON).
CREATE TABLE environments (
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    env_tenant TEXT NOT NULL UNIQUE,
    spec TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant, name)
);
