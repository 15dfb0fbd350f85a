-- Accounts deleted while tokens naming them may still be valid. A token is a
-- signed claim that no statement checks, so every server keeps the set of deleted
-- accounts in memory and refuses their tokens on the authentication path (see
-- src/auth/deleted_accounts.rs): it reads this table when it starts, and hears of
-- each new deletion by NOTIFY, sent when the deleting transaction commits.

CREATE TABLE deleted_accounts (
    user_id    bigint      PRIMARY KEY,
    deleted_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION remember_deleted_account() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO deleted_accounts (user_id) VALUES (OLD.id) ON CONFLICT DO NOTHING;
    PERFORM pg_notify('deleted_accounts', OLD.id::text);
    RETURN NULL;
END $$;

CREATE TRIGGER users_deleted AFTER DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION remember_deleted_account();
