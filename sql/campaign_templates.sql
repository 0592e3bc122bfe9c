-- Campaign templates (src/campaigns/templates.sql, template.c): versions, the
-- variable syntax and its errors, rendering from every value source,
-- defaults, URL encoding, the WhatsApp form, fallback chains and loops,
-- tenants.  The clock is pinned at 2026-11-20 12:00 UTC (setup).
\set SHOW_CONTEXT never
SET TimeZone = 'UTC';

-- A call's result, or its SQLSTATE and message.
CREATE FUNCTION ct_try(call text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    r text;
BEGIN
    EXECUTE 'SELECT (' || call || ')::text' INTO r;
    RETURN coalesce(r, 'NULL');
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;
-- A render without the ids (they come from sequences shared with other tests).
CREATE FUNCTION ct_shown(r jsonb) RETURNS jsonb LANGUAGE sql AS $$
    SELECT (r - 'template_id'::text) || jsonb_build_object('requested', (r->'requested') - 'template_id'::text)
$$;

CREATE ROLE re_ct_app IN ROLE revenue_engine_user;
SET ROLE re_ct_app;
SET revenue_engine.tenant = 'ct_a';

SELECT revenue_engine.upsert_contact('ada', phone => '+44 20 7946 0018', email => 'ada@example.com',
         name => 'Ada King Lovelace', timezone => 'Pacific/Auckland',
         attributes => '{"plan": "pro", "seats": 5, "trial": false, "ratio": 0.25, "address": {"city": "London"},
                         "team": "attr-team", "empty": " ", "nothing": null, "list": [1, 2], "braces": "{{x}}",
                         "unicode": "Zoë & Co/ü"}') > 0 AS ada;
SELECT revenue_engine.upsert_contact('bare') > 0 AS bare;

-- Versions: a new name is version 1, the same name a new version.
SELECT revenue_engine.create_template('welcome', 'Hello {{first_name|there}}!') AS v1,
       revenue_engine.create_template('welcome', 'Hi {{ first_name | there }}, welcome to {{attributes.plan}}.',
         cta_url => 'https://example.com/start?ref={{external_ref}}&plan={{ plan }}') AS v2;
RESET ROLE;
SELECT t.name, t.latest_version, v.version, v.body, v.cta_url, v.variables, v.required
  FROM revenue_engine.templates t JOIN revenue_engine.template_versions v
    ON v.tenant_id = t.tenant_id AND v.template_id = t.id
 WHERE t.tenant_id = 'ct_a' ORDER BY v.version;
SET ROLE re_ct_app;

-- Every value source.
SELECT revenue_engine.create_template('sources', concat_ws(' | ',
    'first={{first_name}}', 'name={{name}}', 'phone={{phone}}', 'email={{email}}', 'ref={{external_ref}}',
    'tz={{timezone}}', 'plan={{attributes.plan}}', 'seats={{seats}}', 'trial={{trial}}', 'ratio={{ratio}}',
    'city={{attributes.address.city}}', 'team={{team}}', 'ctx.team={{context.team}}',
    'attr.team={{attributes.team}}', 'milestone={{event_data.milestone}}', 'tenure={{tenure_days}}',
    'mv={{milestone_value}}', 'empty={{empty|(blank)}}', 'nothing={{nothing|(null)}}', 'list={{list|(array)}}',
    'braces={{braces|(syntax)}}', 'unknown={{no.such.key|-}}', 'default_empty=[{{nope|}}]'));
SELECT ct_shown(revenue_engine.render_template('sources', 'ada',
         '{"team": "ctx-team", "event_data": {"milestone": 100, "milestone_value": 100}}'))->>'text' AS text;
-- Bare names: the context before the attributes; contact fields before both.
SELECT revenue_engine.create_template('bare_names', '{{name}} / {{plan}} / {{seats}} / {{email|-}}');
SELECT revenue_engine.render_template('bare_names', 'ada', '{"name": "Not Ada", "plan": "ctx-plan", "email": "x"}')->>'text' AS text;

-- tenure_days: local calendar days since the contact was created (in its zone) ...
SELECT revenue_engine.create_template('tenure', 'Day {{tenure_days}}');
RESET ROLE;
UPDATE revenue_engine.contacts SET created_at = '2026-11-10 10:30+00' WHERE tenant_id = 'ct_a';
SET ROLE re_ct_app;
-- 2026-11-10 23:30 to 2026-11-21 01:00 in Auckland: 11 days; in UTC (no zone): 10
SELECT revenue_engine.render_template('tenure', 'ada')->>'text' AS auckland,
       revenue_engine.render_template('tenure', 'bare')->>'text' AS utc;
-- ... or since the user's profile was created, when the contact is a user of the application.
RESET ROLE;
SET revenue_engine.tenant = 'ct_a';
SELECT (revenue_engine.set_user_profile('00000000-0000-0000-0000-0000000000c7', 'UTC')).timezone;
UPDATE revenue_engine.user_profiles SET created_at = '2025-11-20 12:00+00'
 WHERE tenant_id = 'ct_a' AND user_id = '00000000-0000-0000-0000-0000000000c7';
SET ROLE re_ct_app;
SELECT revenue_engine.upsert_contact('bare', user_id => '00000000-0000-0000-0000-0000000000c7') > 0;
SELECT revenue_engine.render_template('tenure', 'bare')->>'text' AS user_tenure;

-- milestone_value: the context's milestone_value, event_data.milestone_value, milestone,
-- event_data.milestone, streak_milestone, event_data.streak_milestone, in this order.
SELECT revenue_engine.create_template('milestone', 'You reached {{milestone_value}}!');
SELECT c AS context, revenue_engine.render_template('milestone', 'ada', c::jsonb)->>'text' AS text
  FROM (VALUES ('{"milestone_value": 10, "event_data": {"milestone_value": 50}}'),
               ('{"event_data": {"milestone_value": 50, "milestone": 7}}'),
               ('{"milestone": "1k", "event_data": {"milestone": 7}}'),
               ('{"event_data": {"milestone": 7}}'),
               ('{"event_data": {"streak_milestone": 30}}')) AS t(c);

-- cta_url: values URL-encoded (defaults too); the text is not.
SELECT revenue_engine.create_template('link', 'Offer for {{attributes.unicode}}',
         cta_url => 'https://example.com/o/{{attributes.unicode}}?n={{name}}&d={{nope|a b&c}}');
SELECT r->>'text' AS text, r->>'cta_url' AS cta_url
  FROM revenue_engine.render_template('link', 'ada') AS r;

-- A missing required variable with no fallback: skipped with the reason, no text.
SELECT ct_shown(revenue_engine.render_template('welcome', 'bare'));

-- Fallbacks: the fallback renders with the same values; chains; all missing: skipped.
SELECT revenue_engine.create_template('generic', 'Hello {{first_name|friend}}, see {{name|our offer}}.');
SELECT revenue_engine.create_template('needs_team', 'Team {{team}} on {{attributes.plan}}', fallback => 'welcome');
SELECT revenue_engine.create_template('needs_city', 'City {{attributes.address.city}}', fallback => 'needs_team');
SELECT revenue_engine.create_template('welcome', 'Hi {{first_name}}', fallback => 'generic') AS welcome_v3;
SELECT revenue_engine.create_template('orphan', 'Only {{attributes.plan}}', fallback => 'needs_city');
SELECT ct_shown(revenue_engine.render_template('needs_city', 'ada')) AS ada_has_everything;
SELECT ct_shown(revenue_engine.render_template('needs_city', 'bare')) AS chain_to_generic;
SELECT ct_shown(revenue_engine.render_template('needs_team', 'bare', '{"team": "blue"}')) AS context_fills_one;

-- The WhatsApp form: params rendered the same way; missing -> fallback; none -> skipped.
SELECT revenue_engine.create_template('wa', 'Hi {{first_name|there}}',
         whatsapp => '{"name": "welcome_v1", "language": "en_US",
                       "params": ["{{first_name|there}}", "{{plan|starter}}", "static"]}',
         cta_url => 'https://example.com/{{external_ref}}');
SELECT revenue_engine.create_template('wa_strict', 'Hi {{first_name}}',
         whatsapp => '{"name": "strict_v1", "language": "pt_BR", "params": ["{{plan}}", "{{name|}}"]}',
         fallback => 'wa');
SELECT ct_shown(revenue_engine.render_template('wa', 'ada', form => 'whatsapp_template')) AS ada;
SELECT ct_shown(revenue_engine.render_template('wa_strict', 'bare', '{"plan": "basic"}', 'whatsapp_template')) AS from_context;
SELECT ct_shown(revenue_engine.render_template('wa_strict', 'bare', '{}', 'whatsapp_template')) AS fallback_to_wa;
SELECT ct_shown(revenue_engine.render_template('generic', 'ada', form => 'whatsapp_template')) AS no_form;

-- Bad syntax: 22023 naming the fragment and where it is; nothing written.
SELECT ct_try(c) FROM (VALUES
    ($$revenue_engine.create_template('bad', 'Hi {{first_name')$$),
    ($$revenue_engine.create_template('bad', 'Hi {{first_name} and more')$$),
    ($$revenue_engine.create_template('bad', 'Hi {{}}')$$),
    ($$revenue_engine.create_template('bad', 'Hi {{  |x}}')$$),
    ($$revenue_engine.create_template('bad', 'Hi {{first-name}}')$$),
    ($$revenue_engine.create_template('bad', 'Hi {{first name}}')$$),
    ($$revenue_engine.create_template('bad', 'Hi {{prénom}}')$$),
    ($$revenue_engine.create_template('bad', 'Hi {{a..b}}')$$),
    ($$revenue_engine.create_template('bad', 'Hi {{.a}}')$$),
    ($$revenue_engine.create_template('bad', 'Hi {{a.}}')$$),
    ($$revenue_engine.create_template('bad', 'Hi {{2fa}}')$$),
    ($$revenue_engine.create_template('bad', 'Hi {{attributes}}')$$),
    ($$revenue_engine.create_template('bad', 'Hi {{context|x}}')$$),
    ($$revenue_engine.create_template('bad', 'Hi {{' || repeat('a', 129) || '}}')$$),
    ($$revenue_engine.create_template('bad', 'Hi {{a|b|c}}')$$),
    ($$revenue_engine.create_template('bad', 'Hi {{a{{b}}}}')$$),
    ($$revenue_engine.create_template('bad', 'Hi {{{a}}}')$$),
    ($$revenue_engine.create_template('bad', 'Hi {{a|{x}}}')$$),
    ($$revenue_engine.create_template('bad', 'Hi first_name}} and more')$$),
    ($$revenue_engine.create_template('bad', 'ok', cta_url => 'ftp://example.com/{{a}}')$$),
    ($$revenue_engine.create_template('bad', 'ok', cta_url => 'https://{{host}}/x')$$),
    ($$revenue_engine.create_template('bad', 'ok', cta_url => 'https://example.com/a b')$$),
    ($$revenue_engine.create_template('bad', 'ok', cta_url => 'https://example.com/{{a')$$),
    ($$revenue_engine.create_template('bad', 'ok', whatsapp => '["x"]')$$),
    ($$revenue_engine.create_template('bad', 'ok', whatsapp => '{"name": "n", "language": "en", "extra": 1}')$$),
    ($$revenue_engine.create_template('bad', 'ok', whatsapp => '{"language": "en"}')$$),
    ($$revenue_engine.create_template('bad', 'ok', whatsapp => '{"name": "{{x}}", "language": "en"}')$$),
    ($$revenue_engine.create_template('bad', 'ok', whatsapp => '{"name": "n", "language": "english please"}')$$),
    ($$revenue_engine.create_template('bad', 'ok', whatsapp => '{"name": "n", "language": "en", "params": "x"}')$$),
    ($$revenue_engine.create_template('bad', 'ok', whatsapp => '{"name": "n", "language": "en", "params": [1]}')$$),
    ($$revenue_engine.create_template('bad', 'ok', whatsapp => '{"name": "n", "language": "en", "params": ["ok", "{{a"]}')$$),
    ($$revenue_engine.create_template('bad', '')$$),
    ($$revenue_engine.create_template('bad', NULL)$$),
    ($$revenue_engine.create_template(NULL, 'x')$$),
    ($$revenue_engine.create_template('bad name', 'x')$$),
    ($$revenue_engine.create_template('bad', 'x', fallback => 'no_such_template')$$),
    ($$revenue_engine.create_template('bad', 'x', fallback => 'bad')$$),
    -- a loop through the latest versions: generic -> orphan -> needs_city -> needs_team -> welcome -> generic
    ($$revenue_engine.create_template('generic', 'x', fallback => 'orphan')$$),
    ($$revenue_engine.create_template('needs_team', 'x', fallback => 'orphan')$$)
) AS t(c);
RESET ROLE;
SELECT count(*) FILTER (WHERE name = 'bad') AS bad_templates, max(latest_version) FILTER (WHERE name = 'generic') AS generic
  FROM revenue_engine.templates WHERE tenant_id = 'ct_a';

-- A loop written by hand (not through create_template) is stopped at render: skipped.
UPDATE revenue_engine.template_versions v SET fallback = 'orphan'
  FROM revenue_engine.templates t
 WHERE t.tenant_id = 'ct_a' AND t.name = 'generic' AND v.tenant_id = t.tenant_id AND v.template_id = t.id;
SELECT ct_shown(revenue_engine.render_template('orphan', 'bare', form => 'whatsapp_template')) AS loop;
-- A version changed by hand renders anew (the parse cache is keyed by the row version).
UPDATE revenue_engine.template_versions v SET body = 'Changed {{first_name}}', fallback = NULL
  FROM revenue_engine.templates t
 WHERE t.tenant_id = 'ct_a' AND t.name = 'generic' AND v.tenant_id = t.tenant_id AND v.template_id = t.id;
SELECT revenue_engine.render_template('generic', 'ada')->>'text' AS changed;

-- render_for_send (internal): a pinned version, the latest (NULL), and its bad input.
SELECT r->>'version' AS version, r->>'text' AS text
  FROM (VALUES (1), (2), (NULL)) AS v(n),
       revenue_engine.render_for_send('ct_a', 'welcome', v.n, revenue_engine.contact_id_of('ct_a', 'ada'), '{}', 'text') AS r;
SELECT regexp_replace(ct_try(c), 'contact [0-9]+', 'contact <id>') FROM (VALUES
    ($$revenue_engine.render_for_send('ct_a', 'welcome', 9, revenue_engine.contact_id_of('ct_a', 'ada'), '{}', 'text')$$),
    ($$revenue_engine.render_for_send('ct_a', 'welcome', 0, revenue_engine.contact_id_of('ct_a', 'ada'), '{}', 'text')$$),
    ($$revenue_engine.render_for_send('ct_a', 'nope', NULL, revenue_engine.contact_id_of('ct_a', 'ada'), '{}', 'text')$$),
    ($$revenue_engine.render_for_send('ct_a', 'welcome', NULL, -1, '{}', 'text')$$),
    ($$revenue_engine.render_for_send('ct_a', 'welcome', NULL, revenue_engine.contact_id_of('ct_a', 'ada'), '[]', 'text')$$),
    ($$revenue_engine.render_for_send('ct_a', 'welcome', NULL, revenue_engine.contact_id_of('ct_a', 'ada'), '{}', 'sms')$$),
    ($$revenue_engine.render_for_send(NULL, 'welcome', NULL, 1, '{}', 'text')$$),
    ($$revenue_engine.render_for_send('ct_a', NULL, NULL, 1, '{}', 'text')$$),
    ($$revenue_engine.render_for_send('ct_a', 'welcome', NULL, NULL, '{}', 'text')$$),
    ($$revenue_engine.render_for_send('ct_a', 'welcome', NULL, 1, NULL, 'text')$$),
    ($$revenue_engine.render_for_send('ct_a', 'welcome', NULL, 1, '{}', NULL)$$),
    -- another tenant: neither the template nor the contact
    ($$revenue_engine.render_for_send('ct_b', 'welcome', NULL, revenue_engine.contact_id_of('ct_a', 'ada'), '{}', 'text')$$)
) AS t(c);

-- render_template's own bad input, as the application.
SET ROLE re_ct_app;
SELECT ct_try(c) FROM (VALUES
    ($$revenue_engine.render_template('welcome', 'nobody')$$),
    ($$revenue_engine.render_template('nope', 'ada')$$),
    ($$revenue_engine.render_template('welcome', 'ada', '"x"')$$),
    ($$revenue_engine.render_template('welcome', 'ada', NULL)$$),
    ($$revenue_engine.render_template(NULL, 'ada')$$),
    ($$revenue_engine.render_template('welcome', NULL)$$),
    ($$revenue_engine.render_template('welcome', 'ada', '{}', 'email')$$),
    -- internal functions are not the application's
    ($$revenue_engine.render_for_send('ct_a', 'welcome', NULL, 1, '{}', 'text')$$),
    ($$revenue_engine.template_variables('x', NULL, NULL)$$)
) AS t(c);

-- Tenants: ct_b neither sees nor renders ct_a's templates and contacts; same names are its own.
SET revenue_engine.tenant = 'ct_b';
SELECT ct_try($$revenue_engine.render_template('welcome', 'ada')$$) AS template,
       ct_try($$revenue_engine.create_template('x', 'y', fallback => 'generic')$$) AS fallback;
SELECT revenue_engine.upsert_contact('ada', name => 'Bea') > 0, revenue_engine.create_template('welcome', 'B: {{first_name}}');
SELECT ct_try($$revenue_engine.render_template('generic', 'ada')$$) AS other_template;
SELECT ct_shown(revenue_engine.render_template('welcome', 'ada'))->>'text' AS own,
       ct_shown(revenue_engine.render_template('ct_a', 'welcome', 'ada', '{}', 'text'))->>'text' AS tenant_form;
RESET ROLE;
SELECT tenant_id, name, latest_version FROM revenue_engine.templates
 WHERE tenant_id IN ('ct_a', 'ct_b') ORDER BY 1, 2;

-- Never a raw {{ in what any render above could produce, for any contact and form.
SELECT count(*) AS renders, count(*) FILTER (WHERE r::text LIKE '%{{%' OR r::text LIKE '%}}%') AS raw_syntax
  FROM revenue_engine.templates t CROSS JOIN revenue_engine.contacts c
       CROSS JOIN (VALUES ('text'), ('whatsapp_template')) AS f(form)
       CROSS JOIN LATERAL revenue_engine.render_for_send(t.tenant_id, t.name, NULL, c.id,
                                                         '{"team": "{{team}}", "event_data": {"milestone": "}}"}}', f.form) AS r
 WHERE c.tenant_id = t.tenant_id AND t.tenant_id IN ('ct_a', 'ct_b');
RESET revenue_engine.tenant;

-- Clean up.
DELETE FROM revenue_engine.templates WHERE tenant_id IN ('ct_a', 'ct_b');
DELETE FROM revenue_engine.contacts WHERE tenant_id IN ('ct_a', 'ct_b');
DELETE FROM revenue_engine.user_profiles WHERE tenant_id = 'ct_a';
DROP FUNCTION ct_try(text), ct_shown(jsonb);
DROP ROLE re_ct_app;
