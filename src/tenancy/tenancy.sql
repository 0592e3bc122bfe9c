/*
 * tenancy: tenants isolated by row level security, and roles bound to a
 * tenant.  Runs after every module that creates tables or views (before
 * worker.sql only), so that it covers them all in one place:
 *
 * - every table with a tenant_id column gets row level security, enabled
 *   and forced, with one policy: a row is visible and writable when its
 *   tenant_id is revenue_engine.current_tenant().  It applies to every role
 *   that does not bypass row level security (superusers and BYPASSRLS roles
 *   do), the owner's own queries included; the extension's C code runs its
 *   statements in the owner scope (re_enter_owner), which PostgreSQL exempts
 *   like its own foreign key checks, and names the tenant in every key;
 * - a view over tenant tables either runs as the invoker (the policies
 *   apply) or runs as its owner, filters on current_tenant() and is a
 *   security barrier (no function of the reader sees the rows filtered out);
 *   installing a view that does neither fails here;
 * - current_tenant() is the tenant of the setting revenue_engine.tenant,
 *   unless the session's roles are bound to one (bind_role): then it is that
 *   tenant, and a setting naming another tenant is an error (42501).
 */

-- Roles bound to a tenant: written by bind_role() and unbind_role(), read by the C code.
CREATE TABLE revenue_engine.role_tenants (
    role     regrole     NOT NULL PRIMARY KEY,
    tenant   text        NOT NULL,
    bound_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE revenue_engine.role_tenants IS
    'roles bound to a tenant: their calls act for it whatever revenue_engine.tenant says; owner only';
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.role_tenants', '');

-- Every backend caches bindings; a change resets the caches (relcache invalidation).
CREATE FUNCTION revenue_engine.role_tenants_changed()
RETURNS trigger
LANGUAGE C
AS 'MODULE_PATHNAME', 're_role_tenants_changed';
CREATE TRIGGER role_tenants_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON revenue_engine.role_tenants
    FOR EACH STATEMENT EXECUTE FUNCTION revenue_engine.role_tenants_changed();

-- A tenant name as revenue_engine.tenant accepts it (1 to 63 bytes, no control characters), or 22023.
CREATE FUNCTION revenue_engine.check_tenant(tenant text)
RETURNS text
LANGUAGE C IMMUTABLE
AS 'MODULE_PATHNAME', 're_check_tenant';

CREATE FUNCTION revenue_engine.bind_role(role regrole, tenant text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r pg_roles;
BEGIN
    IF bind_role.role IS NULL THEN
        RAISE EXCEPTION 'role must not be null' USING ERRCODE = '22004';
    END IF;
    PERFORM revenue_engine.check_tenant(bind_role.tenant);
    SELECT * INTO r FROM pg_roles WHERE oid = bind_role.role;
    IF r.rolsuper OR r.rolbypassrls THEN
        RAISE EXCEPTION 'role "%" bypasses row level security and cannot be bound to a tenant', r.rolname
            USING ERRCODE = '22023',
                  HINT = 'Bind the role the application connects as: neither a superuser nor BYPASSRLS.';
    END IF;
    IF bind_role.role = (SELECT n.nspowner FROM pg_namespace n WHERE n.nspname = 'revenue_engine') THEN
        RAISE EXCEPTION 'role "%" owns the extension and cannot be bound to a tenant', r.rolname
            USING ERRCODE = '22023',
                  HINT = 'Bind the role the application connects as.';
    END IF;
    INSERT INTO revenue_engine.role_tenants AS b (role, tenant)
    VALUES (bind_role.role, bind_role.tenant)
    ON CONFLICT ON CONSTRAINT role_tenants_pkey DO UPDATE
       SET tenant = excluded.tenant, bound_at = excluded.bound_at;
END
$fn$;
COMMENT ON FUNCTION revenue_engine.bind_role(regrole, text) IS
    'bind a role to a tenant: a session logged in as it, or SET ROLE to it, acts for that tenant only';

CREATE FUNCTION revenue_engine.unbind_role(role regrole)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF unbind_role.role IS NULL THEN
        RAISE EXCEPTION 'role must not be null' USING ERRCODE = '22004';
    END IF;
    DELETE FROM revenue_engine.role_tenants b WHERE b.role = unbind_role.role;
    RETURN FOUND;
END
$fn$;
COMMENT ON FUNCTION revenue_engine.unbind_role(regrole) IS
    'remove a role''s binding (true if it had one): it acts for the tenant of revenue_engine.tenant again';

-- True in the delivery workers only; IMMUTABLE so that plans fold it (see tenancy.c).
CREATE FUNCTION revenue_engine.is_delivery_worker()
RETURNS boolean
LANGUAGE C IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 're_is_delivery_worker';

-- A view whose tables the application reads anyway: as the invoker, the policies apply.
ALTER VIEW revenue_engine.user_lifetime_stats SET (security_invoker = true);

/*
 * Every relation with tenant rows.  A table gets row level security, enabled
 * and forced, and one policy; the tenant is a subquery so that it is computed
 * once per statement (an initplan), not once per row, and a scan can look it
 * up in the keys that lead with it; the delivery workers see every tenant.
 * A view that does not run as its invoker must filter on current_tenant()
 * itself, and becomes a security barrier.
 */
DO $do$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT c.oid::regclass AS rel, c.relkind,
               coalesce('security_invoker=true' OPERATOR(pg_catalog.=) ANY (c.reloptions), false) AS invoker
          FROM pg_catalog.pg_class c
          JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) c.oid
         WHERE c.relnamespace OPERATOR(pg_catalog.=) 'revenue_engine'::regnamespace
           AND c.relkind OPERATOR(pg_catalog.=) ANY (ARRAY['r', 'p', 'v', 'm']::"char"[])
           AND a.attname OPERATOR(pg_catalog.=) 'tenant_id' AND NOT a.attisdropped
         ORDER BY c.relname
    LOOP
        IF r.relkind OPERATOR(pg_catalog.=) ANY (ARRAY['r', 'p']::"char"[]) THEN
            EXECUTE pg_catalog.format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY', r.rel);
            EXECUTE pg_catalog.format(
                'CREATE POLICY tenant_isolation ON %s'
                ' USING (tenant_id OPERATOR(pg_catalog.=) (SELECT revenue_engine.current_tenant())'
                '        OR revenue_engine.is_delivery_worker())', r.rel);
        ELSIF r.relkind OPERATOR(pg_catalog.=) 'm' THEN
            RAISE EXCEPTION 'materialized view % holds tenant rows, which row level security cannot filter', r.rel;
        ELSIF NOT r.invoker THEN
            IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_rewrite w
                             JOIN pg_catalog.pg_depend d
                               ON d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_rewrite'::regclass
                              AND d.objid OPERATOR(pg_catalog.=) w.oid
                            WHERE w.ev_class OPERATOR(pg_catalog.=) r.rel
                              AND d.refobjid OPERATOR(pg_catalog.=) 'revenue_engine.current_tenant()'::regprocedure) THEN
                RAISE EXCEPTION 'view % shows tenant rows but does not filter them on revenue_engine.current_tenant()', r.rel
                    USING HINT = 'Add WHERE tenant_id = revenue_engine.current_tenant(), or make it security_invoker if the application may read its tables.';
            END IF;
            EXECUTE pg_catalog.format('ALTER VIEW %s SET (security_barrier = true)', r.rel);
        END IF;
    END LOOP;
END
$do$;

REVOKE ALL ON revenue_engine.role_tenants FROM PUBLIC;
REVOKE ALL ON FUNCTION revenue_engine.role_tenants_changed() FROM PUBLIC;
REVOKE ALL ON FUNCTION revenue_engine.check_tenant(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION revenue_engine.bind_role(regrole, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION revenue_engine.unbind_role(regrole) FROM PUBLIC;
REVOKE ALL ON FUNCTION revenue_engine.is_delivery_worker() FROM PUBLIC;
-- Planning a query of a tenant table evaluates it, as the one who queries.
GRANT EXECUTE ON FUNCTION revenue_engine.is_delivery_worker() TO revenue_engine_user;
