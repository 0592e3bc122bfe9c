-- campaigns: runner (see schema.sql for the module's files).  The worker's job
-- kind "campaign steps" is C (src/campaigns/runner.c); this is its SQL entry
-- point, which runs the same code in the calling session.

CREATE FUNCTION revenue_engine.run_campaign_steps(max integer DEFAULT 1000, now timestamptz DEFAULT NULL)
RETURNS integer
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 're_run_campaign_steps';
COMMENT ON FUNCTION revenue_engine.run_campaign_steps(integer, timestamptz) IS
    'run due campaign steps in this transaction with the delivery worker''s code (tenants in turn, at most max steps; now NULL: revenue_engine.clock_now()); returns the steps run. Internal: tests and operations';
REVOKE ALL ON FUNCTION revenue_engine.run_campaign_steps(integer, timestamptz) FROM PUBLIC;
