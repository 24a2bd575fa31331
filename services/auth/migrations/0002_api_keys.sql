-- API keys of bots and tools, one row per key. Only a SHA-256 of the secret is stored, looked up
-- by that hash: the secret is 256 random bits, so a fast hash cannot be brute-forced and a slow
-- one (bcrypt) would only cost every exchange time and rule out the indexed lookup.
CREATE TABLE IF NOT EXISTS auth_api_keys (
    key_id uuid PRIMARY KEY,
    owner_user_id text NOT NULL,
    -- The owner's Steam account when the key was made (0 if unknown): its tokens carry it.
    owner_steamid64 bigint NOT NULL DEFAULT 0,
    name text NOT NULL,
    scopes text[] NOT NULL,
    prefix text NOT NULL,
    secret_hash bytea NOT NULL UNIQUE,
    created_at timestamptz NOT NULL,
    last_used_at timestamptz,
    revoked_at timestamptz
);
CREATE INDEX IF NOT EXISTS auth_api_keys_owner ON auth_api_keys (owner_user_id, created_at DESC);
