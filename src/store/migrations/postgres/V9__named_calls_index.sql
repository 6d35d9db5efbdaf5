-- SQLite's V9 keeps the owner's calls out of calls_by_user. Not here: on Postgres, dropping the
-- index locks the calls table, reads too, until its successor is built, and the replicas sharing
-- the store would wait that long for every call; a team's calls mostly have a name anyway. The
-- version is kept so both stores count their migrations alike.
SELECT 1;
