-- The token bucket of jobs_claim_limited (004) read the clock twice: a new
-- bucket's elapsed time, clock_timestamp() - clock_timestamp(), came out
-- negative when the second call fell in a later microsecond (about 2% of
-- calls here), so a full bucket of 20 gave 19; and the time stamped on the
-- bucket came after the time its tokens were counted at, so every claim
-- lost the tokens of its own duration. Now one reading serves both.
-- Same signature and results: builds for schema 4 keep working.
CREATE OR REPLACE FUNCTION {s}.jobs_claim_limited(p_queue text, p_limit int, p_worker text)
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
    counted_at timestamptz;
BEGIN
    PERFORM 1 FROM {s}.workers w WHERE w.id = p_worker AND w.expires_at > now() FOR KEY SHARE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT * INTO q FROM {s}.queues qq WHERE qq.name = p_queue AND NOT qq.paused FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- Read once the queue's row is ours: claims that queued for it count
    -- their tokens in the order they stamp the bucket.
    counted_at := clock_timestamp();
    IF q.max_running IS NOT NULL THEN
        SELECT count(*) INTO running FROM {s}.jobs j WHERE j.queue = p_queue AND j.state = 'running' AND j.limited;
        allowed := least(allowed, q.max_running - running);
    END IF;
    IF q.rate_per_sec IS NOT NULL THEN
        burst := greatest(q.rate_per_sec, 1);
        tokens := least(burst, COALESCE(q.rate_tokens, burst)
                        + q.rate_per_sec * greatest(EXTRACT(EPOCH FROM counted_at - COALESCE(q.rate_at, counted_at)), 0));
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
        UPDATE {s}.queues SET rate_tokens = tokens - claimed, rate_at = counted_at WHERE name = p_queue;
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
