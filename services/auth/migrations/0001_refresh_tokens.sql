-- Refresh tokens, one row per token; a family is every token descending from one login.
-- Only a SHA-256 of each token's secret is stored. A token is used once (used_at); presenting a
-- used token again revokes its family (theft detection).
CREATE TABLE IF NOT EXISTS auth_refresh_tokens (
    token_id uuid PRIMARY KEY,
    family_id uuid NOT NULL,
    user_id text NOT NULL,
    steamid64 bigint NOT NULL,
    roles text[] NOT NULL,
    tier text NOT NULL,
    secret_hash bytea NOT NULL,
    issued_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at timestamptz,
    revoked_at timestamptz
);
CREATE INDEX IF NOT EXISTS auth_refresh_tokens_family ON auth_refresh_tokens (family_id);
CREATE INDEX IF NOT EXISTS auth_refresh_tokens_user ON auth_refresh_tokens (user_id);

-- Access tokens denied before their expiry (by jti); IntrospectToken consults it.
CREATE TABLE IF NOT EXISTS auth_revoked_access_tokens (
    jti text PRIMARY KEY,
    user_id text NOT NULL,
    expires_at timestamptz NOT NULL
);
