-- Calls are looked up by state in two ways: the open ones (to mark them interrupted, to cancel
-- them from another replica, to list what runs) and the unsuccessful ones, newest first (the
-- status tool, `exai calls --failed`). Each has an index of its own calls alone, in place of one
-- over every call's state: a call that succeeds (nearly every call) leaves the first as it ends
-- and never enters the second, where before its end changed two entries of an index it stayed in.
DROP INDEX IF EXISTS calls_by_state;
CREATE INDEX calls_open ON calls(state) WHERE state IN ('received', 'running');
CREATE INDEX calls_unsuccessful ON calls(id)
    WHERE state IN ('failed', 'timed_out', 'cancelled', 'interrupted');
