-- campaigns: contacts (see schema.sql for the module's files)
/*
 * Contacts, their tags and consent, and the time of their last inbound
 * message (README "Contacts and consent").
 *
 * The application names a contact by its own reference (external_ref); the
 * internal functions (contact_id_of, consent_allows, note_inbound) take the
 * tenant and the contact's id and are granted to nobody.
 *
 * Rows are written with plain INSERT and UPDATE statements, so that the
 * AFTER triggers that other parts put on these tables (enrollment on a new
 * contact or an added tag, stops on an opt-out) see every change with its
 * OLD and NEW row.  An upsert is "UPDATE, else INSERT ... ON CONFLICT DO
 * NOTHING, else UPDATE again" rather than INSERT ... ON CONFLICT DO UPDATE:
 * the latter fires BEFORE INSERT triggers on rows that end up updated.
 *
 * Tags: 1 to 63 characters, no control characters, no leading or trailing
 * white space; case-sensitive; stored sorted and without duplicates.
 */

-- Why a tag is not acceptable, or NULL.
CREATE FUNCTION revenue_engine.tag_problem(tag text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT CASE
             WHEN tag IS NULL THEN 'is null'
             WHEN tag = '' THEN 'is empty'
             WHEN pg_catalog.char_length(tag) > 63 THEN 'is longer than 63 characters'
             WHEN tag ~ '[[:cntrl:]]' THEN 'contains a control character'
             WHEN tag <> pg_catalog.btrim(tag, E' \t\n\r') THEN 'begins or ends with white space'
           END
$fn$;

-- The tags checked (22004/22023 naming the bad one), sorted and without duplicates.
CREATE FUNCTION revenue_engine.clean_tags(tags text[])
RETURNS text[]
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    t       text;
    problem text;
BEGIN
    IF tags IS NULL THEN
        RETURN NULL;
    END IF;
    FOREACH t IN ARRAY tags LOOP
        problem := revenue_engine.tag_problem(t);
        IF t IS NULL THEN
            RAISE EXCEPTION 'tags must not contain null' USING ERRCODE = '22004';
        ELSIF problem IS NOT NULL THEN
            RAISE EXCEPTION 'tag "%" %', t, problem
                USING ERRCODE = '22023',
                      HINT = 'A tag has 1 to 63 characters, no control characters and no surrounding white space.';
        END IF;
    END LOOP;
    RETURN ARRAY(SELECT u.t FROM pg_catalog.unnest(tags) AS u(t) GROUP BY u.t ORDER BY u.t COLLATE "C");
END
$fn$;

CREATE FUNCTION revenue_engine.check_external_ref(external_ref text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF external_ref IS NULL THEN
        RAISE EXCEPTION 'contact reference (external_ref) must not be null' USING ERRCODE = '22004';
    END IF;
    IF external_ref = '' OR pg_catalog.octet_length(external_ref) > 255 OR external_ref ~ '[[:cntrl:]]' THEN
        RAISE EXCEPTION 'contact reference "%" is not valid', external_ref
            USING ERRCODE = '22023',
                  HINT = 'A contact reference has 1 to 255 bytes and no control characters.';
    END IF;
    RETURN external_ref;
END
$fn$;

/*
 * Create or update a contact.  NULL arguments keep the stored value (on
 * creation: none); attributes are merged into the stored ones (||); tags,
 * when given, replace the contact's tags.  Returns the contact's id.
 */
CREATE FUNCTION revenue_engine.upsert_contact(
    external_ref text,
    phone        text  DEFAULT NULL,
    email        text  DEFAULT NULL,
    name         text  DEFAULT NULL,
    timezone     text  DEFAULT NULL,
    attributes   jsonb DEFAULT NULL,
    tags         text[] DEFAULT NULL,
    user_id      uuid  DEFAULT NULL,
    source       text  DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    tenant text := revenue_engine.current_tenant();
    ts     timestamptz := now();
    ref    text := revenue_engine.check_external_ref(upsert_contact.external_ref);
    p      text;
    e      text := pg_catalog.btrim(upsert_contact.email);
    n      text := pg_catalog.btrim(upsert_contact.name);
    tz     text;
    attrs  jsonb := upsert_contact.attributes;
    tg     text[] := revenue_engine.clean_tags(upsert_contact.tags);
    src    text := upsert_contact.source;
    uid    uuid := upsert_contact.user_id;
    cid    bigint;
BEGIN
    -- everything checked before anything is written
    IF upsert_contact.phone IS NOT NULL THEN
        p := revenue_engine.normalize_phone(upsert_contact.phone);
    END IF;
    IF e IS NOT NULL AND (e !~ '^[^@[:space:][:cntrl:]]+@[^@[:space:][:cntrl:]]+$' OR pg_catalog.octet_length(e) > 254) THEN
        RAISE EXCEPTION 'e-mail address "%" is not valid', upsert_contact.email
            USING ERRCODE = '22023', HINT = 'Write it as local-part@domain, at most 254 bytes.';
    END IF;
    IF n IS NOT NULL AND (n = '' OR pg_catalog.char_length(n) > 200 OR n ~ '[[:cntrl:]]') THEN
        RAISE EXCEPTION 'contact name "%" is not valid', upsert_contact.name
            USING ERRCODE = '22023', HINT = 'A name has 1 to 200 characters and no control characters.';
    END IF;
    IF upsert_contact.timezone IS NOT NULL THEN
        tz := revenue_engine.canonical_timezone(upsert_contact.timezone);
    END IF;
    IF attrs IS NOT NULL AND pg_catalog.jsonb_typeof(attrs) <> 'object' THEN
        RAISE EXCEPTION 'attributes must be a JSON object, not %', pg_catalog.jsonb_typeof(attrs)
            USING ERRCODE = '22023', HINT = 'Pass attributes such as ''{"plan": "pro"}''.';
    END IF;

    -- update, else insert, else (a concurrent insert won) update
    LOOP
        IF tg IS NULL THEN
            UPDATE revenue_engine.contacts c
               SET phone = coalesce(p, c.phone), email = coalesce(e, c.email), name = coalesce(n, c.name),
                   timezone = coalesce(tz, c.timezone), attributes = c.attributes || coalesce(attrs, '{}'),
                   user_id = coalesce(uid, c.user_id), source = coalesce(src, c.source), updated_at = ts
             WHERE c.tenant_id = tenant AND c.external_ref = ref
            RETURNING c.id INTO cid;
        ELSE
            UPDATE revenue_engine.contacts c
               SET phone = coalesce(p, c.phone), email = coalesce(e, c.email), name = coalesce(n, c.name),
                   timezone = coalesce(tz, c.timezone), attributes = c.attributes || coalesce(attrs, '{}'),
                   tags = tg, user_id = coalesce(uid, c.user_id), source = coalesce(src, c.source),
                   updated_at = ts
             WHERE c.tenant_id = tenant AND c.external_ref = ref
            RETURNING c.id INTO cid;
        END IF;
        EXIT WHEN cid IS NOT NULL;
        INSERT INTO revenue_engine.contacts AS c
               (tenant_id, external_ref, user_id, phone, email, name, timezone, attributes, tags,
                source, created_at, updated_at)
        VALUES (tenant, ref, uid, p, e, n, tz, coalesce(attrs, '{}'), coalesce(tg, '{}'), src, ts, ts)
        ON CONFLICT ON CONSTRAINT contacts_tenant_id_external_ref_key DO NOTHING
        RETURNING c.id INTO cid;
        EXIT WHEN cid IS NOT NULL;
    END LOOP;
    RETURN cid;
END
$fn$;
COMMENT ON FUNCTION revenue_engine.upsert_contact(text, text, text, text, text, jsonb, text[], uuid, text) IS
    'create or update the contact with this reference: NULL keeps a value, attributes merge, tags replace; returns its id';

-- The id of the contact with this reference in tenant, or 42704.  Internal.
CREATE FUNCTION revenue_engine.contact_id_of(tenant text, external_ref text)
RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    cid bigint;
BEGIN
    IF contact_id_of.tenant IS NULL THEN
        RAISE EXCEPTION 'tenant must not be null' USING ERRCODE = '22004';
    END IF;
    IF contact_id_of.external_ref IS NULL THEN
        RAISE EXCEPTION 'contact reference (external_ref) must not be null' USING ERRCODE = '22004';
    END IF;
    SELECT c.id INTO cid FROM revenue_engine.contacts c
     WHERE c.tenant_id = contact_id_of.tenant AND c.external_ref = contact_id_of.external_ref;
    IF cid IS NULL THEN
        RAISE EXCEPTION 'contact "%" does not exist', contact_id_of.external_ref
            USING ERRCODE = '42704', HINT = 'Create it with revenue_engine.upsert_contact().';
    END IF;
    RETURN cid;
END
$fn$;

/*
 * Add a tag (true: added, false: the contact had it).  The UPDATE changes
 * contacts.tags, so an AFTER UPDATE OF tags trigger sees the tag added.
 */
CREATE FUNCTION revenue_engine.tag_contact(external_ref text, tag text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    tenant text := revenue_engine.current_tenant();
    ts     timestamptz := now();
    tg     text[];
    cid    bigint;
BEGIN
    IF tag_contact.tag IS NULL THEN
        RAISE EXCEPTION 'tag must not be null' USING ERRCODE = '22004';
    END IF;
    tg := revenue_engine.clean_tags(ARRAY[tag_contact.tag]);
    cid := revenue_engine.contact_id_of(tenant, tag_contact.external_ref);
    UPDATE revenue_engine.contacts c
       SET tags = ARRAY(SELECT u.t FROM pg_catalog.unnest(c.tags || tg) AS u(t) GROUP BY u.t ORDER BY u.t COLLATE "C"),
           updated_at = ts
     WHERE c.tenant_id = tenant AND c.id = cid AND NOT (c.tags @> tg);
    RETURN FOUND;
END
$fn$;
COMMENT ON FUNCTION revenue_engine.tag_contact(text, text) IS
    'add a tag to a contact: true when added, false when it had it';

CREATE FUNCTION revenue_engine.untag_contact(external_ref text, tag text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    tenant text := revenue_engine.current_tenant();
    ts     timestamptz := now();
    tg     text[];
    cid    bigint;
BEGIN
    IF untag_contact.tag IS NULL THEN
        RAISE EXCEPTION 'tag must not be null' USING ERRCODE = '22004';
    END IF;
    tg := revenue_engine.clean_tags(ARRAY[untag_contact.tag]);
    cid := revenue_engine.contact_id_of(tenant, untag_contact.external_ref);
    UPDATE revenue_engine.contacts c
       SET tags = pg_catalog.array_remove(c.tags, tg[1]), updated_at = ts
     WHERE c.tenant_id = tenant AND c.id = cid AND c.tags @> tg;
    RETURN FOUND;
END
$fn$;
COMMENT ON FUNCTION revenue_engine.untag_contact(text, text) IS
    'remove a tag from a contact: true when removed, false when it did not have it';

/*
 * Record a contact's consent (granted true) or refusal (false) for a channel
 * kind and purpose; true when it changed (a new row, or granted differs).
 * An existing row is updated (its triggers see the old and the new value),
 * else one is inserted.  (Returns boolean rather than void: a tenant form's
 * call-shape checks need a result.)
 */
CREATE FUNCTION revenue_engine.set_consent(
    external_ref text,
    channel_kind text,
    purpose      text,
    granted      boolean,
    source       text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    tenant  text := revenue_engine.current_tenant();
    ts      timestamptz := now();
    cid     bigint;
    before  boolean;
    done    boolean;
BEGIN
    IF set_consent.channel_kind IS NULL OR set_consent.purpose IS NULL OR set_consent.granted IS NULL THEN
        RAISE EXCEPTION 'channel_kind, purpose and granted must not be null' USING ERRCODE = '22004';
    END IF;
    IF set_consent.channel_kind NOT IN ('whatsapp', 'sms', 'email', 'push', 'webhook') THEN
        RAISE EXCEPTION 'channel kind "%" is not known', set_consent.channel_kind
            USING ERRCODE = '22023', HINT = 'Use whatsapp, sms, email, push or webhook.';
    END IF;
    IF set_consent.purpose NOT IN ('marketing', 'transactional') THEN
        RAISE EXCEPTION 'purpose "%" is not known', set_consent.purpose
            USING ERRCODE = '22023', HINT = 'Use marketing or transactional.';
    END IF;
    cid := revenue_engine.contact_id_of(tenant, set_consent.external_ref);
    LOOP
        -- the row locked first, so "before" is the value this update replaces
        SELECT k.granted INTO before FROM revenue_engine.contact_consents k
         WHERE k.tenant_id = tenant AND k.contact_id = cid
           AND k.channel_kind = set_consent.channel_kind AND k.purpose = set_consent.purpose
           FOR UPDATE;
        IF FOUND THEN
            UPDATE revenue_engine.contact_consents k
               SET granted = set_consent.granted, source = set_consent.source, updated_at = ts
             WHERE k.tenant_id = tenant AND k.contact_id = cid
               AND k.channel_kind = set_consent.channel_kind AND k.purpose = set_consent.purpose;
            RETURN before IS DISTINCT FROM set_consent.granted;
        END IF;
        INSERT INTO revenue_engine.contact_consents
               (tenant_id, contact_id, channel_kind, purpose, granted, source, updated_at)
        VALUES (tenant, cid, set_consent.channel_kind, set_consent.purpose, set_consent.granted,
                set_consent.source, ts)
        ON CONFLICT ON CONSTRAINT contact_consents_pkey DO NOTHING
        RETURNING true INTO done;
        IF done THEN
            RETURN true;
        END IF;
    END LOOP;
END
$fn$;
COMMENT ON FUNCTION revenue_engine.set_consent(text, text, text, boolean, text) IS
    'record a contact''s consent (granted) or refusal for a channel kind (whatsapp, sms, email, push, webhook) and purpose (marketing, transactional)';

/*
 * The consent rule, one place for every part: a row decides; without one,
 * marketing is refused (opt-in) and transactional allowed.  Internal.
 */
CREATE FUNCTION revenue_engine.consent_allows(tenant text, contact_id bigint, channel_kind text, purpose text)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT coalesce((SELECT k.granted FROM revenue_engine.contact_consents k
                      WHERE k.tenant_id = consent_allows.tenant AND k.contact_id = consent_allows.contact_id
                        AND k.channel_kind = consent_allows.channel_kind
                        AND k.purpose = consent_allows.purpose),
                    consent_allows.purpose = 'transactional')
$fn$;
COMMENT ON FUNCTION revenue_engine.consent_allows(text, bigint, text, text) IS
    'whether a contact may receive a message of this channel kind and purpose: its consent row, else transactional only';

/*
 * An inbound message from a contact on a channel at "at": the last inbound
 * time per channel only moves forward (messages may arrive out of order).
 * Internal.
 */
CREATE FUNCTION revenue_engine.note_inbound(tenant text, contact_id bigint, channel_id bigint, at timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF note_inbound.tenant IS NULL OR note_inbound.contact_id IS NULL
       OR note_inbound.channel_id IS NULL OR note_inbound.at IS NULL THEN
        RAISE EXCEPTION 'tenant, contact_id, channel_id and at must not be null' USING ERRCODE = '22004';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM revenue_engine.contacts c
                    WHERE c.tenant_id = note_inbound.tenant AND c.id = note_inbound.contact_id) THEN
        RAISE EXCEPTION 'contact % does not exist', note_inbound.contact_id USING ERRCODE = '42704';
    END IF;
    INSERT INTO revenue_engine.contact_inbound AS i (tenant_id, contact_id, channel_id, last_inbound_at)
    VALUES (note_inbound.tenant, note_inbound.contact_id, note_inbound.channel_id, note_inbound.at)
    ON CONFLICT ON CONSTRAINT contact_inbound_pkey
    DO UPDATE SET last_inbound_at = excluded.last_inbound_at
          WHERE i.last_inbound_at < excluded.last_inbound_at;
END
$fn$;
COMMENT ON FUNCTION revenue_engine.note_inbound(text, bigint, bigint, timestamptz) IS
    'record an inbound message of a contact on a channel: the latest time per channel is kept';

REVOKE ALL ON FUNCTION
    revenue_engine.tag_problem(text),
    revenue_engine.clean_tags(text[]),
    revenue_engine.check_external_ref(text),
    revenue_engine.upsert_contact(text, text, text, text, text, jsonb, text[], uuid, text),
    revenue_engine.contact_id_of(text, text),
    revenue_engine.tag_contact(text, text),
    revenue_engine.untag_contact(text, text),
    revenue_engine.set_consent(text, text, text, boolean, text),
    revenue_engine.consent_allows(text, bigint, text, text),
    revenue_engine.note_inbound(text, bigint, bigint, timestamptz)
  FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    revenue_engine.upsert_contact(text, text, text, text, text, jsonb, text[], uuid, text),
    revenue_engine.tag_contact(text, text),
    revenue_engine.untag_contact(text, text),
    revenue_engine.set_consent(text, text, text, boolean, text)
  TO revenue_engine_user;
