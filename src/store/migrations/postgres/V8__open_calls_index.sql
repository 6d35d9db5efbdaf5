-- Calls are looked up by state only while open (to mark them interrupted, to cancel them from
-- another replica, to list what runs): the index holds open calls alone. A finished call then
-- leaves it instead of staying in it for good, and a call's end changes one entry, not two.
DROP INDEX IF EXISTS calls_by_state;
CREATE INDEX calls_open ON calls(state) WHERE state IN ('received', 'running');
