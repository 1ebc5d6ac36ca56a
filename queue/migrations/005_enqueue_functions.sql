-- Enqueue through server-side functions.
--
-- The enqueue statements take any client or transaction of the caller's,
-- so the client cannot keep them prepared; sent as SQL they were parsed and
-- planned on every call, which cost more than the insert itself for one job
-- (pgbench, one job per transaction: 1.58 ms a call sent as SQL, 0.69 ms
-- prepared; a durable one-row insert is 0.44 ms). A PL/pgSQL function keeps
-- its statements' plans for the session, and the client's `SELECT` of it is
-- trivial to plan.

-- Jobs without unique keys; ids in input order. Raises DRV01 (nothing
-- inserted) if any job names an unknown queue; wakes the workers of the
-- queues that have jobs due now when the transaction commits.
CREATE FUNCTION {s}.jobs_enqueue(
    p_queue text[], p_kind text[], p_payload jsonb[], p_priority int2[], p_run_at timestamptz[],
    p_max_attempts int4[], p_backoff_base_ms int4[], p_backoff_max_ms int4[], p_timeout_ms int4[],
    p_unique_key text[], p_ordering_key text[])
RETURNS SETOF bigint
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    WITH input AS (
        SELECT * FROM unnest(p_queue, p_kind, p_payload, p_priority, p_run_at, p_max_attempts,
                             p_backoff_base_ms, p_backoff_max_ms, p_timeout_ms, p_unique_key, p_ordering_key)
            WITH ORDINALITY AS t(queue, kind, payload, priority, run_at, max_attempts,
                                 backoff_base_ms, backoff_max_ms, timeout_ms, unique_key, ordering_key, ord)
    ), missing AS (
        SELECT {s}.unknown_queue(d.queue) FROM (SELECT DISTINCT queue FROM input) d
        WHERE NOT EXISTS (SELECT 1 FROM {s}.queues q WHERE q.name = d.queue)
    ), ins AS (
        INSERT INTO {s}.jobs (queue, kind, payload, priority, run_at, max_attempts,
                              backoff_base_ms, backoff_max_ms, timeout_ms, unique_key, ordering_key)
        SELECT i.queue, i.kind, i.payload, i.priority, COALESCE(i.run_at, now()), i.max_attempts,
               i.backoff_base_ms, i.backoff_max_ms, i.timeout_ms, i.unique_key, i.ordering_key
        FROM input i
        WHERE NOT EXISTS (SELECT 1 FROM missing)
        ORDER BY i.ord
        RETURNING id, queue, run_at
    ), woken AS (
        SELECT count(pg_notify('{jobs_chan}', d.queue)) AS n
        FROM (SELECT DISTINCT ins.queue FROM ins WHERE ins.run_at <= now()) d
    )
    SELECT ins.id FROM ins, woken ORDER BY ins.id;
END;
$$;

-- One job without a unique key: the same, with scalar parameters (no
-- arrays to build and unpack: 0.62 ms a call from Rust against 0.74 ms
-- through jobs_enqueue, a durable one-row insert being 0.46 ms).
CREATE FUNCTION {s}.jobs_enqueue_one(
    p_queue text, p_kind text, p_payload jsonb, p_priority int2, p_run_at timestamptz,
    p_max_attempts int4, p_backoff_base_ms int4, p_backoff_max_ms int4, p_timeout_ms int4,
    p_ordering_key text)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    new_id bigint;
    due timestamptz;
BEGIN
    PERFORM 1 FROM {s}.queues WHERE name = p_queue;
    IF NOT FOUND THEN
        PERFORM {s}.unknown_queue(p_queue);
    END IF;
    INSERT INTO {s}.jobs (queue, kind, payload, priority, run_at, max_attempts,
                          backoff_base_ms, backoff_max_ms, timeout_ms, ordering_key)
    VALUES (p_queue, p_kind, p_payload, p_priority, COALESCE(p_run_at, now()), p_max_attempts,
            p_backoff_base_ms, p_backoff_max_ms, p_timeout_ms, p_ordering_key)
    RETURNING id, run_at INTO new_id, due;
    IF due <= now() THEN
        PERFORM pg_notify('{jobs_chan}', p_queue);
    END IF;
    RETURN new_id;
END;
$$;

-- Jobs of which some carry a unique key (see queue/src/unique.rs): one row
-- per input job, in input order: the job's id, or the id of the job that
-- holds its key, and whether it was that holder.
CREATE FUNCTION {s}.jobs_enqueue_unique(
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
                              backoff_base_ms, backoff_max_ms, timeout_ms, unique_key, ordering_key)
        SELECT ids.id, i.queue, i.kind, i.payload, i.priority, COALESCE(i.run_at, now()), i.max_attempts,
               i.backoff_base_ms, i.backoff_max_ms, i.timeout_ms, i.unique_key, i.ordering_key
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

-- Large batches are written with COPY, which cannot raise an error per
-- queue or return ids. This checks the batch's queues first (DRV01 for an
-- unknown one, as above) and hands out `n` ids from the jobs' own
-- sequence, ascending, for the COPY to use in input order.
CREATE FUNCTION {s}.jobs_reserve_ids(p_queues text[], n int) RETURNS int8[]
LANGUAGE plpgsql AS $$
DECLARE
    seq regclass := pg_get_serial_sequence('{s}.jobs', 'id')::regclass;
BEGIN
    PERFORM {s}.unknown_queue(d.queue)
    FROM (SELECT DISTINCT queue FROM unnest(p_queues) AS t(queue)) d
    WHERE NOT EXISTS (SELECT 1 FROM {s}.queues q WHERE q.name = d.queue);
    RETURN ARRAY(SELECT nextval(seq) FROM generate_series(1, n));
END;
$$;
