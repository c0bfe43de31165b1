-- The embedded event broker (kl_store::SqliteBroker): one row per delivery of an event to a
-- trigger, from enqueue until it is acked or dead-lettered.
CREATE TABLE event_deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    subscriber TEXT NOT NULL,
    -- The CloudEvent in its structured JSON form.
    event TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    enqueued_at TEXT NOT NULL,
    -- Unix microseconds from which it may be handed out: its enqueue, a retry's delay, or the
    -- end of its lease. A lease is a postponement, so an expired one makes the row due again.
    due_at INTEGER NOT NULL,
    -- The receive that holds it; NULL when nobody does.
    lease TEXT
);
CREATE INDEX event_deliveries_due ON event_deliveries (due_at);

-- Deliveries given up on, per tenant, until replayed.
CREATE TABLE event_dead_letters (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    subscriber TEXT NOT NULL,
    event TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    reason TEXT NOT NULL,
    enqueued_at TEXT NOT NULL,
    dead_at TEXT NOT NULL
);
CREATE INDEX event_dead_letters_tenant ON event_dead_letters (tenant);
