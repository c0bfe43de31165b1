-- Metered usage (DESIGN §6): one row per tenant, function ('' for the tenant as a whole, e.g.
-- stored bytes) and UTC minute (minutes since the epoch). `usage` is kl_core::Usage as JSON:
-- its quantities are u128, beyond BIGINT, so they are merged in Rust inside the writing
-- transaction rather than summed in SQL.
CREATE TABLE usage_buckets (
    tenant TEXT COLLATE "C" NOT NULL,
    function TEXT COLLATE "C" NOT NULL,
    minute BIGINT NOT NULL,
    usage TEXT NOT NULL,
    PRIMARY KEY (tenant, function, minute)
);
CREATE INDEX usage_buckets_minute ON usage_buckets (minute);

-- The last reading each meter accepted, written in the same transaction as the buckets it
-- produced, so a restart resumes without a gap or a double count. `meter` is an instance id
-- (kind 'instance') or a tenant (kind 'storage'); `state` is the reading as JSON.
CREATE TABLE meter_checkpoints (
    kind TEXT COLLATE "C" NOT NULL,
    meter TEXT COLLATE "C" NOT NULL,
    tenant TEXT COLLATE "C" NOT NULL,
    function TEXT COLLATE "C" NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (kind, meter)
);

-- Budget thresholds already notified, per tenant and period (e.g. '2026-11'): each is
-- notified once per period, across restarts.
CREATE TABLE budget_notifications (
    tenant TEXT COLLATE "C" NOT NULL,
    period_key TEXT COLLATE "C" NOT NULL,
    threshold BIGINT NOT NULL,
    notified_at TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (tenant, period_key, threshold)
);
