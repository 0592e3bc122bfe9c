/*
 * revenue_engine: base objects shared by every module (roles, tenant helper).
 * The install script is this file followed by each module's SQL (see Makefile).
 */
\echo Use "CREATE EXTENSION revenue_engine" to load this file. \quit

/*
 * The role an application is granted to call the extension's functions.
 * Roles are cluster-wide, so it is created only when missing and is left in
 * place by DROP EXTENSION (another database may still use it).
 */
DO $do$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles
                   WHERE rolname OPERATOR(pg_catalog.=) 'revenue_engine_user') THEN
        CREATE ROLE revenue_engine_user NOLOGIN;
    END IF;
END
$do$;

REVOKE ALL ON SCHEMA revenue_engine FROM PUBLIC;
GRANT USAGE ON SCHEMA revenue_engine TO revenue_engine_user;

-- The tenant of the current session: revenue_engine.tenant, 'default' unless set.
CREATE FUNCTION revenue_engine.current_tenant()
RETURNS text
LANGUAGE C STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 're_current_tenant';
COMMENT ON FUNCTION revenue_engine.current_tenant() IS
    'the tenant of this session (setting revenue_engine.tenant), ''default'' unless set';
-- now(), or revenue_engine.clock_override when a test or demo sets it.
CREATE FUNCTION revenue_engine.clock_now()
RETURNS timestamptz
LANGUAGE C STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 're_clock_now_sql';

REVOKE ALL ON FUNCTION revenue_engine.current_tenant() FROM PUBLIC;
REVOKE ALL ON FUNCTION revenue_engine.clock_now() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION revenue_engine.clock_now() TO revenue_engine_user;
GRANT EXECUTE ON FUNCTION revenue_engine.current_tenant() TO revenue_engine_user;
