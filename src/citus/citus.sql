/*
 * citus: revenue_engine.distribute() turns a database on a Citus coordinator
 * into a distributed one.  Nothing here runs unless it is called: a database
 * without Citus never notices this file.  See README, "Citus".
 */

CREATE FUNCTION revenue_engine.distribute()
RETURNS TABLE (object text, distributed_as text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r record;
    todo regclass[];
    left_over regclass[];
    is_coordinator boolean;
    anchor CONSTANT text := 'revenue_engine.user_profiles';
    lock_list text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'citus') THEN
        RAISE EXCEPTION 'revenue_engine.distribute() needs the citus extension in database "%"', pg_catalog.current_database()
            USING ERRCODE = '0A000',
                  HINT = 'CREATE EXTENSION citus on the coordinator, add the worker nodes, then call it again.';
    END IF;
    EXECUTE 'SELECT pg_catalog.citus_is_coordinator()' INTO is_coordinator;
    IF NOT is_coordinator THEN
        RAISE EXCEPTION 'revenue_engine.distribute() runs on the Citus coordinator, not on worker node %',
            pg_catalog.inet_server_addr()
            USING ERRCODE = '0A000';
    END IF;
    /*
     * Every table still to distribute locked first, all at once and without
     * waiting (retried a moment later while another transaction holds one):
     * the delivery worker, whose loop turns every second (campaign steps),
     * would otherwise hold one table while waiting for another this
     * transaction had taken, and deadlock with it.  Once all are held, the
     * worker's next statements wait for the commit.
     */
    SELECT pg_catalog.string_agg(c.oid::regclass::text, ', ' ORDER BY c.oid)
      INTO lock_list
      FROM pg_catalog.pg_class c
     WHERE c.relnamespace OPERATOR(pg_catalog.=) 'revenue_engine'::regnamespace
       AND c.relkind OPERATOR(pg_catalog.=) 'r'
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition p
                        WHERE p.logicalrelid OPERATOR(pg_catalog.=) c.oid);
    IF lock_list IS NOT NULL THEN
        FOR attempt IN 1..400 LOOP
            BEGIN
                EXECUTE 'LOCK TABLE ' OPERATOR(pg_catalog.||) lock_list OPERATOR(pg_catalog.||) ' IN ACCESS EXCLUSIVE MODE NOWAIT';
                EXIT;
            EXCEPTION WHEN lock_not_available THEN
                IF attempt OPERATOR(pg_catalog.=) 400 THEN
                    RAISE EXCEPTION 'revenue_engine.distribute() could not lock the tables for 20 seconds'
                        USING ERRCODE = '55P03',
                              HINT = 'Another transaction holds one of them: call it again when it has ended.';
                END IF;
                PERFORM pg_catalog.pg_sleep(0.05);
            END;
        END LOOP;
    END IF;
    -- the tenant tables carry triggers (the funnel's, the outcome of sends)
    PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', 'on', true);
    PERFORM pg_catalog.set_config('citus.multi_shard_modify_mode', 'sequential', true);

    /*
     * The funnel's bulk triggers read transition tables, which do not exist
     * on a shard: per-row triggers (the same C function) count inserts and
     * deletes instead, each into the blast_counters shard colocated with the
     * row's shard (src/blasts/funnel.c).
     */
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_trigger
                WHERE tgrelid OPERATOR(pg_catalog.=) 'revenue_engine.blast_recipients'::regclass
                  AND tgname OPERATOR(pg_catalog.=) 'blast_recipients_funnel_insert') THEN
        DROP TRIGGER blast_recipients_funnel_insert ON revenue_engine.blast_recipients;
        DROP TRIGGER blast_recipients_funnel_delete ON revenue_engine.blast_recipients;
        CREATE TRIGGER blast_recipients_funnel_insert_row
            AFTER INSERT ON revenue_engine.blast_recipients
            FOR EACH ROW EXECUTE FUNCTION revenue_engine.funnel_recipients_changed();
        CREATE TRIGGER blast_recipients_funnel_delete_row
            AFTER DELETE ON revenue_engine.blast_recipients
            FOR EACH ROW EXECUTE FUNCTION revenue_engine.funnel_recipients_changed();
        object := 'revenue_engine.blast_recipients'; distributed_as := 'funnel triggers per row';
        RETURN NEXT;
    END IF;

    -- configuration: a copy on every node
    FOR r IN
        SELECT c.oid::regclass AS rel
          FROM pg_catalog.pg_class c
         WHERE c.relnamespace OPERATOR(pg_catalog.=) 'revenue_engine'::regnamespace
           AND c.relkind OPERATOR(pg_catalog.=) 'r'
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                            WHERE a.attrelid OPERATOR(pg_catalog.=) c.oid
                              AND a.attname OPERATOR(pg_catalog.=) 'tenant_id' AND NOT a.attisdropped)
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition p
                            WHERE p.logicalrelid OPERATOR(pg_catalog.=) c.oid)
         ORDER BY c.relname
    LOOP
        PERFORM pg_catalog.create_reference_table(r.rel);
        object := r.rel::text; distributed_as := 'reference table';
        RETURN NEXT;
    END LOOP;

    /*
     * Tenant tables: by tenant_id, colocated with user_profiles; a table
     * after the tables its foreign keys reference.  Row level security's
     * policy evaluates the tenant per row on a shard (Citus takes no subquery
     * in a policy of a distributed table).
     */
    SELECT pg_catalog.array_agg(c.oid::regclass ORDER BY c.relname OPERATOR(pg_catalog.<>) 'user_profiles', c.relname)
      INTO todo
      FROM pg_catalog.pg_class c
     WHERE c.relnamespace OPERATOR(pg_catalog.=) 'revenue_engine'::regnamespace
       AND c.relkind OPERATOR(pg_catalog.=) 'r'
       AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                    WHERE a.attrelid OPERATOR(pg_catalog.=) c.oid
                      AND a.attname OPERATOR(pg_catalog.=) 'tenant_id' AND NOT a.attisdropped)
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition p
                        WHERE p.logicalrelid OPERATOR(pg_catalog.=) c.oid);
    WHILE pg_catalog.cardinality(todo) OPERATOR(pg_catalog.>) 0 LOOP
        left_over := '{}';
        FOR r IN SELECT t.rel, t.i FROM pg_catalog.unnest(todo) WITH ORDINALITY AS t(rel, i) ORDER BY t.i LOOP
            IF EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k
                        WHERE k.conrelid OPERATOR(pg_catalog.=) r.rel AND k.contype OPERATOR(pg_catalog.=) 'f'
                          AND k.confrelid OPERATOR(pg_catalog.<>) r.rel
                          AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition p
                                           WHERE p.logicalrelid OPERATOR(pg_catalog.=) k.confrelid)) THEN
                left_over := left_over OPERATOR(pg_catalog.||) r.rel;
                CONTINUE;
            END IF;
            IF EXISTS (SELECT 1 FROM pg_catalog.pg_policy
                        WHERE polrelid OPERATOR(pg_catalog.=) r.rel
                          AND polname OPERATOR(pg_catalog.=) 'tenant_isolation') THEN
                EXECUTE pg_catalog.format('DROP POLICY tenant_isolation ON %s', r.rel);
                EXECUTE pg_catalog.format(
                    'CREATE POLICY tenant_isolation ON %s'
                    ' USING (tenant_id OPERATOR(pg_catalog.=) revenue_engine.current_tenant()'
                    '        OR revenue_engine.is_delivery_worker())', r.rel);
            END IF;
            IF r.rel OPERATOR(pg_catalog.=) anchor::regclass THEN
                PERFORM pg_catalog.create_distributed_table(r.rel, 'tenant_id');
            ELSE
                PERFORM pg_catalog.create_distributed_table(r.rel, 'tenant_id', colocate_with => anchor);
            END IF;
            object := r.rel::text; distributed_as := 'distributed by tenant_id';
            RETURN NEXT;
        END LOOP;
        IF pg_catalog.cardinality(left_over) OPERATOR(pg_catalog.=) pg_catalog.cardinality(todo) THEN
            RAISE EXCEPTION 'tables % reference tables that are not distributed', left_over
                USING ERRCODE = '55000';
        END IF;
        todo := left_over;
    END LOOP;

    /*
     * Views that filter on the session's tenant: as a subquery, which the
     * coordinator evaluates once (a distributed subplan) and sends as a
     * value; a bare call would be shipped with the query and evaluated on
     * the workers, where the session's revenue_engine.tenant is not (an
     * error there, src/tenancy/tenancy.c).  Their options are kept.
     */
    FOR r IN
        SELECT c.oid::regclass AS rel, pg_catalog.pg_get_viewdef(c.oid) AS def, c.reloptions AS opts
          FROM pg_catalog.pg_class c
         WHERE c.relnamespace OPERATOR(pg_catalog.=) 'revenue_engine'::regnamespace
           AND c.relkind OPERATOR(pg_catalog.=) 'v'
           AND pg_catalog.strpos(pg_catalog.pg_get_viewdef(c.oid), 'revenue_engine.current_tenant()') OPERATOR(pg_catalog.>) 0
           AND pg_catalog.strpos(pg_catalog.pg_get_viewdef(c.oid), 'SELECT revenue_engine.current_tenant()') OPERATOR(pg_catalog.=) 0
         ORDER BY c.relname
    LOOP
        EXECUTE pg_catalog.format('CREATE OR REPLACE VIEW %s AS %s', r.rel,
                    pg_catalog.replace(r.def, 'revenue_engine.current_tenant()',
                                       '(SELECT revenue_engine.current_tenant() AS current_tenant)'));
        IF r.opts IS NOT NULL THEN
            EXECUTE pg_catalog.format('ALTER VIEW %s SET (%s)', r.rel, pg_catalog.array_to_string(r.opts, ', '));
        END IF;
        object := r.rel::text; distributed_as := 'view: tenant filter evaluated on the coordinator';
        RETURN NEXT;
    END LOOP;

    /*
     * A worker node inserts too (a distributed call, the delivery worker's
     * attempt log): each node's identity sequences get a range of their own,
     * as Citus gives the tables it creates there (the extension created
     * these itself on every node).  A node added later needs distribute()
     * again.
     */
    FOR r IN
        SELECT DISTINCT a.attrelid::regclass AS rel
          FROM pg_catalog.pg_attribute a
          JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) a.attrelid
         WHERE c.relnamespace OPERATOR(pg_catalog.=) 'revenue_engine'::regnamespace
           AND c.relkind OPERATOR(pg_catalog.=) 'r'
           AND a.attidentity OPERATOR(pg_catalog.<>) '' AND NOT a.attisdropped
    LOOP
        PERFORM 1 FROM pg_catalog.run_command_on_workers(pg_catalog.format(
                    'SELECT pg_catalog.worker_adjust_identity_column_seq_ranges(%L::regclass)', r.rel::text)) w
          WHERE NOT w.success;
        IF FOUND THEN
            RAISE EXCEPTION 'could not give the identity sequence of % a range of its own on every worker node', r.rel
                USING ERRCODE = '55000';
        END IF;
    END LOOP;

    /*
     * The tenant-first forms of the app-facing functions (first argument
     * "tenant text"): a call runs on the node that holds its tenant.  The
     * forms without it are left on the coordinator, where the session's
     * revenue_engine.tenant is: their statements are routed by tenant_id.
     */
    FOR r IN
        SELECT p.oid::regprocedure AS fn
          FROM pg_catalog.pg_proc p
         WHERE p.pronamespace OPERATOR(pg_catalog.=) 'revenue_engine'::regnamespace
           AND p.pronargs OPERATOR(pg_catalog.>) 0
           AND p.proargtypes[0] OPERATOR(pg_catalog.=) 'pg_catalog.text'::regtype
           AND p.proargnames[1] OPERATOR(pg_catalog.=) 'tenant'
           AND p.prokind OPERATOR(pg_catalog.=) 'f'
           AND pg_catalog.has_function_privilege('revenue_engine_user', p.oid, 'EXECUTE')
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_object o
                            WHERE o.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::regclass
                              AND o.objid OPERATOR(pg_catalog.=) p.oid
                              AND o.distribution_argument_index IS NOT NULL)
         ORDER BY 1::text
    LOOP
        PERFORM pg_catalog.create_distributed_function(r.fn, 'tenant', colocate_with => anchor);
        object := r.fn::text; distributed_as := 'function distributed by tenant';
        RETURN NEXT;
    END LOOP;
END
$fn$;
COMMENT ON FUNCTION revenue_engine.distribute() IS
    'on a Citus coordinator: configuration tables as reference tables, tenant tables distributed by tenant_id and colocated, tenant-first functions distributed by their tenant';
REVOKE ALL ON FUNCTION revenue_engine.distribute() FROM PUBLIC;
