-- Metered usage (DESIGN §6): one row per tenant, function ('' for the tenant as a whole, e.g.
-- stored bytes) and UTC minute (minutes since the epoch). `usage` is kl_core::Usage as JSON:
-- its quantities are u128, beyond SQLite's INTEGER, so they are merged in Rust inside the
-- writing transaction rather than summed in SQL.
CREATE TABLE usage_buckets (
    tenant TEXT NOT NULL,
    function TEXT NOT NULL,
    minute INTEGER NOT NULL,
    usage TEXT NOT NULL,
    PRIMARY KEY (tenant, function, minute)
) WITHOUT ROWID;
CREATE INDEX usage_buckets_minute ON usage_buckets (minute);

-- The last reading each meter accepted, written in the same transaction as the buckets it
-- produced, so a restart resumes without a gap or a double count. `meter` is an instance id
-- (kind 'instance') or a tenant (kind 'storage'); `state` is the reading as JSON.
CREATE TABLE meter_checkpoints (
    kind TEXT NOT NULL,
    meter TEXT NOT NULL,
    tenant TEXT NOT NULL,
    function TEXT NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (kind, meter)
) WITHOUT ROWID;

-- Budget thresholds already notified, per tenant and period (e.g. '2026-11'): each is
-- notified once per period, across restarts.
CREATE TABLE budget_notifications (
    tenant TEXT NOT NULL,
    period_key TEXT NOT NULL,
    threshold INTEGER NOT NULL,
    notified_at TEXT NOT NULL,
    PRIMARY KEY (tenant, period_key, threshold)
) WITHOUT ROWID;
