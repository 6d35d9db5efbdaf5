-- Replicas: the daemons sharing this store, each with a heartbeat; a call names the replica
-- that runs it, and another replica may ask that one to cancel it.
CREATE TABLE replicas (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_at_ms INTEGER NOT NULL,
    heartbeat_at_ms INTEGER NOT NULL,
    version TEXT NOT NULL
);
ALTER TABLE calls ADD COLUMN replica TEXT;
ALTER TABLE calls ADD COLUMN cancel_requested TEXT;
-- The cancel watcher looks only at calls another replica asked to cancel.
CREATE INDEX calls_cancel_requested ON calls(replica) WHERE cancel_requested IS NOT NULL;
