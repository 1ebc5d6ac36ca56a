-- Successes recorded a batch at a time.
--
-- A completion of hundreds of jobs used to insert one `jobs_done` row per
-- job: a heap tuple, its primary-key and BRIN entries and a WAL record
-- each, a quarter of the database's work per job in a drain (callgrind,
-- one backend claiming and completing batches of 1,000: 104,800
-- instructions per job, 81,000 with the insert left out, 63,600 for a
-- claim and a bare delete). Here a completion groups its jobs by queue and
-- by block of 1,024 ids (`bucket`, id >> 10) and writes each group of 16
-- or more as one row holding an array of the jobs (83,750 instructions per
-- job). Smaller groups (a single job at low load, a late retry among new
-- ids) still go to `jobs_done` row by row, so a bucket holds at most 64
-- batch rows and a lookup by id reads a few rows.
--
-- Readers see every finished job through the view `jobs_finished`; a
-- lookup by id also filters on `bucket` (the view has it for both tables),
-- which the bucket index serves. Pruning deletes whole rows: a row holds
-- one queue's jobs, and goes when its finish time leaves the queue's
-- success retention. Nothing in a row changes after it is written.
CREATE TYPE {s}.succeeded_job AS (
    id            bigint,
    kind          text,
    priority      smallint,
    attempt       integer,
    max_attempts  integer,
    run_at        timestamptz,
    created_at    timestamptz,
    started_at    timestamptz,
    unique_key    text,
    ordering_key  text,
    payload       jsonb,
    progress      jsonb,
    result        jsonb,
    errors        jsonb
);

CREATE TABLE {s}.jobs_succeeded (
    queue        text NOT NULL,
    bucket       bigint NOT NULL,
    finished_at  timestamptz NOT NULL,
    worker       text,
    n            integer NOT NULL,
    ids          int8[] NOT NULL,
    jobs         {s}.succeeded_job[] NOT NULL
) WITH (fillfactor = 100);
CREATE INDEX jobs_succeeded_bucket_idx ON {s}.jobs_succeeded (bucket);
CREATE INDEX jobs_succeeded_finished_idx ON {s}.jobs_succeeded (finished_at);

-- lz4 compresses the arrays for a fraction of pglz's CPU; servers built
-- without it keep the default.
DO $$
BEGIN
    ALTER TABLE {s}.jobs_succeeded ALTER COLUMN jobs SET COMPRESSION lz4,
                                   ALTER COLUMN ids SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    NULL;
END;
$$;

CREATE VIEW {s}.jobs_finished AS
SELECT id >> 10 AS bucket, id, queue, kind, state, priority, attempt, max_attempts, run_at, created_at,
       started_at, finished_at, worker, unique_key, ordering_key, payload, progress, result, errors,
       unique_scope
FROM {s}.jobs_done
UNION ALL
SELECT b.bucket, u.id, b.queue, u.kind, 'succeeded'::{s}.job_state, u.priority, u.attempt, u.max_attempts,
       u.run_at, u.created_at, u.started_at, b.finished_at, b.worker, u.unique_key, u.ordering_key,
       u.payload, u.progress, u.result, u.errors, NULL::text
FROM {s}.jobs_succeeded b CROSS JOIN LATERAL unnest(b.jobs) u;

-- The buckets of some ids, for lookups through the view:
-- `WHERE id = ANY($1) AND bucket = ANY({s}.buckets($1))`.
CREATE FUNCTION {s}.buckets(ids int8[]) RETURNS int8[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT COALESCE(array_agg(DISTINCT x >> 10), '{}') FROM unnest(ids) x
$$;

-- The highest id recorded finished (the edge of `jobs_done`'s primary key
-- and of the top bucket), for counters and progress that must not scan.
CREATE FUNCTION {s}.jobs_finished_max_id() RETURNS int8
LANGUAGE sql STABLE AS $$
    SELECT GREATEST(
        (SELECT max(id) FROM {s}.jobs_done),
        (SELECT max(i) FROM {s}.jobs_succeeded b, unnest(b.ids) i
         WHERE b.bucket = (SELECT max(bucket) FROM {s}.jobs_succeeded)))
$$;

CREATE AGGREGATE {s}.array_cat_agg(anycompatiblearray) (sfunc = array_cat, stype = anycompatiblearray);

-- The completions of migration 006, same signatures and results, writing
-- groups of 16 or more jobs as batch rows. Keys of batched jobs are
-- released here; the trigger on `jobs_done` releases the others'.
-- Successes found at the address their claim returned:
CREATE OR REPLACE FUNCTION {s}.jobs_complete_at(p_ctid tid[], p_id int8[], p_attempt int4[], p_result jsonb[],
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
        RETURNING j.queue, j.unique_key IS NOT NULL AS keyed, j.ordering_key IS NOT NULL AS ordered,
                  ROW(j.id, j.kind, j.priority, j.attempt, j.max_attempts, j.run_at, j.created_at, j.started_at,
                      j.unique_key, j.ordering_key, j.payload, j.progress, c.result, j.errors)::{s}.succeeded_job AS r
    ), g AS (
        SELECT queue, (r).id >> 10 AS bucket, count(*)::int AS n, array_agg((r).id) AS ids, array_agg(r) AS jobs,
               bool_or(keyed) AS keyed, bool_or(ordered) AS ordered
        FROM done GROUP BY queue, (r).id >> 10
    ), batched AS (
        INSERT INTO {s}.jobs_succeeded (queue, bucket, finished_at, worker, n, ids, jobs)
        SELECT queue, bucket, now(), p_worker, n, ids, jobs FROM g WHERE n >= 16
    ), single AS (
        INSERT INTO {s}.jobs_done (id, queue, kind, state, priority, attempt, max_attempts, run_at, created_at,
                                   started_at, finished_at, worker, unique_key, ordering_key, payload, progress,
                                   result, errors)
        SELECT u.id, g.queue, u.kind, 'succeeded', u.priority, u.attempt, u.max_attempts, u.run_at, u.created_at,
               u.started_at, now(), p_worker, u.unique_key, u.ordering_key, u.payload, u.progress, u.result,
               u.errors
        FROM g CROSS JOIN LATERAL unnest(g.jobs) u
        WHERE g.n < 16
    ), released AS (
        DELETE FROM {s}.unique_keys k
        WHERE k.job_id = ANY(ARRAY(SELECT u.id FROM g CROSS JOIN LATERAL unnest(g.jobs) u
                                   WHERE g.n >= 16 AND g.keyed AND u.unique_key IS NOT NULL))
          AND k.scope <> 'window'
    ), woken AS (
        -- The next job of a finished job's ordering key can run now: wake
        -- the workers (nothing to do for jobs without a key).
        SELECT count(pg_notify('{jobs_chan}', q.queue)) AS n
        FROM (SELECT DISTINCT queue FROM g WHERE ordered) q
    )
    SELECT COALESCE({s}.array_cat_agg(g.ids), '{}') INTO accepted FROM g, woken;
    RETURN accepted;
END;
$$;

-- Successes found by id (their row moved since the claim, or no address):
-- their current addresses, locked so that the rows cannot move again
-- before the completion above records them in the same transaction.
CREATE OR REPLACE FUNCTION {s}.jobs_complete_by_id(p_id int8[], p_attempt int4[], p_result jsonb[], p_worker text)
RETURNS int8[]
LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    at tid[];
    ids int8[];
    attempts int4[];
    results jsonb[];
BEGIN
    SELECT array_agg(x.ctid), array_agg(x.id), array_agg(x.attempt), array_agg(x.result)
    INTO at, ids, attempts, results
    FROM (
        SELECT j.ctid, c.id, c.attempt, c.result
        FROM unnest(p_id, p_attempt, p_result) AS c(id, attempt, result)
        JOIN {s}.jobs j ON j.id = c.id
        WHERE j.lease_owner = p_worker
        FOR UPDATE OF j
    ) x;
    IF at IS NULL THEN
        RETURN '{}';
    END IF;
    RETURN {s}.jobs_complete_at(at, ids, attempts, results, p_worker);
END;
$$;
