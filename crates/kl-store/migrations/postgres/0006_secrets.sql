-- Tenant secrets: the metadata, and each value sealed (AEAD, base64 of nonce and ciphertext)
-- under the platform key named by key_id. Never a plaintext value.
CREATE TABLE secrets (
    tenant TEXT COLLATE "C" NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    name TEXT COLLATE "C" NOT NULL,
    version BIGINT NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL,
    updated_at TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (tenant, name)
);

CREATE TABLE secret_values (
    tenant TEXT COLLATE "C" NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    key_id TEXT COLLATE "C" NOT NULL,
    sealed TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (tenant, name, key),
    FOREIGN KEY (tenant, name) REFERENCES secrets(tenant, name) ON DELETE CASCADE
);
