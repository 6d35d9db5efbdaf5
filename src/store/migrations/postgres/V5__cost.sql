-- What each call cost, in micro-dollars (NULL: unknown — a model without a price answered, or a
-- call recorded before costs were), and today's spend kept as a running total per UTC day,
-- provider and user, which the budget check reads by key (every replica adds to the same rows).
ALTER TABLE calls ADD COLUMN cost_usd_micros BIGINT;
CREATE TABLE spend_by_day (
    day BIGINT NOT NULL,
    provider TEXT NOT NULL,
    user_name TEXT NOT NULL,
    cost_usd_micros BIGINT NOT NULL DEFAULT 0,
    unpriced_calls BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (day, provider, user_name)
);
