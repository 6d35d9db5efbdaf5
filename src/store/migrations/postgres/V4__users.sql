-- People: a personal token per user (only its SHA-256 is kept), and whose each call and thread is.
-- A NULL user_name is the machine's owner (the daemon's own token).
CREATE TABLE users (
    name TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    created_at_ms BIGINT NOT NULL,
    revoked_at_ms BIGINT,
    admin BOOLEAN NOT NULL DEFAULT FALSE
);
ALTER TABLE calls ADD COLUMN user_name TEXT;
ALTER TABLE threads ADD COLUMN user_name TEXT;
CREATE INDEX calls_by_user ON calls(user_name, id);
