-- Only calls with a person's name have an entry in calls_by_user: the owner's calls (every call
-- of one person's exai) have no name, no query looks them up by it, and their entries cost every
-- commit two or three of the twenty-odd pages it wrote in the throughput bench.
DROP INDEX IF EXISTS calls_by_user;
CREATE INDEX calls_by_user ON calls(user_name, id) WHERE user_name IS NOT NULL;
