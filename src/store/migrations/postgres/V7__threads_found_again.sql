-- Threads you can find again: the first prompt as asked (secrets masked, bounded) and its lower
-- case for search, the tools that added turns and how many turns there were; each call names the
-- thread it added turns to, so a thread's cost is the sum of its calls'.
ALTER TABLE threads ADD COLUMN first_prompt TEXT;
ALTER TABLE threads ADD COLUMN search_text TEXT;
ALTER TABLE threads ADD COLUMN tools TEXT NOT NULL DEFAULT '';
ALTER TABLE threads ADD COLUMN turn_count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE calls ADD COLUMN thread_id TEXT;
CREATE INDEX calls_by_thread ON calls(thread_id);
CREATE INDEX threads_by_updated ON threads(updated_at_ms);
