-- A person's calls are found by their name (a team member listing their own): only calls with a
-- name need an entry in that index. The machine owner's calls have none (every call of one
-- person's exai), and their entries were read by no query while every commit wrote them: in the
-- throughput bench, two or three of the twenty-odd pages a commit wrote.
DROP INDEX IF EXISTS calls_by_user;
CREATE INDEX calls_by_user ON calls(user_name, id) WHERE user_name IS NOT NULL;
