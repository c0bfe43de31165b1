ALTER TABLE tenants ADD COLUMN spec TEXT NOT NULL DEFAULT '{}';

ALTER TABLE tokens ADD COLUMN name TEXT NOT NULL DEFAULT '';
ALTER TABLE tokens ADD COLUMN expires_at TEXT;

-- Denied attempts: who tried what on which tenant, and why it was refused.
CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    token_id TEXT,
    role TEXT,
    caller_tenant TEXT,
    action TEXT NOT NULL,
    target_tenant TEXT,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    outcome TEXT NOT NULL
);

-- Each tenant's instances run as their own unprivileged uid (the sandbox), fixed at creation.
ALTER TABLE tenants ADD COLUMN uid INTEGER;
UPDATE tenants SET uid = 100000 + rowid;
CREATE UNIQUE INDEX tenants_uid ON tenants (uid);

-- Uploaded source bytes per revision: the storage quota.
ALTER TABLE revisions ADD COLUMN source_bytes INTEGER NOT NULL DEFAULT 0;
