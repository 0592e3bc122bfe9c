-- Campaign views and counters (src/campaigns/views.sql, counters.c): every
-- counter of campaign_funnel, step_funnel and template_stats moves with the
-- rows of enrollments, campaign_messages and enrollment_history, whoever
-- writes them (here the superuser, directly: the triggers must count any
-- write); rollbacks leave nothing; TRUNCATE and campaign_counters_recount()
-- give what a scan gives; a random workload of a few thousand transitions
-- leaves the counters equal to an independent count and to the recount;
-- the views show the current tenant only; due_queue probes the due index.
\c
\set SHOW_CONTEXT never
SET TimeZone = 'UTC';
SET revenue_engine.tenant = 'cv_a';

-- Two tenants, each: templates welcome (versions 1, 2), nudge, plain;
-- campaign onboarding (versions 1 and 2: send welcome, wait, send nudge);
-- 40 contacts.
CREATE FUNCTION cv_fixture(t text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    cid bigint;
    tid bigint;
BEGIN
    INSERT INTO revenue_engine.templates (tenant_id, name, latest_version)
    VALUES (t, 'welcome', 2), (t, 'nudge', 1), (t, 'plain', 1);
    INSERT INTO revenue_engine.template_versions (tenant_id, template_id, version, body)
    SELECT t, x.id, v, 'Hi {{first_name|there}}'
      FROM revenue_engine.templates x CROSS JOIN generate_series(1, x.latest_version) v
     WHERE x.tenant_id = t;
    INSERT INTO revenue_engine.campaigns (tenant_id, name, status, version)
    VALUES (t, 'onboarding', 'active', 2) RETURNING id INTO cid;
    INSERT INTO revenue_engine.campaign_versions (tenant_id, campaign_id, version)
    VALUES (t, cid, 1), (t, cid, 2);
    INSERT INTO revenue_engine.campaign_steps (tenant_id, campaign_id, version, position, kind, template,
                                               delay_amount, delay_unit)
    SELECT t, cid, v, p.position, p.kind, p.template, p.amount, p.unit
      FROM generate_series(1, 2) v,
           (VALUES (1, 'send', 'welcome', NULL, NULL), (2, 'wait', NULL, 2, 'days'),
                   (3, 'send', 'nudge', NULL, NULL)) AS p(position, kind, template, amount, unit);
    INSERT INTO revenue_engine.contacts (tenant_id, external_ref, name)
    SELECT t, 'c' || i, 'Contact ' || i FROM generate_series(1, 40) i;
END $$;
SELECT cv_fixture('cv_a'), cv_fixture('cv_b');

CREATE FUNCTION cv_campaign(t text) RETURNS bigint LANGUAGE sql STABLE
AS $$ SELECT id FROM revenue_engine.campaigns WHERE tenant_id = t AND name = 'onboarding' $$;
CREATE FUNCTION cv_template(t text, n text) RETURNS bigint LANGUAGE sql STABLE
AS $$ SELECT id FROM revenue_engine.templates WHERE tenant_id = t AND name = n $$;
CREATE FUNCTION cv_contact(t text, n integer) RETURNS bigint LANGUAGE sql STABLE
AS $$ SELECT id FROM revenue_engine.contacts WHERE tenant_id = t AND external_ref = 'c' || n $$;

-- Enroll contact n (version v) and return the enrollment.
CREATE FUNCTION cv_enroll(t text, n integer, v integer DEFAULT 2,
                          next_run timestamptz DEFAULT NULL) RETURNS bigint LANGUAGE sql
AS $$
    INSERT INTO revenue_engine.enrollments (tenant_id, campaign_id, contact_id, version, entry, next_run_at)
    SELECT t, cv_campaign(t), cv_contact(t, n), v,
           coalesce((SELECT max(entry) FROM revenue_engine.enrollments
                      WHERE tenant_id = t AND campaign_id = cv_campaign(t) AND contact_id = cv_contact(t, n)), 0) + 1,
           next_run
    RETURNING id
$$;
-- The message of step s of enrollment e, from template tpl version tv.
CREATE SEQUENCE cv_send_ids;
CREATE FUNCTION cv_message(t text, enr bigint, s integer, tpl text, tv integer,
                           fallback boolean DEFAULT false) RETURNS bigint LANGUAGE sql
AS $$
    INSERT INTO revenue_engine.campaign_messages (tenant_id, send_id, enrollment_id, campaign_id, version,
                                                  step, contact_id, channel_id, template_id,
                                                  template_version, fallback_used)
    SELECT t, nextval('cv_send_ids'), e.id, e.campaign_id, e.version, s, e.contact_id, 1,
           cv_template(t, tpl), tv, fallback
      FROM revenue_engine.enrollments e WHERE e.tenant_id = t AND e.id = enr
    RETURNING send_id
$$;
CREATE FUNCTION cv_history(t text, enr bigint, s integer, ev text) RETURNS void LANGUAGE sql
AS $$
    INSERT INTO revenue_engine.enrollment_history (tenant_id, enrollment_id, campaign_id, version, step, event, reason)
    SELECT t, e.id, e.campaign_id, e.version, s, ev, 'test'
      FROM revenue_engine.enrollments e WHERE e.tenant_id = t AND e.id = enr
$$;

-- An independent count of what the counters must hold, per key, from the
-- rows (the test's own statement, not the recount's), and the keys where
-- the counters differ: none is the right answer.  (This test's tenants
-- only: other tests' rows may be written with the triggers off.)
CREATE VIEW cv_expected AS
SELECT tenant_id, campaign_id, version, step, template_id, template_version,
       sum(enrolled) AS enrolled, sum(active) AS active, sum(completed) AS completed,
       sum(exited) AS exited, sum(messages) AS messages, sum(queued) AS queued, sum(sent) AS sent,
       sum(delivered) AS delivered, sum(read) AS read, sum(replied) AS replied, sum(failed) AS failed,
       sum(cancelled) AS cancelled, sum(unknown) AS unknown, sum(fallback) AS fallback,
       sum(deferred) AS deferred, sum(skipped) AS skipped
  FROM (SELECT tenant_id, campaign_id, version, 0 AS step, 0::bigint AS template_id, 0 AS template_version,
               1 AS enrolled, CASE status WHEN 'active' THEN 1 ELSE 0 END AS active,
               CASE status WHEN 'completed' THEN 1 ELSE 0 END AS completed,
               CASE status WHEN 'exited' THEN 1 ELSE 0 END AS exited,
               0 AS messages, 0 AS queued, 0 AS sent, 0 AS delivered, 0 AS read, 0 AS replied,
               0 AS failed, 0 AS cancelled, 0 AS unknown, 0 AS fallback, 0 AS deferred, 0 AS skipped
          FROM revenue_engine.enrollments
        UNION ALL
        SELECT m.tenant_id, m.campaign_id, m.version, m.step, coalesce(m.template_id, 0),
               coalesce(m.template_version, 0), 0, 0, 0, 0, 1,
               CASE WHEN m.status = 'queued' THEN 1 ELSE 0 END,
               CASE WHEN r.rank >= 1 OR m.sent_at IS NOT NULL THEN 1 ELSE 0 END,
               CASE WHEN r.rank >= 2 OR m.delivered_at IS NOT NULL THEN 1 ELSE 0 END,
               CASE WHEN r.rank >= 3 OR m.read_at IS NOT NULL THEN 1 ELSE 0 END,
               CASE WHEN r.rank >= 4 OR m.replied_at IS NOT NULL THEN 1 ELSE 0 END,
               CASE WHEN m.status = 'failed' THEN 1 ELSE 0 END,
               CASE WHEN m.status = 'cancelled' THEN 1 ELSE 0 END,
               CASE WHEN m.status = 'unknown' THEN 1 ELSE 0 END,
               CASE WHEN m.fallback_used THEN 1 ELSE 0 END, 0, 0
          FROM revenue_engine.campaign_messages m
          LEFT JOIN (VALUES ('sent', 1), ('delivered', 2), ('read', 3), ('replied', 4)) r(status, rank)
            ON r.status = m.status
        UNION ALL
        SELECT tenant_id, campaign_id, version, coalesce(step, 0), 0, 0,
               0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
               CASE event WHEN 'deferred' THEN 1 ELSE 0 END, CASE event WHEN 'skipped' THEN 1 ELSE 0 END
          FROM revenue_engine.enrollment_history WHERE event IN ('deferred', 'skipped')) x
 WHERE tenant_id IN ('cv_a', 'cv_b')
 GROUP BY 1, 2, 3, 4, 5, 6;
CREATE VIEW cv_counted AS
SELECT tenant_id, campaign_id, version, step, template_id, template_version,
       sum(enrolled) AS enrolled, sum(active) AS active, sum(completed) AS completed,
       sum(exited) AS exited, sum(messages) AS messages, sum(queued) AS queued, sum(sent) AS sent,
       sum(delivered) AS delivered, sum(read) AS read, sum(replied) AS replied, sum(failed) AS failed,
       sum(cancelled) AS cancelled, sum(unknown) AS unknown, sum(fallback) AS fallback,
       sum(deferred) AS deferred, sum(skipped) AS skipped
  FROM revenue_engine.campaign_counters
 WHERE tenant_id IN ('cv_a', 'cv_b')
 GROUP BY 1, 2, 3, 4, 5, 6
-- keys whose rows are gone count zero everywhere: not a difference
HAVING sum(enrolled) <> 0 OR sum(messages) <> 0 OR sum(deferred) <> 0 OR sum(skipped) <> 0
    OR sum(active) <> 0 OR sum(completed) <> 0 OR sum(exited) <> 0 OR sum(queued) <> 0
    OR sum(sent) <> 0 OR sum(delivered) <> 0 OR sum(read) <> 0 OR sum(replied) <> 0
    OR sum(failed) <> 0 OR sum(cancelled) <> 0 OR sum(unknown) <> 0 OR sum(fallback) <> 0;
CREATE FUNCTION cv_differences() RETURNS bigint LANGUAGE sql
AS $$ SELECT count(*) FROM ((TABLE cv_expected EXCEPT TABLE cv_counted)
                            UNION ALL (TABLE cv_counted EXCEPT TABLE cv_expected)) d $$;

-- The funnel of the current tenant's campaign, version 2.
CREATE FUNCTION cv_funnel(v integer DEFAULT 2)
RETURNS TABLE (enrolled bigint, active bigint, sent bigint, delivered bigint, read bigint, replied bigint,
               exited bigint, completed bigint, failed bigint, skipped bigint, deferred bigint,
               queued bigint, cancelled bigint, unknown bigint, fallback bigint)
LANGUAGE sql AS $$
    SELECT enrolled, active, sent, delivered, read, replied, exited, completed, failed, skipped,
           deferred, queued, cancelled, unknown, fallback
      FROM revenue_engine.campaign_funnel WHERE campaign = 'onboarding' AND version = v
$$;

-- Nothing yet: every version shows, with zeros.
SELECT campaign, version, campaign_status, enrolled, sent FROM revenue_engine.campaign_funnel ORDER BY version;

-- Enrollments: inserted is enrolled and active; the transaction's own
-- changes show after its commit (they are written at commit).
BEGIN;
SELECT cv_enroll('cv_a', 1) AS e1 \gset
SELECT cv_enroll('cv_a', 2) AS e2 \gset
SELECT cv_enroll('cv_a', 3) AS e3 \gset
SELECT enrolled, active FROM cv_funnel();
COMMIT;
SELECT enrolled, active, exited, completed FROM cv_funnel();
-- ended: completed, exited (active no more)
UPDATE revenue_engine.enrollments SET status = 'completed', ended_at = now() WHERE id = :e1;
UPDATE revenue_engine.enrollments SET status = 'exited', ended_at = now(), end_reason = 'replied' WHERE id = :e2;
SELECT enrolled, active, exited, completed FROM cv_funnel();
-- an update that changes nothing counted
UPDATE revenue_engine.enrollments SET step = 2, next_run_at = now() WHERE id = :e3;
SELECT enrolled, active, exited, completed FROM cv_funnel();

-- Messages: each status move, per step and template version.
SELECT cv_message('cv_a', :e3, 1, 'welcome', 2) AS m1 \gset
SELECT cv_message('cv_a', :e1, 1, 'welcome', 1) AS m2 \gset
SELECT cv_message('cv_a', :e2, 1, 'plain', 1, true) AS m3 \gset
SELECT queued, sent, delivered, read, replied, failed, fallback FROM cv_funnel();
UPDATE revenue_engine.campaign_messages SET status = 'sent', sent_at = now() WHERE send_id = :m1;
SELECT queued, sent, delivered, read, replied FROM cv_funnel();
UPDATE revenue_engine.campaign_messages SET status = 'delivered', delivered_at = now() WHERE send_id = :m1;
SELECT queued, sent, delivered, read, replied FROM cv_funnel();
UPDATE revenue_engine.campaign_messages SET status = 'read', read_at = now() WHERE send_id = :m1;
SELECT queued, sent, delivered, read, replied FROM cv_funnel();
-- a status that skips stages reaches them all (statuses rank)
UPDATE revenue_engine.campaign_messages SET status = 'replied' WHERE send_id = :m2;
SELECT queued, sent, delivered, read, replied FROM cv_funnel();
UPDATE revenue_engine.campaign_messages SET status = 'failed', failed_at = now(), error = 'x' WHERE send_id = :m3;
SELECT queued, sent, failed, cancelled, unknown, fallback FROM cv_funnel();
UPDATE revenue_engine.campaign_messages SET status = 'unknown' WHERE send_id = :m3;
SELECT queued, sent, failed, cancelled, unknown FROM cv_funnel();
UPDATE revenue_engine.campaign_messages SET status = 'cancelled' WHERE send_id = :m3;
SELECT queued, sent, failed, cancelled, unknown FROM cv_funnel();
-- a status moved back counts back, unless the stage's time is kept
UPDATE revenue_engine.campaign_messages SET status = 'delivered' WHERE send_id = :m1;
SELECT sent, delivered, read, replied FROM cv_funnel();
UPDATE revenue_engine.campaign_messages SET status = 'delivered' WHERE send_id = :m2;
SELECT sent, delivered, read, replied FROM cv_funnel();
-- history: deferred and skipped per step
SELECT cv_history('cv_a', :e3, 1, 'deferred'), cv_history('cv_a', :e3, 1, 'deferred'),
       cv_history('cv_a', :e3, 3, 'skipped'), cv_history('cv_a', :e3, 3, 'sent'),
       cv_history('cv_a', :e3, NULL, 'skipped');
SELECT skipped, deferred FROM cv_funnel();
SELECT campaign, version, step, kind, template, messages, queued, sent, delivered, read, replied, failed,
       cancelled, unknown, fallback, skipped, deferred
  FROM revenue_engine.step_funnel ORDER BY version, step;
SELECT template, version, messages, sent, delivered, read, replied, failed, fallback, read_pct
  FROM revenue_engine.template_stats ORDER BY template, version;
SELECT cv_differences();

-- Rollbacks leave nothing: a whole transaction, and a savepoint.
BEGIN;
SELECT cv_enroll('cv_a', 4) AS e4 \gset
SELECT cv_message('cv_a', :e4, 1, 'welcome', 2) AS m4 \gset
UPDATE revenue_engine.campaign_messages SET status = 'read' WHERE send_id = :m1;
SELECT cv_history('cv_a', :e4, 1, 'skipped');
ROLLBACK;
BEGIN;
SELECT cv_enroll('cv_a', 5) AS e5 \gset
SAVEPOINT s;
SELECT cv_message('cv_a', :e5, 1, 'welcome', 2) AS m5 \gset
UPDATE revenue_engine.enrollments SET status = 'exited', ended_at = now() WHERE id = :e5;
ROLLBACK TO SAVEPOINT s;
SELECT cv_history('cv_a', :e5, 1, 'deferred');
COMMIT;
SELECT enrolled, active, sent, delivered, read, replied, exited, completed, failed, skipped, deferred, queued
  FROM cv_funnel();
SELECT cv_differences();

-- Deletes count out; a key change (another template version) moves the
-- counts from one key to the other.
UPDATE revenue_engine.campaign_messages SET template_version = 1 WHERE send_id = :m1;
SELECT template, version, messages, sent, delivered FROM revenue_engine.template_stats
 WHERE template = 'welcome' ORDER BY version;
DELETE FROM revenue_engine.campaign_messages WHERE send_id = :m2;
DELETE FROM revenue_engine.enrollments WHERE id = :e2;
SELECT enrolled, active, exited, completed, sent, delivered, replied FROM cv_funnel();
SELECT cv_differences();

-- TRUNCATE recounts from a scan of the three tables, in its transaction
-- (rolled back: the counters as before).
BEGIN;
TRUNCATE revenue_engine.campaign_messages;
SELECT enrolled, sent, delivered, skipped, deferred, messages
  FROM revenue_engine.campaign_funnel WHERE version = 2;
ROLLBACK;
SELECT enrolled, sent, delivered, skipped, deferred, messages
  FROM revenue_engine.campaign_funnel WHERE version = 2;
BEGIN;
SELECT cv_message('cv_a', :e5, 1, 'welcome', 2) AS m6 \gset
TRUNCATE revenue_engine.campaign_messages;
SELECT cv_message('cv_a', :e5, 1, 'welcome', 2) AS m7 \gset
COMMIT;
SELECT enrolled, sent, skipped, deferred, messages, queued
  FROM revenue_engine.campaign_funnel WHERE version = 2;
SELECT cv_differences();

-- Writes with the triggers disabled are not counted until the recount.
ALTER TABLE revenue_engine.campaign_messages DISABLE TRIGGER campaign_messages_counters;
SELECT cv_message('cv_a', :e1, 3, 'nudge', 1) IS NOT NULL AS uncounted;
ALTER TABLE revenue_engine.campaign_messages ENABLE TRIGGER campaign_messages_counters;
SELECT cv_differences();
SELECT revenue_engine.campaign_counters_recount();
SELECT cv_differences();
SELECT messages, queued FROM revenue_engine.campaign_funnel WHERE version = 2;

/*
 * A random workload: 3,000 transitions in 2 tenants, committed every 25,
 * each in a subtransaction that one time in 8 fails after its write (rolled
 * back): enrollments (new entries, ended, moved to the other version,
 * deleted), messages (inserted, status moved anywhere with or without the
 * stage's time, another template version, deleted), history (deferred,
 * skipped, other events).  Then the counters equal the independent count,
 * and the recount changes nothing.
 */
CREATE PROCEDURE cv_workload(n integer)
LANGUAGE plpgsql AS $$
DECLARE
    i integer;
    t text;
    op integer;
    e bigint;
    m bigint;
    st text;
BEGIN
    PERFORM setseed(0.42);
    FOR i IN 1 .. n LOOP
        t := CASE WHEN random() < 0.7 THEN 'cv_a' ELSE 'cv_b' END;
        op := floor(random() * 12)::integer;
        BEGIN
            IF op <= 2 THEN
                -- a contact not in the campaign now enters (again)
                PERFORM cv_enroll(t, c.n, CASE WHEN random() < 0.3 THEN 1 ELSE 2 END)
                   FROM (SELECT 1 + floor(random() * 40)::integer AS n) c
                  WHERE NOT EXISTS (SELECT 1 FROM revenue_engine.enrollments x
                                     WHERE x.tenant_id = t AND x.contact_id = cv_contact(t, c.n)
                                       AND x.status = 'active');
            ELSIF op <= 4 THEN
                SELECT x.id INTO e FROM revenue_engine.enrollments x
                 WHERE x.tenant_id = t AND x.status = 'active' ORDER BY random() LIMIT 1;
                IF e IS NOT NULL THEN
                    PERFORM cv_message(t, e, s, CASE s WHEN 1 THEN 'welcome' ELSE 'nudge' END,
                                       CASE WHEN s = 1 AND random() < 0.5 THEN 2 ELSE 1 END,
                                       random() < 0.1)
                       FROM (SELECT CASE WHEN random() < 0.5 THEN 1 ELSE 3 END AS s) x
                      WHERE NOT EXISTS (SELECT 1 FROM revenue_engine.campaign_messages y
                                         WHERE y.tenant_id = t AND y.enrollment_id = e AND y.step = x.s);
                END IF;
            ELSIF op <= 7 THEN
                SELECT y.send_id INTO m FROM revenue_engine.campaign_messages y
                 WHERE y.tenant_id = t ORDER BY random() LIMIT 1;
                st := (ARRAY['queued', 'sent', 'delivered', 'read', 'replied', 'failed', 'cancelled',
                             'unknown'])[1 + floor(random() * 8)::integer];
                UPDATE revenue_engine.campaign_messages
                   SET status = st,
                       sent_at = CASE WHEN random() < 0.3 THEN now() ELSE sent_at END,
                       delivered_at = CASE WHEN random() < 0.2 THEN now() ELSE delivered_at END,
                       read_at = CASE WHEN random() < 0.1 THEN now()
                                      WHEN random() < 0.1 THEN NULL ELSE read_at END
                 WHERE tenant_id = t AND send_id = m;
            ELSIF op = 8 THEN
                PERFORM cv_history(t, x.id, (ARRAY[NULL, 1, 2, 3])[1 + floor(random() * 4)::integer],
                                   (ARRAY['deferred', 'skipped', 'step', 'waiting'])[1 + floor(random() * 4)::integer])
                   FROM (SELECT x.id FROM revenue_engine.enrollments x WHERE x.tenant_id = t
                          ORDER BY random() LIMIT 1) x;
            ELSIF op = 9 THEN
                UPDATE revenue_engine.enrollments
                   SET status = CASE WHEN random() < 0.5 THEN 'completed' ELSE 'exited' END, ended_at = now()
                 WHERE tenant_id = t
                   AND id = (SELECT x.id FROM revenue_engine.enrollments x
                              WHERE x.tenant_id = t AND x.status = 'active' ORDER BY random() LIMIT 1);
            ELSIF op = 10 THEN
                IF random() < 0.5 THEN
                    UPDATE revenue_engine.campaign_messages
                       SET template_version = 3 - template_version
                     WHERE tenant_id = t AND step = 1
                       AND send_id = (SELECT y.send_id FROM revenue_engine.campaign_messages y
                                       WHERE y.tenant_id = t AND y.step = 1 ORDER BY random() LIMIT 1);
                ELSE
                    UPDATE revenue_engine.enrollments SET version = 3 - version
                     WHERE tenant_id = t
                       AND id = (SELECT x.id FROM revenue_engine.enrollments x
                                  WHERE x.tenant_id = t ORDER BY random() LIMIT 1);
                END IF;
            ELSE
                IF random() < 0.7 THEN
                    DELETE FROM revenue_engine.campaign_messages
                     WHERE tenant_id = t
                       AND send_id = (SELECT y.send_id FROM revenue_engine.campaign_messages y
                                       WHERE y.tenant_id = t ORDER BY random() LIMIT 1);
                ELSE
                    DELETE FROM revenue_engine.enrollments
                     WHERE tenant_id = t
                       AND id = (SELECT x.id FROM revenue_engine.enrollments x
                                  WHERE x.tenant_id = t AND x.status <> 'active' ORDER BY random() LIMIT 1);
                END IF;
            END IF;
            IF random() < 0.125 THEN
                RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = 'rolled back';
            END IF;
        EXCEPTION WHEN raise_exception THEN
            NULL;
        END;
        IF i % 25 = 0 THEN
            COMMIT;
        END IF;
    END LOOP;
END $$;
CALL cv_workload(3000);
SELECT count(*) > 100 AS enrollments, count(DISTINCT tenant_id) AS tenants FROM revenue_engine.enrollments
 WHERE tenant_id IN ('cv_a', 'cv_b');
SELECT count(*) > 100 AS messages, count(DISTINCT status) AS statuses FROM revenue_engine.campaign_messages
 WHERE tenant_id IN ('cv_a', 'cv_b');
SELECT cv_differences();
CREATE TEMP TABLE cv_before AS SELECT * FROM cv_counted;
SELECT revenue_engine.campaign_counters_recount();
SELECT count(*) AS recount_changed
  FROM ((TABLE cv_before EXCEPT TABLE cv_counted) UNION ALL (TABLE cv_counted EXCEPT TABLE cv_before)) d;
-- the views sum the same keys
SELECT (SELECT sum(enrolled) FROM revenue_engine.campaign_funnel)
     = (SELECT count(*) FROM revenue_engine.enrollments WHERE tenant_id = 'cv_a') AS funnel_enrolled,
       (SELECT sum(sent) FROM revenue_engine.step_funnel)
     = (SELECT sum(sent) FROM cv_expected WHERE tenant_id = 'cv_a' AND step > 0) AS steps_sent,
       (SELECT sum(replied) FROM revenue_engine.template_stats)
     = (SELECT sum(replied) FROM cv_expected WHERE tenant_id = 'cv_a' AND template_id > 0) AS templates_replied;

/*
 * due_queue: the tenant's open enrollments (counters), the steps due now and
 * the lag behind the oldest, from enrollments_due_idx: 2,000 enrollments
 * scheduled tomorrow, 3 due (the oldest 15 minutes ago), one waiting
 * without a time.
 */
CREATE TABLE cv_due_contacts AS SELECT i FROM generate_series(1001, 3004) i;
INSERT INTO revenue_engine.contacts (tenant_id, external_ref) SELECT 'cv_a', 'c' || i FROM cv_due_contacts;
INSERT INTO revenue_engine.enrollments (tenant_id, campaign_id, contact_id, version, next_run_at)
SELECT 'cv_a', cv_campaign('cv_a'), cv_contact('cv_a', i), 2,
       CASE WHEN i <= 1003 THEN now() - (i - 1000) * interval '5 minutes'
            WHEN i = 1004 THEN NULL
            ELSE now() + interval '1 day' END
  FROM cv_due_contacts;
ANALYZE revenue_engine.enrollments;
SELECT tenant_id, active = (SELECT count(*) FROM revenue_engine.enrollments
                             WHERE tenant_id = 'cv_a' AND status = 'active') AS active_counted,
       due_now, lag >= interval '15 minutes' AND lag < interval '1 hour' AS lag_15_minutes,
       oldest_due_at <= now() - interval '15 minutes' AS oldest
  FROM revenue_engine.due_queue;
-- its plan reads enrollments only through enrollments_due_idx
CREATE FUNCTION cv_plan_scans(q text) RETURNS TABLE (scan text) LANGUAGE plpgsql AS $$
DECLARE
    line text;
BEGIN
    FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || q LOOP
        IF line ~ 'Scan' AND line ~ 'enrollments' THEN
            scan := regexp_replace(line, '^[ ->]*(\w[\w ]*Scan)( using \w+)? on (\w+).*$', '\1\2 on \3');
            RETURN NEXT;
        END IF;
    END LOOP;
END $$;
SELECT DISTINCT scan FROM cv_plan_scans('SELECT * FROM revenue_engine.due_queue') ORDER BY 1;
-- nothing due in the other tenant
SET revenue_engine.tenant = 'cv_b';
SELECT tenant_id, due_now, lag, oldest_due_at FROM revenue_engine.due_queue;

-- Tenants: the application's role sees its tenant's rows only, through the
-- views (it has no right on the counters themselves).
CREATE ROLE cv_app LOGIN IN ROLE revenue_engine_user;
SET ROLE cv_app;
SET revenue_engine.tenant = 'cv_b';
SELECT DISTINCT tenant_id FROM revenue_engine.campaign_funnel
UNION SELECT DISTINCT tenant_id FROM revenue_engine.step_funnel
UNION SELECT DISTINCT tenant_id FROM revenue_engine.template_stats
UNION SELECT tenant_id FROM revenue_engine.due_queue;
SELECT * FROM revenue_engine.campaign_counters;
SELECT revenue_engine.campaign_counters_recount();
RESET ROLE;
SELECT (SELECT sum(enrolled) FROM revenue_engine.campaign_funnel)
     = (SELECT count(*) FROM revenue_engine.enrollments WHERE tenant_id = 'cv_b') AS cv_b_enrolled;
DROP ROLE cv_app;
RESET revenue_engine.tenant;

-- Clean up this test's tenants (the history is append-only: its trigger is
-- off for this, and the recount counts what is left).
SET session_replication_role = replica;
DELETE FROM revenue_engine.enrollment_history WHERE tenant_id IN ('cv_a', 'cv_b');
RESET session_replication_role;
DELETE FROM revenue_engine.campaign_messages WHERE tenant_id IN ('cv_a', 'cv_b');
DELETE FROM revenue_engine.contacts WHERE tenant_id IN ('cv_a', 'cv_b');
DELETE FROM revenue_engine.campaigns WHERE tenant_id IN ('cv_a', 'cv_b');
DELETE FROM revenue_engine.templates WHERE tenant_id IN ('cv_a', 'cv_b');
SELECT revenue_engine.campaign_counters_recount();
SELECT cv_differences();
DELETE FROM revenue_engine.campaign_counters WHERE tenant_id IN ('cv_a', 'cv_b');
