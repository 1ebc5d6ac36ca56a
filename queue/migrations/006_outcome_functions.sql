-- Recording outcomes through server-side functions that never scan `jobs`.
--
-- Each outcome statement joins a batch of (address or id, attempt) to
-- `jobs`. The right plan looks each row up by its address or primary key.
-- But the planner weighs those lookups as random disk reads
-- (random_page_cost), and with statistics taken while no job ran (an
-- ANALYZE of a big backlog) it also expects the lease owner to match no
-- row: on tables of tens of thousands of jobs it then scanned all of
-- `jobs` once per batch (hash join), or once per batch and compared every
-- row with every job of the batch (nested loop): 60 ms for a completion of
-- 500 jobs instead of about 3, measured. Inside these functions sequential
-- scans are off, so the lookups are the only plan; the lease owner is also
-- compared as a column of the batch rather than as a condition on `jobs`
-- alone, so no estimate of it can make `jobs` the driving side.

-- Successes found at the address their claim returned. Returns the ids
-- accepted (the others were fenced off: lease lost, or a newer attempt).
CREATE FUNCTION {s}.jobs_complete_at(p_ctid tid[], p_id int8[], p_attempt int4[], p_result jsonb[],
                                     p_worker text)
RETURNS int8[]
LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    accepted int8[];
BEGIN
    WITH c AS (
        SELECT * FROM unnest(p_ctid, p_id, p_attempt, p_result,
                             array_fill(p_worker, ARRAY[cardinality(p_ctid)])) AS c(ctid, id, attempt, result, owner)
    ), done AS (
        DELETE FROM {s}.jobs j USING c
        WHERE j.ctid = c.ctid AND j.id = c.id AND j.attempt = c.attempt AND j.lease_owner = c.owner
        RETURNING j.*, c.result
    ), ins AS (
        INSERT INTO {s}.jobs_done (id, queue, kind, state, priority, attempt, max_attempts, run_at, created_at,
                                   started_at, finished_at, worker, unique_key, ordering_key, payload, progress,
                                   result, errors)
        SELECT id, queue, kind, 'succeeded', priority, attempt, max_attempts, run_at, created_at, started_at,
               now(), p_worker, unique_key, ordering_key, payload, progress, result, errors
        FROM done
    ), woken AS (
        -- The next job of a finished job's ordering key can run now: wake
        -- the workers (nothing to do for jobs without a key).
        SELECT count(pg_notify('{jobs_chan}', q.queue)) AS n
        FROM (SELECT DISTINCT queue FROM done WHERE ordering_key IS NOT NULL) q
    )
    SELECT COALESCE(array_agg(done.id), '{}') INTO accepted FROM done, woken;
    RETURN accepted;
END;
$$;

-- Successes found by id (their row moved since the claim, or no address).
CREATE FUNCTION {s}.jobs_complete_by_id(p_id int8[], p_attempt int4[], p_result jsonb[], p_worker text)
RETURNS int8[]
LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    accepted int8[];
BEGIN
    WITH c AS (
        SELECT * FROM unnest(p_id, p_attempt, p_result,
                             array_fill(p_worker, ARRAY[cardinality(p_id)])) AS c(id, attempt, result, owner)
    ), done AS (
        DELETE FROM {s}.jobs j USING c
        WHERE j.id = c.id AND j.attempt = c.attempt AND j.lease_owner = c.owner
        RETURNING j.*, c.result
    ), ins AS (
        INSERT INTO {s}.jobs_done (id, queue, kind, state, priority, attempt, max_attempts, run_at, created_at,
                                   started_at, finished_at, worker, unique_key, ordering_key, payload, progress,
                                   result, errors)
        SELECT id, queue, kind, 'succeeded', priority, attempt, max_attempts, run_at, created_at, started_at,
               now(), p_worker, unique_key, ordering_key, payload, progress, result, errors
        FROM done
    ), woken AS (
        SELECT count(pg_notify('{jobs_chan}', q.queue)) AS n
        FROM (SELECT DISTINCT queue FROM done WHERE ordering_key IS NOT NULL) q
    )
    SELECT COALESCE(array_agg(done.id), '{}') INTO accepted FROM done, woken;
    RETURN accepted;
END;
$$;

-- Failed attempts: each job is retried after a capped, jittered
-- exponential backoff (`retry_at`), or buried as dead (`retry_at` NULL)
-- when its attempts are used up or the error is not retryable. Fenced
-- jobs are left out.
CREATE FUNCTION {s}.jobs_fail(p_id int8[], p_attempt int4[], p_error text[], p_retryable bool[],
                              p_worker text, OUT job_id int8, OUT retry_at timestamptz)
RETURNS SETOF record
LANGUAGE plpgsql SET enable_seqscan = off AS $$
BEGIN
    RETURN QUERY
    WITH f AS (
        SELECT * FROM unnest(p_id, p_attempt, p_error, p_retryable,
                             array_fill(p_worker, ARRAY[cardinality(p_id)])) AS f(id, attempt, error, retryable, owner)
    ), t AS (
        SELECT j.id, f.error,
               (NOT f.retryable OR j.attempt >= COALESCE(j.max_attempts, q.max_attempts)) AS final,
               LEAST(COALESCE(j.backoff_max_ms, q.backoff_max_ms)::float8,
                     COALESCE(j.backoff_base_ms, q.backoff_base_ms) * power(2::float8, j.attempt - 1)) AS cap_ms
        FROM {s}.jobs j
        JOIN f ON f.id = j.id AND f.attempt = j.attempt AND j.lease_owner = f.owner
        JOIN {s}.queues q ON q.name = j.queue
        FOR UPDATE OF j
    ), retried AS (
        UPDATE {s}.jobs j
        SET state = 'available', lease_owner = NULL, cancel_requested = false,
            -- Equal jitter: half the capped exponential delay, plus a random half.
            run_at = now() + t.cap_ms * (0.5 + random() * 0.5) * interval '1 millisecond',
            errors = j.errors || jsonb_build_object('attempt', j.attempt, 'at', now(), 'error', t.error,
                                                    'worker', p_worker)
        FROM t
        WHERE j.id = t.id AND NOT t.final
        RETURNING j.id, j.run_at
    ), dead AS (
        DELETE FROM {s}.jobs j USING t
        WHERE j.id = t.id AND t.final
        RETURNING j.*, t.error
    ), buried AS (
        INSERT INTO {s}.jobs_done (id, queue, kind, state, priority, attempt, max_attempts, run_at, created_at,
                                   started_at, finished_at, worker, unique_key, ordering_key, payload, progress,
                                   result, errors)
        SELECT id, queue, kind, 'dead', priority, attempt, max_attempts, run_at, created_at, started_at,
               now(), p_worker, unique_key, ordering_key, payload, progress, NULL,
               errors || jsonb_build_object('attempt', attempt, 'at', now(), 'error', error, 'worker', p_worker)
        FROM dead
        RETURNING id
    )
    SELECT retried.id, retried.run_at FROM retried
    UNION ALL
    SELECT buried.id, NULL::timestamptz FROM buried;
END;
$$;

-- Running jobs stopped because someone cancelled them.
CREATE FUNCTION {s}.jobs_cancelled(p_id int8[], p_attempt int4[], p_worker text)
RETURNS SETOF int8
LANGUAGE plpgsql SET enable_seqscan = off AS $$
BEGIN
    RETURN QUERY
    WITH gone AS (
        DELETE FROM {s}.jobs j
        USING unnest(p_id, p_attempt, array_fill(p_worker, ARRAY[cardinality(p_id)])) AS c(id, attempt, owner)
        WHERE j.id = c.id AND j.attempt = c.attempt AND j.lease_owner = c.owner
        RETURNING j.*
    )
    INSERT INTO {s}.jobs_done (id, queue, kind, state, priority, attempt, max_attempts, run_at, created_at,
                               started_at, finished_at, worker, unique_key, ordering_key, payload, progress,
                               result, errors)
    SELECT id, queue, kind, 'cancelled', priority, attempt, max_attempts, run_at, created_at, started_at,
           now(), p_worker, unique_key, ordering_key, payload, progress, NULL,
           errors || jsonb_build_object('attempt', attempt, 'at', now(), 'error', 'cancelled while running',
                                        'worker', p_worker)
    FROM gone
    RETURNING id;
END;
$$;

-- Leased jobs given back at once (worker shutting down): available again
-- immediately, and the attempt is not counted.
CREATE FUNCTION {s}.jobs_release(p_id int8[], p_attempt int4[], p_worker text)
RETURNS SETOF int8
LANGUAGE plpgsql SET enable_seqscan = off AS $$
BEGIN
    RETURN QUERY
    WITH released AS (
        UPDATE {s}.jobs j
        SET state = 'available', attempt = j.attempt - 1, lease_owner = NULL, started_at = NULL,
            cancel_requested = false
        FROM unnest(p_id, p_attempt, array_fill(p_worker, ARRAY[cardinality(p_id)])) AS r(id, attempt, owner)
        WHERE j.id = r.id AND j.attempt = r.attempt AND j.lease_owner = r.owner
        RETURNING j.id, j.queue
    ), woken AS (
        SELECT count(pg_notify('{jobs_chan}', d.queue)) AS n FROM (SELECT DISTINCT queue FROM released) d
    )
    SELECT released.id FROM released, woken;
END;
$$;
