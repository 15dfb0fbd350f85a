-- OpenID Connect sign-in (src/auth/oidc, src/routes/oidc.rs, docs/auth-oidc.md).
-- Several instances share the database, so the flow's short-lived state lives
-- here, never in one instance's memory. Secrets are stored only as SHA-256
-- hashes: a copy of the table cannot finish anyone's sign-in.

-- A provider's account (issuer + subject) linked to one of ours.
CREATE TABLE user_identities (
    issuer     text        NOT NULL,
    subject    text        NOT NULL,
    user_id    bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The email the provider asserted when the identity was linked (for support).
    email      text        NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (issuer, subject)
);
CREATE INDEX user_identities_user_idx ON user_identities (user_id);

-- Sign-ins started and not yet returned from the provider: one row per
-- `/start`, consumed (DELETE ... RETURNING) by its one callback.
CREATE TABLE oidc_logins (
    state_hash    bytea       PRIMARY KEY,
    -- The hash of the browser-binding cookie set by `/start`.
    binding_hash  bytea       NOT NULL,
    provider      text        NOT NULL,
    nonce         text        NOT NULL,
    pkce_verifier text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL
);
CREATE INDEX oidc_logins_expires_idx ON oidc_logins (expires_at);

-- One-time codes the callback hands the frontend, exchanged for a session by
-- `POST /api/auth/oidc/exchange`.
CREATE TABLE oidc_handoffs (
    code_hash  bytea       PRIMARY KEY,
    user_id    bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider   text        NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX oidc_handoffs_expires_idx ON oidc_handoffs (expires_at);
