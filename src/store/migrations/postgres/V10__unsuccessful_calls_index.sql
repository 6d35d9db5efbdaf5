-- SQLite's V10 names calls_unsuccessful's calls by the states they are not, which its writes check
-- without a temporary index. Postgres checks a list of words in place, and replacing the index
-- would lock the calls table, reads too, until it was built again: its V8 index stays. The store's
-- query carries both forms, so each database finds its own. Kept so both count their migrations
-- alike.
SELECT 1;
