/*
 * Tenant forms: for every function the application calls on tenant rows, an
 * overload of the same name whose first argument is "tenant text", followed
 * by the plain form's arguments, such as
 *
 *     revenue_engine.track_daily_usage(tenant text, user_id uuid,
 *         usage_type text, count integer, usage_date date)
 *
 * The tenant argument alone decides the tenant of everything the call reads
 * and writes, so a Citus cluster can distribute the function by it
 * (create_distributed_function(..., distribution_arg_name => 'tenant')) and
 * run the call on the node that holds the tenant.  Rules (re_tenant_form in
 * tenancy.c, one C function for all of them):
 *
 * - the tenant is checked like the setting revenue_engine.tenant (22023);
 * - a session whose roles are bound to a tenant may name only its own
 *   tenant; another is an error (42501) naming both, never replaced;
 * - an unbound session acts for the named tenant for this call only; the
 *   setting is neither read nor changed, and nothing remains after the call,
 *   however it ends;
 * - the plain form runs unchanged (its SECURITY DEFINER, search_path and
 *   checks), and EXECUTE on it is required too.
 *
 * A tenant form has no defaults: every argument is required.  With defaults
 * it would capture calls of the plain form: a call with untyped literals
 * such as track_daily_usage('<uuid>', 'reply', '2') would match both with
 * three arguments, and PostgreSQL prefers the string category (text) for an
 * untyped literal, so 'tenant text' would win and the uuid become the tenant.
 * Without defaults, a tenant form takes exactly one argument more than the
 * plain form's full list, so a call resolves as before whatever its notation.
 *
 * The forms are generated from the list below, with the plain form's argument
 * names and types (OUT arguments included), result, volatility and parallel
 * safety, and granted to revenue_engine_user when the plain form is.  Runs
 * after every module (and tenancy.sql's grants).
 */
DO $do$
DECLARE
    plain  regprocedure;
    p      pg_catalog.pg_proc;
    lib    text;
    args   text;
    result text;
    tenant_form text;
BEGIN
    SELECT c.probin INTO STRICT lib FROM pg_catalog.pg_proc c
     WHERE c.oid OPERATOR(pg_catalog.=) 'revenue_engine.check_tenant(text)'::pg_catalog.regprocedure;
    FOREACH plain IN ARRAY ARRAY[
        -- usage
        'revenue_engine.track_daily_usage(uuid, text, integer, date)',
        'revenue_engine.set_user_profile(uuid, text, jsonb)',
        'revenue_engine.backfill_usage(text, boolean)',
        -- events and their delivery
        'revenue_engine.enqueue_event(uuid, text, jsonb)',
        'revenue_engine.redrive(text, timestamptz, timestamptz)',
        -- messaging and blasts
        'revenue_engine.enqueue_send(text, jsonb, text, timestamptz, uuid, jsonb)',
        'revenue_engine.redrive_sends(text, timestamptz, timestamptz)',
        'revenue_engine.create_blast(text, text, jsonb, text, text, jsonb, jsonb, timestamptz, integer, text)',
        'revenue_engine.record_message_status(text, text, timestamptz, text, jsonb)',
        'revenue_engine.record_inbound_message(text, timestamptz, text, jsonb)',
        'revenue_engine.mark_closed(text, numeric, timestamptz, bigint, jsonb)',
        'revenue_engine.ingest_status_webhook(text, jsonb, text)',
        'revenue_engine.funnel_by_tag(text, date, date)',
        'revenue_engine.blast_stage_times(bigint)',
        -- campaigns: contacts and templates
        'revenue_engine.upsert_contact(text, text, text, text, text, jsonb, text[], uuid, text)',
        'revenue_engine.tag_contact(text, text)',
        'revenue_engine.untag_contact(text, text)',
        'revenue_engine.set_consent(text, text, text, boolean, text)',
        'revenue_engine.create_template(text, text, text, jsonb, text)',
        'revenue_engine.render_template(text, text, jsonb, text)',
        -- campaigns: definitions
        'revenue_engine.create_campaign(text, text, jsonb, jsonb)',
        'revenue_engine.update_campaign(text, jsonb, jsonb, text)',
        'revenue_engine.activate_campaign(text)',
        'revenue_engine.pause_campaign(text)',
        'revenue_engine.archive_campaign(text)',
        'revenue_engine.clone_campaign(text, text)',
        'revenue_engine.campaign_definition(text, integer)',
        'revenue_engine.set_holidays(date[])',
        'revenue_engine.add_holiday(date, text)',
        'revenue_engine.remove_holiday(date)',
        'revenue_engine.list_holidays(date)',
        -- campaigns: enrollment
        'revenue_engine.enroll(text, text, jsonb, timestamptz)',
        'revenue_engine.exit_enrollment(text, text, text)'
    ]::pg_catalog.regprocedure[] LOOP
        SELECT * INTO STRICT p FROM pg_catalog.pg_proc c WHERE c.oid OPERATOR(pg_catalog.=) plain;
        -- every argument but TABLE columns, which the result names, without defaults
        SELECT pg_catalog.string_agg(
                   CASE a.mode WHEN 'o' THEN 'OUT ' WHEN 'b' THEN 'INOUT ' WHEN 'v' THEN 'VARIADIC ' ELSE '' END
                   OPERATOR(pg_catalog.||) pg_catalog.quote_ident(a.name) OPERATOR(pg_catalog.||) ' '
                   OPERATOR(pg_catalog.||) pg_catalog.format_type(a.typ, NULL), ', ' ORDER BY a.n)
          INTO args
          FROM ROWS FROM (pg_catalog.unnest(coalesce(p.proallargtypes, p.proargtypes::pg_catalog.oid[])),
                          pg_catalog.unnest(coalesce(p.proargmodes,
                                                     pg_catalog.array_fill('i'::"char", ARRAY[p.pronargs]))),
                          pg_catalog.unnest(p.proargnames)) WITH ORDINALITY AS a(typ, mode, name, n)
         WHERE a.mode OPERATOR(pg_catalog.<>) 't';
        result := CASE WHEN 't' OPERATOR(pg_catalog.=) ANY (p.proargmodes) THEN pg_catalog.pg_get_function_result(plain)
                       ELSE CASE WHEN p.proretset THEN 'SETOF ' ELSE '' END
                            OPERATOR(pg_catalog.||) pg_catalog.format_type(p.prorettype, NULL) END;
        EXECUTE pg_catalog.format(
            'CREATE FUNCTION revenue_engine.%I(tenant text, %s) RETURNS %s LANGUAGE C %s PARALLEL %s AS %L, %L',
            p.proname, args, result,
            CASE p.provolatile WHEN 'i' THEN 'IMMUTABLE' WHEN 's' THEN 'STABLE' ELSE 'VOLATILE' END,
            CASE p.proparallel WHEN 's' THEN 'SAFE' WHEN 'r' THEN 'RESTRICTED' ELSE 'UNSAFE' END,
            lib, 're_tenant_form');
        tenant_form := pg_catalog.format('revenue_engine.%I(text, %s)', p.proname,
                                         pg_catalog.oidvectortypes(p.proargtypes));
        EXECUTE pg_catalog.format('COMMENT ON FUNCTION %s IS %L', tenant_form,
                                  'tenant form of ' OPERATOR(pg_catalog.||) plain::text
                                  OPERATOR(pg_catalog.||) ': the same call for the tenant named first (see README, Tenants)');
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', tenant_form);
        IF pg_catalog.has_function_privilege('revenue_engine_user', plain, 'EXECUTE') THEN
            EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO revenue_engine_user', tenant_form);
        END IF;
    END LOOP;
END
$do$;
