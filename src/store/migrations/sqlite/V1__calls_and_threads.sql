-- The calls and threads tables as they stood when migrations became versioned. `IF NOT EXISTS`:
-- a store made before then already has them (its missing columns are added before this runs).
CREATE TABLE IF NOT EXISTS calls (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    client_name TEXT,
    client_version TEXT,
    transport TEXT NOT NULL,
    tool TEXT NOT NULL,
    arguments TEXT NOT NULL,
    state TEXT NOT NULL,
    received_at_ms INTEGER NOT NULL,
    started_at_ms INTEGER,
    finished_at_ms INTEGER,
    deadline_at_ms INTEGER NOT NULL,
    duration_ms INTEGER,
    provider TEXT,
    model TEXT,
    tokens_in INTEGER,
    tokens_out INTEGER,
    attempts INTEGER,
    progress_count INTEGER NOT NULL DEFAULT 0,
    last_progress TEXT,
    error_kind TEXT,
    error_message TEXT,
    result TEXT,
    is_error INTEGER NOT NULL DEFAULT 0,
    delivery TEXT NOT NULL DEFAULT 'pending',
    owner_pid INTEGER NOT NULL,
    reasoning_tokens INTEGER,
    time_to_first_token_ms INTEGER,
    reasoning TEXT,
    task TEXT,
    cached_tokens INTEGER,
    finish_reason TEXT
);
CREATE INDEX IF NOT EXISTS calls_by_received ON calls(received_at_ms);
CREATE INDEX IF NOT EXISTS calls_by_state ON calls(state);
CREATE TABLE IF NOT EXISTS threads (
    id TEXT PRIMARY KEY,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    turns TEXT NOT NULL
);
