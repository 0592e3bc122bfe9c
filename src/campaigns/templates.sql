-- campaigns: templates (see schema.sql for the module's files)
/*
 * Versioned message templates (README "Templates"; the syntax and the
 * rendering are in template.c).  A version is never changed: creating a
 * template under an existing name adds a version, and sends name the version
 * they used.  A fallback names another template of the tenant, whose latest
 * version is used at render time; fallback loops are refused when a version
 * is created (and render_for_send stops at one, should one be written by
 * hand).
 */

-- The variables of a version and those without a default; 22023 for bad syntax.  Internal.
CREATE FUNCTION revenue_engine.template_variables(
    body text, cta_url text, whatsapp jsonb,
    OUT variables text[], OUT required text[])
RETURNS record
LANGUAGE C IMMUTABLE
AS 'MODULE_PATHNAME', 're_template_variables';

CREATE FUNCTION revenue_engine.create_template(
    name     text,
    body     text,
    cta_url  text  DEFAULT NULL,
    whatsapp jsonb DEFAULT NULL,
    fallback text  DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    tenant text := revenue_engine.current_tenant();
    ts     timestamptz := now();
    vars   text[];
    req    text[];
    chain  text[];
    fb     text;
    tid    bigint;
    ver    integer;
BEGIN
    IF create_template.name IS NULL OR create_template.body IS NULL THEN
        RAISE EXCEPTION 'name and body must not be null' USING ERRCODE = '22004';
    END IF;
    PERFORM revenue_engine.check_name('template name', create_template.name);
    SELECT t.variables, t.required INTO vars, req
      FROM revenue_engine.template_variables(create_template.body, create_template.cta_url,
                                             create_template.whatsapp) t;

    /*
     * One template change of a tenant at a time: the fallback loop check
     * below must see every other change that could close a loop.
     */
    PERFORM pg_catalog.pg_advisory_xact_lock(1380274256, pg_catalog.hashtext(tenant));  -- class 0x52455450, "RETP"

    IF create_template.fallback IS NOT NULL THEN
        IF create_template.fallback = create_template.name THEN
            RAISE EXCEPTION 'template "%" cannot be its own fallback', create_template.name
                USING ERRCODE = '22023';
        END IF;
        -- follow the chain of latest versions; it was loop-free before this version
        chain := ARRAY[create_template.name];
        fb := create_template.fallback;
        WHILE fb IS NOT NULL LOOP
            IF fb = ANY (chain) THEN
                RAISE EXCEPTION 'fallback loop: % -> %', pg_catalog.array_to_string(chain, ' -> '), fb
                    USING ERRCODE = '22023',
                          HINT = 'A fallback chain must end in a template without a fallback.';
            END IF;
            chain := chain || fb;
            SELECT v.fallback INTO fb
              FROM revenue_engine.templates t
              JOIN revenue_engine.template_versions v
                ON v.tenant_id = t.tenant_id AND v.template_id = t.id AND v.version = t.latest_version
             WHERE t.tenant_id = tenant AND v.tenant_id = tenant AND t.name = fb;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'fallback template "%" does not exist', create_template.fallback
                    USING ERRCODE = '42704', HINT = 'Create the fallback template first.';
            END IF;
        END LOOP;
    END IF;

    UPDATE revenue_engine.templates t
       SET latest_version = t.latest_version + 1, updated_at = ts
     WHERE t.tenant_id = tenant AND t.name = create_template.name
    RETURNING t.id, t.latest_version INTO tid, ver;
    IF tid IS NULL THEN
        INSERT INTO revenue_engine.templates AS t (tenant_id, name, latest_version, created_at, updated_at)
        VALUES (tenant, create_template.name, 1, ts, ts)
        RETURNING t.id, t.latest_version INTO tid, ver;
    END IF;
    INSERT INTO revenue_engine.template_versions
           (tenant_id, template_id, version, body, cta_url, whatsapp, fallback, variables, required, created_at)
    VALUES (tenant, tid, ver, create_template.body, create_template.cta_url, create_template.whatsapp,
            create_template.fallback, vars, req, ts);
    RETURN ver;
END
$fn$;
COMMENT ON FUNCTION revenue_engine.create_template(text, text, text, jsonb, text) IS
    'create a template, or a new version of an existing one: body with {{variables|defaults}}, call-to-action URL, WhatsApp form, fallback template; returns the version';

-- Render for a send: the runner's call, once per send (C, saved plans).  Internal.
CREATE FUNCTION revenue_engine.render_for_send(
    tenant           text,
    template         text,
    template_version integer,
    contact_id       bigint,
    context          jsonb,
    form             text)
RETURNS jsonb
LANGUAGE C STABLE
AS 'MODULE_PATHNAME', 're_render_for_send_sql';
COMMENT ON FUNCTION revenue_engine.render_for_send(text, text, integer, bigint, jsonb, text) IS
    'a template version (NULL: the latest) rendered for a contact and context in form text or whatsapp_template, with fallbacks: what a send would carry';

-- What a send of the template's latest version to the contact would carry.
CREATE FUNCTION revenue_engine.render_template(
    template text,
    contact  text,
    context  jsonb DEFAULT '{}',
    form     text  DEFAULT 'text')
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    tenant text := revenue_engine.current_tenant();
BEGIN
    IF render_template.template IS NULL OR render_template.context IS NULL OR render_template.form IS NULL THEN
        RAISE EXCEPTION 'template, context and form must not be null' USING ERRCODE = '22004';
    END IF;
    RETURN revenue_engine.render_for_send(tenant, render_template.template, NULL,
                                          revenue_engine.contact_id_of(tenant, render_template.contact),
                                          render_template.context, render_template.form);
END
$fn$;
COMMENT ON FUNCTION revenue_engine.render_template(text, text, jsonb, text) IS
    'what a send of the template''s latest version to the contact (its reference) would carry, with fallbacks and the reason of a skip';

REVOKE ALL ON FUNCTION
    revenue_engine.template_variables(text, text, jsonb),
    revenue_engine.create_template(text, text, text, jsonb, text),
    revenue_engine.render_for_send(text, text, integer, bigint, jsonb, text),
    revenue_engine.render_template(text, text, jsonb, text)
  FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    revenue_engine.create_template(text, text, text, jsonb, text),
    revenue_engine.render_template(text, text, jsonb, text)
  TO revenue_engine_user;
