-- Campaign contacts (src/campaigns/contacts.sql): upsert_contact, tags,
-- consent, the last inbound message, as the application role and per tenant;
-- every bad input with its SQLSTATE, nothing half-written.
\set SHOW_CONTEXT never
SET TimeZone = 'UTC';

-- A call's result, or its SQLSTATE and message.
CREATE FUNCTION cc_try(call text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    r text;
BEGIN
    EXECUTE 'SELECT (' || call || ')::text' INTO r;
    RETURN coalesce(r, 'NULL');
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;

-- What AFTER triggers of other parts would see: every insert and update with old and new.
CREATE TABLE cc_log (op text, ref text, old_tags text[], new_tags text[], old_granted boolean, new_granted boolean);
CREATE FUNCTION cc_contact_log() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.cc_log VALUES (TG_OP || ' ' || TG_TABLE_NAME, NEW.external_ref,
                               CASE WHEN TG_OP = 'UPDATE' THEN OLD.tags END, NEW.tags);
    RETURN NULL;
END $$;
CREATE FUNCTION cc_consent_log() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.cc_log (op, ref, old_granted, new_granted)
    VALUES (TG_OP || ' ' || TG_TABLE_NAME, NEW.channel_kind || '/' || NEW.purpose,
            CASE WHEN TG_OP = 'UPDATE' THEN OLD.granted END, NEW.granted);
    RETURN NULL;
END $$;
CREATE TRIGGER cc_insert AFTER INSERT ON revenue_engine.contacts
    FOR EACH ROW EXECUTE FUNCTION cc_contact_log();
CREATE TRIGGER cc_tags AFTER UPDATE OF tags ON revenue_engine.contacts
    FOR EACH ROW EXECUTE FUNCTION cc_contact_log();
CREATE TRIGGER cc_consent AFTER INSERT OR UPDATE ON revenue_engine.contact_consents
    FOR EACH ROW EXECUTE FUNCTION cc_consent_log();
GRANT INSERT ON cc_log TO PUBLIC;

-- The application: a role with revenue_engine_user only (no table rights).
CREATE ROLE re_cc_app IN ROLE revenue_engine_user;
SET ROLE re_cc_app;
SET revenue_engine.tenant = 'cc_a';

-- Create: the phone normalized to E.164, the zone canonical, tags sorted without duplicates.
SELECT revenue_engine.upsert_contact('u-1', phone => '+1 (415) 555-2671', email => 'ada@example.com',
         name => '  Ada Lovelace ', timezone => 'europe/berlin', attributes => '{"plan": "pro", "seats": 3}',
         tags => ARRAY['trial', 'beta', 'trial'], source => 'signup') > 0 AS created;
-- Update: NULL keeps, attributes merge, given tags replace, user_id set.
SELECT revenue_engine.upsert_contact('u-1', attributes => '{"seats": 5, "team": "red"}',
         user_id => '00000000-0000-0000-0000-000000000007')
       = revenue_engine.upsert_contact('u-1') AS same_id;
SELECT revenue_engine.upsert_contact('u-2', name => 'Grace') > 0 AS created;
SELECT revenue_engine.upsert_contact('u-2', tags => ARRAY['vip']) > 0 AS updated;
RESET ROLE;
SELECT tenant_id, external_ref, user_id, phone, email, name, timezone, attributes, tags, source,
       created_at <= updated_at AS times_ok
  FROM revenue_engine.contacts WHERE tenant_id = 'cc_a' ORDER BY external_ref;
SET ROLE re_cc_app;

-- Tags: true when added/removed, false when nothing changed; the update is of contacts.tags.
SELECT revenue_engine.tag_contact('u-1', 'paid') AS added,
       revenue_engine.tag_contact('u-1', 'paid') AS again,
       revenue_engine.untag_contact('u-1', 'trial') AS removed,
       revenue_engine.untag_contact('u-1', 'trial') AS again,
       revenue_engine.untag_contact('u-1', 'never-had') AS absent;
-- Tags are case-sensitive and may hold spaces and any letters inside.
SELECT revenue_engine.tag_contact('u-1', 'Paid'), revenue_engine.tag_contact('u-1', 'wait list ü');

-- Consent: the rule without a row (marketing refused, transactional allowed), then rows.
SELECT revenue_engine.set_consent('u-1', 'whatsapp', 'marketing', true, 'form') AS changed,
       revenue_engine.set_consent('u-1', 'whatsapp', 'marketing', true) AS unchanged,
       revenue_engine.set_consent('u-1', 'whatsapp', 'marketing', false, 'STOP') AS opted_out,
       revenue_engine.set_consent('u-1', 'sms', 'transactional', false) AS refused;
RESET ROLE;
SELECT external_ref AS contact, kinds.kind, p.purpose,
       revenue_engine.consent_allows('cc_a', c.id, kinds.kind, p.purpose) AS allowed
  FROM revenue_engine.contacts c,
       (VALUES ('whatsapp'), ('sms')) AS kinds(kind), (VALUES ('marketing'), ('transactional')) AS p(purpose)
 WHERE c.tenant_id = 'cc_a' ORDER BY 1, 2, 3;
SELECT channel_kind, purpose, granted, source FROM revenue_engine.contact_consents
 WHERE tenant_id = 'cc_a' ORDER BY 1, 2;
-- Every write was a plain INSERT or UPDATE: AFTER triggers saw it, with old and new.
SELECT op, ref, old_tags, new_tags, old_granted, new_granted FROM cc_log;

-- Bad input: SQLSTATE and message; nothing written.
SET ROLE re_cc_app;
SELECT cc_try(c) FROM (VALUES
    ($$revenue_engine.upsert_contact(NULL)$$),
    ($$revenue_engine.upsert_contact('')$$),
    ($$revenue_engine.upsert_contact(repeat('x', 256))$$),
    ($$revenue_engine.upsert_contact(E'a\tb')$$),
    ($$revenue_engine.upsert_contact('bad', phone => '4155552671')$$),
    ($$revenue_engine.upsert_contact('bad', phone => '+1 415 CALL NOW')$$),
    ($$revenue_engine.upsert_contact('bad', phone => '')$$),
    ($$revenue_engine.upsert_contact('bad', email => 'not-an-address')$$),
    ($$revenue_engine.upsert_contact('bad', email => 'a@b@c')$$),
    ($$revenue_engine.upsert_contact('bad', name => '   ')$$),
    ($$revenue_engine.upsert_contact('bad', timezone => 'Mars/Olympus')$$),
    ($$revenue_engine.upsert_contact('bad', timezone => 'EST5EDT,M3.2.0,M11.1.0')$$),
    ($$revenue_engine.upsert_contact('bad', timezone => '')$$),
    ($$revenue_engine.upsert_contact('bad', attributes => '[1, 2]')$$),
    ($$revenue_engine.upsert_contact('bad', attributes => '"plan"')$$),
    ($$revenue_engine.upsert_contact('bad', attributes => 'null')$$),
    ($$revenue_engine.upsert_contact('bad', tags => ARRAY['ok', NULL])$$),
    ($$revenue_engine.upsert_contact('bad', tags => ARRAY[''])$$),
    ($$revenue_engine.upsert_contact('bad', tags => ARRAY[' padded'])$$),
    ($$revenue_engine.upsert_contact('bad', tags => ARRAY[repeat('t', 64)])$$),
    ($$revenue_engine.upsert_contact('bad', tags => ARRAY[E'tab\there'])$$),
    ($$revenue_engine.upsert_contact('u-1', phone => 'garbage', name => 'Changed')$$),
    ($$revenue_engine.tag_contact('u-1', NULL)$$),
    ($$revenue_engine.tag_contact('u-1', '')$$),
    ($$revenue_engine.tag_contact(NULL, 'x')$$),
    ($$revenue_engine.tag_contact('nobody', 'x')$$),
    ($$revenue_engine.untag_contact('nobody', 'x')$$),
    ($$revenue_engine.untag_contact('u-1', repeat('t', 64))$$),
    ($$revenue_engine.set_consent('u-1', 'fax', 'marketing', true)$$),
    ($$revenue_engine.set_consent('u-1', 'sms', 'spam', true)$$),
    ($$revenue_engine.set_consent('u-1', 'sms', 'marketing', NULL)$$),
    ($$revenue_engine.set_consent('u-1', NULL, 'marketing', true)$$),
    ($$revenue_engine.set_consent('nobody', 'sms', 'marketing', true)$$)
) AS t(c);
RESET ROLE;
SELECT count(*) AS contacts, bool_and(name IS DISTINCT FROM 'Changed') AS unchanged
  FROM revenue_engine.contacts WHERE tenant_id = 'cc_a';

-- Internal functions: granted to nobody.
SET ROLE re_cc_app;
SELECT cc_try($$revenue_engine.contact_id_of('cc_a', 'u-1')$$);
SELECT cc_try($$revenue_engine.consent_allows('cc_a', 1, 'sms', 'marketing')$$);
SELECT cc_try($$revenue_engine.note_inbound('cc_a', 1, 1, now())$$);
RESET ROLE;
SELECT p.oid::regprocedure AS function, has_function_privilege('revenue_engine_user', p.oid, 'EXECUTE') AS app,
       p.prosecdef AS definer, p.proconfig
  FROM pg_proc p
 WHERE p.pronamespace = 'revenue_engine'::regnamespace AND p.prosrc <> 're_tenant_form'
   AND p.proname IN ('upsert_contact', 'tag_contact', 'untag_contact', 'set_consent', 'consent_allows',
                     'contact_id_of', 'note_inbound')
 ORDER BY 1;

-- contact_id_of: the id, 42704 for an unknown reference or another tenant's, 22004 for NULL.
SELECT revenue_engine.contact_id_of('cc_a', 'u-1') = (SELECT id FROM revenue_engine.contacts
                                                       WHERE tenant_id = 'cc_a' AND external_ref = 'u-1') AS same;
SELECT cc_try($$revenue_engine.contact_id_of('cc_a', 'nobody')$$),
       cc_try($$revenue_engine.contact_id_of('cc_b', 'u-1')$$),
       cc_try($$revenue_engine.contact_id_of(NULL, 'u-1')$$),
       cc_try($$revenue_engine.contact_id_of('cc_a', NULL)$$);

-- note_inbound: the latest time per channel is kept (out of order arrivals too).
SELECT revenue_engine.note_inbound('cc_a', revenue_engine.contact_id_of('cc_a', 'u-1'), 11, '2026-11-20 10:00+00'),
       revenue_engine.note_inbound('cc_a', revenue_engine.contact_id_of('cc_a', 'u-1'), 11, '2026-11-20 09:00+00'),
       revenue_engine.note_inbound('cc_a', revenue_engine.contact_id_of('cc_a', 'u-1'), 12, '2026-11-19 08:00+00'),
       revenue_engine.note_inbound('cc_a', revenue_engine.contact_id_of('cc_a', 'u-1'), 11, '2026-11-20 11:00+00');
SELECT channel_id, last_inbound_at FROM revenue_engine.contact_inbound WHERE tenant_id = 'cc_a' ORDER BY 1;
SELECT cc_try($$revenue_engine.note_inbound('cc_a', -1, 11, now())$$),
       regexp_replace(cc_try($$revenue_engine.note_inbound('cc_b', revenue_engine.contact_id_of('cc_a', 'u-1'), 11, now())$$),
                      '[0-9]+ does', '<id of u-1> does') AS other_tenant,
       cc_try($$revenue_engine.note_inbound('cc_a', 1, 11, NULL)$$);

-- Tenants: cc_b sees none of cc_a's contacts, and its own contact of the same reference is another.
SET ROLE re_cc_app;
SET revenue_engine.tenant = 'cc_b';
SELECT cc_try($$revenue_engine.tag_contact('u-1', 'x')$$),
       cc_try($$revenue_engine.set_consent('u-1', 'sms', 'marketing', true)$$);
SELECT revenue_engine.upsert_contact('u-1', name => 'Other Ada') <> revenue_engine.upsert_contact('cc_a', 'u-1', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)
       AS distinct_ids;
-- The tenant form acts for the tenant it names, for that call only.
SELECT revenue_engine.tag_contact('cc_a', 'u-1', 'from-b'), revenue_engine.current_tenant();
RESET ROLE;
SELECT tenant_id, external_ref, name, tags FROM revenue_engine.contacts
 WHERE tenant_id IN ('cc_a', 'cc_b') ORDER BY 1, 2;
-- The application reads no table of contacts.
SET ROLE re_cc_app;
SELECT cc_try($$(SELECT count(*) FROM revenue_engine.contacts)$$);
RESET ROLE;
RESET revenue_engine.tenant;

-- Clean up.
DROP TRIGGER cc_insert ON revenue_engine.contacts;
DROP TRIGGER cc_tags ON revenue_engine.contacts;
DROP TRIGGER cc_consent ON revenue_engine.contact_consents;
DELETE FROM revenue_engine.contacts WHERE tenant_id IN ('cc_a', 'cc_b');
DROP TABLE cc_log;
DROP FUNCTION cc_contact_log(), cc_consent_log(), cc_try(text);
DROP ROLE re_cc_app;
