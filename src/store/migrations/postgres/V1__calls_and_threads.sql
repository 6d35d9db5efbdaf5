-- The calls and threads tables: the same columns as the SQLite store, in Postgres's types.
CREATE TABLE calls (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    client_name TEXT,
    client_version TEXT,
    transport TEXT NOT NULL,
    tool TEXT NOT NULL,
    arguments TEXT NOT NULL,
    state TEXT NOT NULL,
    received_at_ms BIGINT NOT NULL,
    started_at_ms BIGINT,
    finished_at_ms BIGINT,
    deadline_at_ms BIGINT NOT NULL,
    duration_ms BIGINT,
    provider TEXT,
    model TEXT,
    tokens_in BIGINT,
    tokens_out BIGINT,
    attempts BIGINT,
    progress_count BIGINT NOT NULL DEFAULT 0,
    last_progress TEXT,
    error_kind TEXT,
    error_message TEXT,
    result TEXT,
    is_error BOOLEAN NOT NULL DEFAULT FALSE,
    delivery TEXT NOT NULL DEFAULT 'pending',
    owner_pid BIGINT NOT NULL,
    reasoning_tokens BIGINT,
    time_to_first_token_ms BIGINT,
    reasoning TEXT,
    task TEXT,
    cached_tokens BIGINT,
    finish_reason TEXT
);
CREATE INDEX calls_by_received ON calls(received_at_ms);
CREATE INDEX calls_by_state ON calls(state);
CREATE TABLE threads (
    id TEXT PRIMARY KEY,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    turns TEXT NOT NULL
);
