-- Tenant secrets: the metadata, and each value sealed (AEAD, base64 of nonce and ciphertext)
-- under the platform key named by key_id. Never a plaintext value.
CREATE TABLE secrets (
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant, name)
);

CREATE TABLE secret_values (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    key TEXT NOT NULL,
    key_id TEXT NOT NULL,
    sealed TEXT NOT NULL,
    PRIMARY KEY (tenant, name, key),
    FOREIGN KEY (tenant, name) REFERENCES secrets(tenant, name) ON DELETE CASCADE
);
