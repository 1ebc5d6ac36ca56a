-- A cheaper fence for successes without a result.
--
-- Migration 009's completion joins `jobs` to the unnested batch: a nested
-- loop that rescans a TID scan once per job, after five arrays have each
-- been copied into a tuplestore. Measured with callgrind on one backend
-- claiming and completing 20,000 jobs in batches of 1,000, a claim and a
-- completion cost 85,400 instructions per job, and that join 9,600 of them:
-- a claim with a delete fenced on the lease owner alone was 63,800, with
-- the join 73,400.
--
-- Here the rows are found by one TID scan over all the batch's addresses,
-- and each row is kept only if its (id, attempt) is one of the batch's
-- pairs: a hashed subplan, built once per statement from the two arrays in
-- lockstep (`COALESCE` keeps the test a subplan rather than a join the
-- planner could turn into a nested loop). The test is exact: a row is
-- recorded only as the attempt the worker reported for that job, whichever
-- of the batch's addresses it was found at. 79,000 instructions per job in
-- all (-7.5%).
--
-- A result cannot come along a hashed test, so a batch with any result
-- goes through migration 009's join, renamed `jobs_complete_joined`; the
-- statements after the fence are the same in both. Same signature and
-- results as before: workers of older builds use the new fence too, and
-- `jobs_complete_by_id` (which calls `jobs_complete_at`) as well.
ALTER FUNCTION {s}.jobs_complete_at(tid[], int8[], int4[], jsonb[], text) RENAME TO jobs_complete_joined;

CREATE FUNCTION {s}.jobs_complete_at(p_ctid tid[], p_id int8[], p_attempt int4[], p_result jsonb[],
                                     p_worker text)
RETURNS int8[]
LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    accepted int8[];
BEGIN
    IF cardinality(array_remove(p_result, NULL)) > 0 THEN
        RETURN {s}.jobs_complete_joined(p_ctid, p_id, p_attempt, p_result, p_worker);
    END IF;
    WITH done AS (
        DELETE FROM {s}.jobs j
        WHERE j.ctid = ANY(p_ctid) AND j.lease_owner = p_worker
          AND COALESCE((j.id, j.attempt) IN (SELECT unnest(p_id), unnest(p_attempt)), false)
        RETURNING j.queue, j.unique_key IS NOT NULL AS keyed, j.ordering_key IS NOT NULL AS ordered,
                  ROW(j.id, j.kind, j.priority, j.attempt, j.max_attempts, j.run_at, j.created_at, j.started_at,
                      j.unique_key, j.ordering_key, j.payload, j.progress, NULL, j.errors)::{s}.succeeded_job AS r
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
        SELECT count(pg_notify('{jobs_chan}', q.queue)) AS n
        FROM (SELECT DISTINCT queue FROM g WHERE ordered) q
    )
    SELECT COALESCE({s}.array_cat_agg(g.ids), '{}') INTO accepted FROM g, woken;
    RETURN accepted;
END;
$$;
