-- Cron schedules: each fires a job per matching time, exactly once, even
-- across controller restarts and with several controllers (the firing and
-- the enqueue commit together under the schedule's row lock).
CREATE TABLE {s}.cron_schedules (
    name           text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$'),
    -- crontab syntax: 5 fields, or 6 with seconds first.
    schedule       text NOT NULL,
    timezone       text NOT NULL DEFAULT 'UTC',
    queue          text NOT NULL,
    kind           text NOT NULL,
    payload        jsonb NOT NULL DEFAULT '{}',
    priority       smallint NOT NULL DEFAULT 0,
    max_attempts   integer CHECK (max_attempts BETWEEN 1 AND 1000),
    timeout_ms     integer CHECK (timeout_ms > 0),
    -- After downtime longer than the late tolerance: 'skip' the missed
    -- firings, or run 'once' for all of them.
    catch_up       text NOT NULL DEFAULT 'skip' CHECK (catch_up IN ('skip', 'once')),
    enabled        boolean NOT NULL DEFAULT true,
    next_fire_at   timestamptz NOT NULL,
    last_fired_at  timestamptz,
    last_job_id    bigint,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX cron_schedules_due_idx ON {s}.cron_schedules (next_fire_at) WHERE enabled;
