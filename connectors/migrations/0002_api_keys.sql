-- API keys a fleet shares (connectors/src/state/postgres.rs): only the
-- SHA-256 of a key is stored, as in a key file. Every node reloads the
-- live keys every second, so a revocation reaches the whole fleet within
-- about two seconds.
CREATE TABLE api_keys (
    sha256     text        PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    tenant     text        NOT NULL,
    -- As in a key file: yyyy-mm-dd or yyyy-mm-ddThh:mm:ssZ (UTC), or none.
    expires    text,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant);
