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
