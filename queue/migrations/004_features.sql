-- Queue features: ordering keys, unique jobs, fleet-wide limits.

-- Ordering keys: among live jobs of one queue sharing an ordering key, only
-- the one with the lowest id may run; the others wait for it to finish
-- (including its retries). Only jobs with a key are in this index, and the
-- claim only probes it for them.
CREATE INDEX jobs_ordering_idx ON {s}.jobs (queue, ordering_key, id) WHERE ordering_key IS NOT NULL;

-- What a dead job does to the later jobs of its key: 'wait' (they stay
-- blocked until it is retried or cancelled by an operator) or 'skip' (they
-- go on).
ALTER TABLE {s}.queues
    ADD COLUMN ordering_on_dead text NOT NULL DEFAULT 'wait' CHECK (ordering_on_dead IN ('wait', 'skip'));
CREATE INDEX jobs_done_dead_ordering_idx ON {s}.jobs_done (queue, ordering_key, id)
    WHERE state = 'dead' AND ordering_key IS NOT NULL;

-- Unique jobs: a key held by one job per queue, for a scope:
--   pending  while the job waits (released when it starts),
--   active   while it waits or runs (released when it finishes),
--   window   until expires_at (a time after enqueue), whatever the job does.
-- A second enqueue with a held key returns the holder instead of a new job.
CREATE TABLE {s}.unique_keys (
    queue       text NOT NULL,
    key         text NOT NULL,
    job_id      bigint NOT NULL,
    scope       text NOT NULL CHECK (scope IN ('pending', 'active', 'window')),
    expires_at  timestamptz,
    PRIMARY KEY (queue, key)
);
CREATE INDEX unique_keys_job_idx ON {s}.unique_keys (job_id);

-- Keys are released by the jobs' own state changes, so every path (worker,
-- reaper, cancel, operator) releases them. The WHEN clauses keep the cost
-- to jobs that have a unique key.
CREATE FUNCTION {s}.unique_keys_release_finished() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM {s}.unique_keys WHERE job_id = NEW.id AND scope <> 'window';
    RETURN NULL;
END;
$$;
CREATE TRIGGER jobs_done_release_unique AFTER INSERT ON {s}.jobs_done
    FOR EACH ROW WHEN (NEW.unique_key IS NOT NULL)
    EXECUTE FUNCTION {s}.unique_keys_release_finished();

CREATE FUNCTION {s}.unique_keys_release_started() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM {s}.unique_keys WHERE job_id = NEW.id AND scope = 'pending';
    RETURN NULL;
END;
$$;
CREATE TRIGGER jobs_release_unique_on_start AFTER UPDATE OF state ON {s}.jobs
    FOR EACH ROW WHEN (NEW.unique_key IS NOT NULL AND NEW.state = 'running')
    EXECUTE FUNCTION {s}.unique_keys_release_started();

-- Jobs claimed under a max_running limit are marked, so that counting a
-- limited queue's running jobs reads a small index of those alone; queues
-- without limits never touch it (the column stays NULL, the predicate
-- false). Jobs that were already running when a limit was set are not
-- counted: they end within their timeout.
ALTER TABLE {s}.jobs ADD COLUMN limited boolean;
CREATE INDEX jobs_limited_running_idx ON {s}.jobs (queue) WHERE state = 'running' AND limited;

-- Rate limits: a token bucket per queue (rate_per_sec tokens a second, at
-- most max(rate, 1) saved up), spent by claims.
ALTER TABLE {s}.queues ADD COLUMN rate_tokens double precision, ADD COLUMN rate_at timestamptz;

-- Claims on a queue with a fleet-wide limit (max_running, rate_per_sec) go
-- through this function: it locks the queue's row (so limited claims of one
-- queue take turns), then counts with a fresh snapshot (a later statement of
-- a volatile function), so concurrent claims can never exceed the limit.
-- Returns the claimed jobs, then one row with id NULL whose `held_back` says
-- whether the limit held the claim back (the worker retries a little later).
CREATE FUNCTION {s}.jobs_claim_limited(p_queue text, p_limit int, p_worker text)
RETURNS TABLE (id bigint, kind text, attempt int, timeout_ms int, payload jsonb, run_at timestamptz,
               created_at timestamptz, priority smallint, job_ctid tid, held_back boolean, wait_ms int)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    q          record;
    allowed    int := p_limit;
    running    bigint;
    burst      double precision;
    tokens     double precision;
    claimed    int;
BEGIN
    PERFORM 1 FROM {s}.workers w WHERE w.id = p_worker AND w.expires_at > now() FOR KEY SHARE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT * INTO q FROM {s}.queues qq WHERE qq.name = p_queue AND NOT qq.paused FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF q.max_running IS NOT NULL THEN
        SELECT count(*) INTO running FROM {s}.jobs j WHERE j.queue = p_queue AND j.state = 'running' AND j.limited;
        allowed := least(allowed, q.max_running - running);
    END IF;
    IF q.rate_per_sec IS NOT NULL THEN
        burst := greatest(q.rate_per_sec, 1);
        tokens := least(burst, COALESCE(q.rate_tokens, burst)
                        + q.rate_per_sec * EXTRACT(EPOCH FROM clock_timestamp() - COALESCE(q.rate_at, clock_timestamp())));
        allowed := least(allowed, floor(tokens)::int);
    END IF;
    claimed := 0;
    IF allowed > 0 THEN
        RETURN QUERY
        WITH picked AS (
            SELECT j.id FROM {s}.jobs j
            WHERE j.queue = p_queue AND j.state = 'available' AND j.run_at <= now()
              AND (j.ordering_key IS NULL OR NOT EXISTS (
                      SELECT 1 FROM {s}.jobs o
                      WHERE o.queue = j.queue AND o.ordering_key = j.ordering_key AND o.id < j.id))
              AND (j.ordering_key IS NULL OR q.ordering_on_dead = 'skip' OR NOT EXISTS (
                      SELECT 1 FROM {s}.jobs_done d
                      WHERE d.queue = j.queue AND d.ordering_key = j.ordering_key AND d.state = 'dead' AND d.id < j.id))
            ORDER BY j.priority, j.run_at, j.id
            LIMIT greatest(allowed, 0)
            FOR UPDATE SKIP LOCKED
        )
        UPDATE {s}.jobs j
        SET state = 'running', attempt = j.attempt + 1, lease_owner = p_worker, started_at = now(),
            limited = CASE WHEN q.max_running IS NOT NULL THEN true END
        FROM picked
        WHERE j.id = picked.id
        RETURNING j.id, j.kind, j.attempt, COALESCE(j.timeout_ms, q.timeout_ms), j.payload, j.run_at,
                  j.created_at, j.priority, j.ctid, false, 0;
        GET DIAGNOSTICS claimed = ROW_COUNT;
    END IF;
    IF q.rate_per_sec IS NOT NULL THEN
        UPDATE {s}.queues SET rate_tokens = tokens - claimed, rate_at = clock_timestamp() WHERE name = p_queue;
    END IF;
    IF claimed < p_limit AND allowed < p_limit THEN
        -- Held back by the limit: say when a token is due (rate), or retry soon (running).
        RETURN QUERY SELECT NULL::bigint, NULL::text, NULL::int, NULL::int, NULL::jsonb, NULL::timestamptz,
                            NULL::timestamptz, NULL::smallint, NULL::tid, true,
                            CASE WHEN q.rate_per_sec IS NOT NULL AND tokens - claimed < 1
                                 THEN ceil(1000 * (1 - (tokens - claimed)) / q.rate_per_sec)::int
                                 ELSE 250 END;
    END IF;
END;
$$;
