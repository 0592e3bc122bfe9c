/*
 * worker: the delivery workers' state, and waking this database's worker.
 * The last part of the install script: its final statement starts the
 * database's worker once CREATE EXTENSION commits.
 */

-- Wake this database's delivery worker when the current transaction commits.
CREATE FUNCTION revenue_engine.wake_worker()
RETURNS void
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 're_wake_worker';

CREATE FUNCTION revenue_engine.worker_status(
    OUT database_name text, OUT pid integer, OUT state text, OUT started_at timestamptz,
    OUT last_activity_at timestamptz, OUT in_flight integer, OUT requests bigint,
    OUT sent bigint, OUT retried bigint, OUT dead bigint)
RETURNS SETOF record
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 're_worker_status';
CREATE VIEW revenue_engine.workers AS SELECT * FROM revenue_engine.worker_status();
COMMENT ON VIEW revenue_engine.workers IS 'the delivery workers of this cluster and what they are doing';

REVOKE ALL ON FUNCTION revenue_engine.wake_worker() FROM PUBLIC;
REVOKE ALL ON FUNCTION revenue_engine.worker_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION revenue_engine.worker_status() TO revenue_engine_user;
GRANT SELECT ON revenue_engine.workers TO revenue_engine_user;

-- CREATE EXTENSION starts this database's worker when it commits.
SELECT revenue_engine.wake_worker();
