-- Jobs that wait for a later run_at (delayed jobs, retries in backoff,
-- requeued jobs): the controller's scheduler finds those coming due with
-- this small index and wakes the workers at the right second. A job
-- enqueued to run now has run_at = created_at and is not in it, so the hot
-- path pays nothing.
CREATE INDEX jobs_scheduled_idx ON {s}.jobs (run_at) WHERE state = 'available' AND run_at > created_at;
