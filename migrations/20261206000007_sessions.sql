-- Server-side sessions and their rotating refresh tokens (src/auth/session.rs,
-- docs/auth.md). Every access token names its session (`sid`); a session whose
-- `revoked_at` is set has its tokens refused by every server, which hears of it by
-- NOTIFY on `revoked_sessions` (src/auth/revocations.rs).

CREATE TABLE sessions (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id      bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- The last time the session was given tokens (opened or refreshed), not the
    -- last request: that would be a write per read.
    last_used_at timestamptz NOT NULL DEFAULT now(),
    -- The absolute end of the session, whatever its refreshes.
    expires_at   timestamptz NOT NULL,
    user_agent   text        NOT NULL DEFAULT '',
    client_addr  inet,
    -- 'register', 'password' or 'oidc:<provider>'.
    method       text        NOT NULL,
    revoked_at   timestamptz
);

-- A user's sessions: the list, logout-all, revoking the others, pruning the
-- ended ones at each sign-in, and the cascade when the user is deleted.
CREATE INDEX sessions_by_user ON sessions (user_id, created_at DESC);
-- The recent revocations each server reads when it (re)subscribes.
CREATE INDEX sessions_revoked_at ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;

CREATE TABLE refresh_tokens (
    -- SHA-256 of the token: the token itself is never stored.
    hash       bytea       PRIMARY KEY,
    session_id uuid        NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- The idle end: a token unused this long is dead (each refresh starts anew).
    expires_at timestamptz NOT NULL,
    -- Set when the token is exchanged; presenting it again revokes the session.
    retired_at timestamptz
);

CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

-- Each session whose revoked_at goes from NULL to a time is announced when the
-- revoking transaction commits, one notification per session, so that an
-- UPDATE revoking many sessions tells of each.
CREATE FUNCTION announce_revoked_session() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('revoked_sessions', NEW.id::text);
    RETURN NULL;
END $$;

CREATE TRIGGER sessions_revoked AFTER UPDATE OF revoked_at ON sessions
    FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION announce_revoked_session();
