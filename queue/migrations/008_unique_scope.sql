-- A job keeps the scope of its unique key (pending, active, window), so
-- that an operator's retry of a dead or cancelled job can take the key
-- again (queue/src/admin.rs): the key's row in unique_keys is gone once
-- the key is released, and the scope with it. The column is NULL for jobs
-- without a key; live jobs that still hold their key get its scope below.
-- Jobs that finished before this migration, or that an older build moved
-- (cancel, retry) during a rollout, stay NULL: their retry cannot know the
-- scope and leaves the key alone, as before.
--
-- The functions below are those of migrations 001, 005 and 006 with the
-- column added where a keyed job is inserted, and where a job moves to
-- jobs_done on a path that a retry can undo (dead, cancelled). Successes
-- are never retried: the completion functions stay as they are. Same
-- signatures and results, so builds for schema 4 keep working (their own
-- statements leave the column NULL).
ALTER TABLE {s}.jobs ADD COLUMN IF NOT EXISTS unique_scope text;
ALTER TABLE {s}.jobs_done ADD COLUMN IF NOT EXISTS unique_scope text;
UPDATE {s}.jobs j SET unique_scope = u.scope
FROM {s}.unique_keys u
WHERE u.job_id = j.id AND u.queue = j.queue AND u.key = j.unique_key;

CREATE OR REPLACE FUNCTION {s}.jobs_enqueue_unique(
    p_queue text[], p_kind text[], p_payload jsonb[], p_priority int2[], p_run_at timestamptz[],
    p_max_attempts int4[], p_backoff_base_ms int4[], p_backoff_max_ms int4[], p_timeout_ms int4[],
    p_unique_key text[], p_ordering_key text[], p_scope text[], p_window_s int4[],
    OUT id bigint, OUT existing boolean)
RETURNS SETOF record
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH input AS (
        SELECT * FROM unnest(p_queue, p_kind, p_payload, p_priority, p_run_at, p_max_attempts,
                             p_backoff_base_ms, p_backoff_max_ms, p_timeout_ms, p_unique_key,
                             p_ordering_key, p_scope, p_window_s)
            WITH ORDINALITY AS t(queue, kind, payload, priority, run_at, max_attempts, backoff_base_ms,
                                 backoff_max_ms, timeout_ms, unique_key, ordering_key, scope, window_s, ord)
    ), missing AS (
        SELECT {s}.unknown_queue(d.queue) FROM (SELECT DISTINCT queue FROM input) d
        WHERE NOT EXISTS (SELECT 1 FROM {s}.queues q WHERE q.name = d.queue)
    ), ids AS (
        SELECT ord, nextval(pg_get_serial_sequence('{s}.jobs', 'id')) AS id
        FROM input WHERE NOT EXISTS (SELECT 1 FROM missing)
    ), wanted AS (
        -- The first job of each key in the batch competes for it.
        SELECT DISTINCT ON (i.queue, i.unique_key) i.queue, i.unique_key, ids.id, i.scope, i.window_s
        FROM input i JOIN ids USING (ord)
        WHERE i.unique_key IS NOT NULL
        ORDER BY i.queue, i.unique_key, i.ord
    ), held AS (
        INSERT INTO {s}.unique_keys AS u (queue, key, job_id, scope, expires_at)
        SELECT queue, unique_key, id, scope,
               CASE WHEN scope = 'window' THEN now() + window_s * interval '1 second' END
        FROM wanted
        ON CONFLICT (queue, key) DO UPDATE SET
            -- An expired window is free again; any other holder keeps the key.
            job_id = CASE WHEN u.scope = 'window' AND u.expires_at <= now() THEN EXCLUDED.job_id ELSE u.job_id END,
            scope = CASE WHEN u.scope = 'window' AND u.expires_at <= now() THEN EXCLUDED.scope ELSE u.scope END,
            expires_at = CASE WHEN u.scope = 'window' AND u.expires_at <= now() THEN EXCLUDED.expires_at ELSE u.expires_at END
        RETURNING u.queue, u.key, u.job_id
    ), ins AS (
        INSERT INTO {s}.jobs (id, queue, kind, payload, priority, run_at, max_attempts,
                              backoff_base_ms, backoff_max_ms, timeout_ms, unique_key, unique_scope,
                              ordering_key)
        SELECT ids.id, i.queue, i.kind, i.payload, i.priority, COALESCE(i.run_at, now()), i.max_attempts,
               i.backoff_base_ms, i.backoff_max_ms, i.timeout_ms, i.unique_key,
               CASE WHEN i.unique_key IS NOT NULL THEN i.scope END, i.ordering_key
        FROM input i JOIN ids USING (ord)
        WHERE i.unique_key IS NULL
           OR EXISTS (SELECT 1 FROM held h WHERE h.queue = i.queue AND h.key = i.unique_key AND h.job_id = ids.id)
        ORDER BY i.ord
        RETURNING id, queue, run_at
    ), woken AS (
        SELECT count(pg_notify('{jobs_chan}', d.queue)) AS n
        FROM (SELECT DISTINCT queue FROM ins WHERE run_at <= now()) d
    )
    SELECT COALESCE(ins.id, h.job_id), ins.id IS NULL
    FROM input i
    JOIN ids USING (ord)
    LEFT JOIN ins ON ins.id = ids.id
    LEFT JOIN held h ON h.queue = i.queue AND h.key = i.unique_key
    CROSS JOIN woken
    ORDER BY i.ord;
END;
$$;

CREATE OR REPLACE FUNCTION {s}.jobs_fail(p_id int8[], p_attempt int4[], p_error text[], p_retryable bool[],
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
                                   started_at, finished_at, worker, unique_key, unique_scope, ordering_key, payload,
                                   progress, result, errors)
        SELECT id, queue, kind, 'dead', priority, attempt, max_attempts, run_at, created_at, started_at,
               now(), p_worker, unique_key, unique_scope, ordering_key, payload, progress, NULL,
               errors || jsonb_build_object('attempt', attempt, 'at', now(), 'error', error, 'worker', p_worker)
        FROM dead
        RETURNING id
    )
    SELECT retried.id, retried.run_at FROM retried
    UNION ALL
    SELECT buried.id, NULL::timestamptz FROM buried;
END;
$$;

CREATE OR REPLACE FUNCTION {s}.jobs_cancelled(p_id int8[], p_attempt int4[], p_worker text)
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
                               started_at, finished_at, worker, unique_key, unique_scope, ordering_key, payload,
                               progress, result, errors)
    SELECT id, queue, kind, 'cancelled', priority, attempt, max_attempts, run_at, created_at, started_at,
           now(), p_worker, unique_key, unique_scope, ordering_key, payload, progress, NULL,
           errors || jsonb_build_object('attempt', attempt, 'at', now(), 'error', 'cancelled while running',
                                        'worker', p_worker)
    FROM gone
    RETURNING id;
END;
$$;

CREATE OR REPLACE FUNCTION {s}.leases_reclaim(sweep_orphans boolean,
                                   OUT workers text[], OUT requeued bigint, OUT dead bigint)
LANGUAGE plpgsql AS $$
BEGIN
    WITH gone AS (DELETE FROM {s}.workers WHERE expires_at < now() RETURNING id)
    SELECT COALESCE(array_agg(id ORDER BY id), '{}') INTO workers FROM gone;
    requeued := 0;
    dead := 0;
    IF cardinality(workers) = 0 AND NOT sweep_orphans THEN
        RETURN;
    END IF;
    WITH lost AS (
        SELECT j.id, j.attempt >= COALESCE(j.max_attempts, q.max_attempts) AS final
        FROM {s}.jobs j
        JOIN {s}.queues q ON q.name = j.queue
        WHERE j.state = 'running'
          AND (j.lease_owner = ANY(workers)
               OR NOT EXISTS (SELECT 1 FROM {s}.workers w WHERE w.id = j.lease_owner))
        FOR UPDATE OF j
    ), requeued_jobs AS (
        UPDATE {s}.jobs j
        SET state = 'available', run_at = now(), lease_owner = NULL, cancel_requested = false,
            errors = j.errors || jsonb_build_object('attempt', j.attempt, 'at', now(),
                     'error', 'worker lost: lease expired', 'worker', j.lease_owner)
        FROM lost
        WHERE j.id = lost.id AND NOT lost.final
        RETURNING j.id, j.queue
    ), dead_jobs AS (
        DELETE FROM {s}.jobs j USING lost
        WHERE j.id = lost.id AND lost.final
        RETURNING j.*
    ), buried AS (
        INSERT INTO {s}.jobs_done (id, queue, kind, state, priority, attempt, max_attempts, run_at,
                                   created_at, started_at, finished_at, worker, unique_key,
                                   unique_scope, ordering_key, payload, progress, result, errors)
        SELECT id, queue, kind, 'dead', priority, attempt, max_attempts, run_at, created_at,
               started_at, now(), lease_owner, unique_key, unique_scope, ordering_key, payload, progress, NULL,
               errors || jsonb_build_object('attempt', attempt, 'at', now(),
                         'error', 'worker lost: lease expired', 'worker', lease_owner)
        FROM dead_jobs
        RETURNING id
    ), woken AS (
        SELECT count(pg_notify('{jobs_chan}', d.queue)) AS n
        FROM (SELECT DISTINCT queue FROM requeued_jobs) d
    )
    SELECT (SELECT count(*) FROM requeued_jobs), (SELECT count(*) FROM buried), (SELECT n FROM woken)
    INTO requeued, dead;
END;
$$;
