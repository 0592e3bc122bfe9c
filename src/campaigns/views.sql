-- campaigns: views (see schema.sql for the module's files)

/*
 * Campaign counters: kept by C triggers on enrollments, campaign_messages and
 * enrollment_history (src/campaigns/counters.c, with the blast funnel's
 * machinery in src/commit_counters.c): each change summed in memory and
 * added at commit to one of the key's 8 slot rows (the writing backend's
 * process number % 8), so concurrent writers of one campaign step rarely
 * wait for each other and no view scans the counted tables.
 *
 * The key is (campaign, version, step, template, template version):
 *   step 0, template 0      the enrollments of the version: enrolled (every
 *                           enrollment, entries counted apart), active,
 *                           completed, exited (by status now)
 *   step n, template t, v   the messages of step n rendered from template t
 *                           version v (0, 0: none recorded): messages, the
 *                           stages reached (sent, delivered, read, replied:
 *                           cumulative, so read includes replied; a status
 *                           ranks queued < sent < delivered < read < replied,
 *                           and a stage's timestamp counts too), and the
 *                           status now for queued, failed, cancelled,
 *                           unknown; fallback: rendered as the step's
 *                           fallback template (fallback_used)
 *   step n (or 0), template 0  history events deferred and skipped
 * Counters follow the rows exactly, whoever writes them: a status that
 * moves back (read -> delivered without read_at) is counted back.
 */
CREATE TABLE revenue_engine.campaign_counters (
    tenant_id        text     NOT NULL,
    campaign_id      bigint   NOT NULL,
    version          integer  NOT NULL,
    step             integer  NOT NULL,
    template_id      bigint   NOT NULL,
    template_version integer  NOT NULL,
    slot             smallint NOT NULL,
    enrolled         bigint   NOT NULL DEFAULT 0,
    active           bigint   NOT NULL DEFAULT 0,
    completed        bigint   NOT NULL DEFAULT 0,
    exited           bigint   NOT NULL DEFAULT 0,
    messages         bigint   NOT NULL DEFAULT 0,
    queued           bigint   NOT NULL DEFAULT 0,
    sent             bigint   NOT NULL DEFAULT 0,
    delivered        bigint   NOT NULL DEFAULT 0,
    read             bigint   NOT NULL DEFAULT 0,
    replied          bigint   NOT NULL DEFAULT 0,
    failed           bigint   NOT NULL DEFAULT 0,
    cancelled        bigint   NOT NULL DEFAULT 0,
    unknown          bigint   NOT NULL DEFAULT 0,
    fallback         bigint   NOT NULL DEFAULT 0,
    deferred         bigint   NOT NULL DEFAULT 0,
    skipped          bigint   NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, campaign_id, version, step, template_id, template_version, slot)
) WITH (fillfactor = 30);
COMMENT ON TABLE revenue_engine.campaign_counters IS
    'counters kept by triggers on enrollments, campaign_messages and enrollment_history; read them through campaign_funnel, step_funnel and template_stats';
-- template_stats looks up a template version's rows.  Counter updates stay
-- HOT (no indexed column changes; fillfactor 30 leaves room on the page).
CREATE INDEX campaign_counters_template_idx
    ON revenue_engine.campaign_counters (tenant_id, template_id, template_version);
-- No foreign key to campaigns: messages and history rows have none either,
-- and the counters equal a scan of the rows that exist (a deleted
-- campaign's remaining rows included); the views join campaigns.
-- Not dumped (pg_extension_config_dump), as blast_counters: pg_restore's COPY
-- into enrollments, campaign_messages and enrollment_history counts the
-- restored rows again through the row triggers; a restore with triggers
-- disabled runs campaign_counters_recount() afterwards.

CREATE FUNCTION revenue_engine.campaign_counters_changed()
RETURNS trigger
LANGUAGE C
AS 'MODULE_PATHNAME', 're_campaign_counters_trigger';

-- One row changed: what it counts summed in memory, written at commit.  The
-- argument names the counted table (the same on a Citus shard).
CREATE TRIGGER enrollments_counters
    AFTER INSERT OR DELETE ON revenue_engine.enrollments
    FOR EACH ROW EXECUTE FUNCTION revenue_engine.campaign_counters_changed('enrollments');
-- The runner updates an enrollment at every step (step, next_run_at): only
-- a change of what is counted queues the trigger (WHEN is evaluated after
-- BEFORE triggers, on the row as it is written).
CREATE TRIGGER enrollments_counters_update
    AFTER UPDATE ON revenue_engine.enrollments
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.version IS DISTINCT FROM NEW.version
          OR OLD.campaign_id IS DISTINCT FROM NEW.campaign_id OR OLD.tenant_id IS DISTINCT FROM NEW.tenant_id)
    EXECUTE FUNCTION revenue_engine.campaign_counters_changed('enrollments');
CREATE TRIGGER campaign_messages_counters
    AFTER INSERT OR UPDATE OR DELETE ON revenue_engine.campaign_messages
    FOR EACH ROW EXECUTE FUNCTION revenue_engine.campaign_counters_changed('campaign_messages');
-- append-only: UPDATE and DELETE are refused by enrollment_history_append_only
CREATE TRIGGER enrollment_history_counters
    AFTER INSERT ON revenue_engine.enrollment_history
    FOR EACH ROW EXECUTE FUNCTION revenue_engine.campaign_counters_changed('enrollment_history');
-- TRUNCATE of any of them: every counter recounted from a scan of the three.
CREATE TRIGGER enrollments_counters_truncate
    AFTER TRUNCATE ON revenue_engine.enrollments
    FOR EACH STATEMENT EXECUTE FUNCTION revenue_engine.campaign_counters_changed('enrollments');
CREATE TRIGGER campaign_messages_counters_truncate
    AFTER TRUNCATE ON revenue_engine.campaign_messages
    FOR EACH STATEMENT EXECUTE FUNCTION revenue_engine.campaign_counters_changed('campaign_messages');
CREATE TRIGGER enrollment_history_counters_truncate
    AFTER TRUNCATE ON revenue_engine.enrollment_history
    FOR EACH STATEMENT EXECUTE FUNCTION revenue_engine.campaign_counters_changed('enrollment_history');

-- Every counter set again from a scan (after writes with the triggers
-- disabled or in replica mode); waits for the three tables' writers.
CREATE FUNCTION revenue_engine.campaign_counters_recount()
RETURNS void
LANGUAGE C
AS 'MODULE_PATHNAME', 're_campaign_counters_recount';
COMMENT ON FUNCTION revenue_engine.campaign_counters_recount() IS
    'set every campaign counter from a scan of enrollments, campaign_messages and enrollment_history (blocks their writers while it runs)';

-- Per campaign and version: enrolled -> sent -> delivered -> read -> replied, and how enrollments ended.
CREATE VIEW revenue_engine.campaign_funnel AS
SELECT v.tenant_id, c.id AS campaign_id, c.name AS campaign, v.version, c.status AS campaign_status,
       k.enrolled, k.active, k.sent, k.delivered, k.read, k.replied, k.exited, k.completed,
       k.failed, k.skipped, k.deferred, k.queued, k.cancelled, k.unknown, k.fallback, k.messages,
       round(100.0 * k.delivered / NULLIF(k.sent, 0), 1) AS delivered_pct,
       round(100.0 * k.read / NULLIF(k.sent, 0), 1) AS read_pct,
       round(100.0 * k.replied / NULLIF(k.sent, 0), 1) AS replied_pct
  FROM revenue_engine.campaign_versions v
  JOIN revenue_engine.campaigns c ON c.tenant_id = v.tenant_id AND c.id = v.campaign_id
  CROSS JOIN LATERAL (
       SELECT coalesce(sum(x.enrolled), 0)::bigint AS enrolled, coalesce(sum(x.active), 0)::bigint AS active,
              coalesce(sum(x.completed), 0)::bigint AS completed, coalesce(sum(x.exited), 0)::bigint AS exited,
              coalesce(sum(x.messages), 0)::bigint AS messages, coalesce(sum(x.queued), 0)::bigint AS queued,
              coalesce(sum(x.sent), 0)::bigint AS sent, coalesce(sum(x.delivered), 0)::bigint AS delivered,
              coalesce(sum(x.read), 0)::bigint AS read, coalesce(sum(x.replied), 0)::bigint AS replied,
              coalesce(sum(x.failed), 0)::bigint AS failed, coalesce(sum(x.cancelled), 0)::bigint AS cancelled,
              coalesce(sum(x.unknown), 0)::bigint AS unknown, coalesce(sum(x.fallback), 0)::bigint AS fallback,
              coalesce(sum(x.deferred), 0)::bigint AS deferred, coalesce(sum(x.skipped), 0)::bigint AS skipped
         FROM revenue_engine.campaign_counters x
        WHERE x.tenant_id = v.tenant_id AND x.campaign_id = v.campaign_id AND x.version = v.version) k
 WHERE v.tenant_id = revenue_engine.current_tenant();
COMMENT ON VIEW revenue_engine.campaign_funnel IS
    'per campaign and version: enrollments (enrolled, active, completed, exited), messages by the stage they reached (sent, delivered, read, replied: cumulative) and failed, skipped and deferred steps; from counters, no scan';

-- Per campaign, version and step.
CREATE VIEW revenue_engine.step_funnel AS
SELECT s.tenant_id, c.id AS campaign_id, c.name AS campaign, s.version, s.position AS step, s.kind,
       s.template, k.messages, k.queued, k.sent, k.delivered, k.read, k.replied, k.failed,
       k.cancelled, k.unknown, k.fallback, k.skipped, k.deferred
  FROM revenue_engine.campaign_steps s
  JOIN revenue_engine.campaigns c ON c.tenant_id = s.tenant_id AND c.id = s.campaign_id
  CROSS JOIN LATERAL (
       SELECT coalesce(sum(x.messages), 0)::bigint AS messages, coalesce(sum(x.queued), 0)::bigint AS queued,
              coalesce(sum(x.sent), 0)::bigint AS sent, coalesce(sum(x.delivered), 0)::bigint AS delivered,
              coalesce(sum(x.read), 0)::bigint AS read, coalesce(sum(x.replied), 0)::bigint AS replied,
              coalesce(sum(x.failed), 0)::bigint AS failed, coalesce(sum(x.cancelled), 0)::bigint AS cancelled,
              coalesce(sum(x.unknown), 0)::bigint AS unknown, coalesce(sum(x.fallback), 0)::bigint AS fallback,
              coalesce(sum(x.deferred), 0)::bigint AS deferred, coalesce(sum(x.skipped), 0)::bigint AS skipped
         FROM revenue_engine.campaign_counters x
        WHERE x.tenant_id = s.tenant_id AND x.campaign_id = s.campaign_id AND x.version = s.version
          AND x.step = s.position) k
 WHERE s.tenant_id = revenue_engine.current_tenant();
COMMENT ON VIEW revenue_engine.step_funnel IS
    'per campaign, version and step: its messages by stage reached, failed, cancelled, fallback renders, skipped and deferred runs; from counters, no scan';

-- Per template and version: the campaign messages rendered from it.
CREATE VIEW revenue_engine.template_stats AS
SELECT tv.tenant_id, t.id AS template_id, t.name AS template, tv.version,
       k.messages, k.sent, k.delivered, k.read, k.replied, k.failed, k.fallback,
       round(100.0 * k.read / NULLIF(k.sent, 0), 1) AS read_pct,
       round(100.0 * k.replied / NULLIF(k.sent, 0), 1) AS replied_pct
  FROM revenue_engine.template_versions tv
  JOIN revenue_engine.templates t ON t.tenant_id = tv.tenant_id AND t.id = tv.template_id
  CROSS JOIN LATERAL (
       SELECT coalesce(sum(x.messages), 0)::bigint AS messages,
              coalesce(sum(x.sent), 0)::bigint AS sent, coalesce(sum(x.delivered), 0)::bigint AS delivered,
              coalesce(sum(x.read), 0)::bigint AS read, coalesce(sum(x.replied), 0)::bigint AS replied,
              coalesce(sum(x.failed), 0)::bigint AS failed, coalesce(sum(x.fallback), 0)::bigint AS fallback
         FROM revenue_engine.campaign_counters x
        WHERE x.tenant_id = tv.tenant_id AND x.template_id = tv.template_id
          AND x.template_version = tv.version) k
 WHERE tv.tenant_id = revenue_engine.current_tenant();
COMMENT ON VIEW revenue_engine.template_stats IS
    'per template and version: campaign messages rendered from it by stage reached, failed, and how many as a fallback; from counters, no scan';

/*
 * The current tenant's queue of campaign steps.  active: open enrollments
 * (counters).  due_now and oldest_due_at read enrollments_due_idx only
 * (tenant, next_run_at of active scheduled enrollments): oldest_due_at is
 * one probe (the index's first entry of the tenant), due_now counts the
 * entries up to now() (an index-only scan of the due entries, so its cost
 * grows with the backlog, not with the enrollments waiting for later);
 * lag = now() - oldest_due_at, NULL when nothing is due.
 */
CREATE VIEW revenue_engine.due_queue AS
SELECT q.tenant_id,
       (SELECT coalesce(sum(x.active), 0)::bigint
          FROM revenue_engine.campaign_counters x
         WHERE x.tenant_id = q.tenant_id AND x.step = 0) AS active,
       (SELECT count(*)
          FROM revenue_engine.enrollments e
         WHERE e.tenant_id = q.tenant_id AND e.status = 'active' AND e.next_run_at IS NOT NULL
           AND e.next_run_at <= pg_catalog.now()) AS due_now,
       d.oldest_due_at,
       CASE WHEN d.oldest_due_at <= pg_catalog.now() THEN pg_catalog.now() - d.oldest_due_at END AS lag
  FROM (SELECT revenue_engine.current_tenant() AS tenant_id) q
  CROSS JOIN LATERAL (
       SELECT min(e.next_run_at) FILTER (WHERE e.next_run_at <= pg_catalog.now()) AS oldest_due_at
         FROM (SELECT e.next_run_at
                 FROM revenue_engine.enrollments e
                WHERE e.tenant_id = q.tenant_id AND e.status = 'active' AND e.next_run_at IS NOT NULL
                ORDER BY e.next_run_at
                LIMIT 1) e) d;
COMMENT ON VIEW revenue_engine.due_queue IS
    'the current tenant''s campaign steps: open enrollments, steps due now, the oldest due time and the lag behind it; index probes on enrollments_due_idx, no scan of enrollments';

REVOKE ALL ON revenue_engine.campaign_counters FROM PUBLIC;
REVOKE ALL ON FUNCTION revenue_engine.campaign_counters_changed(),
                       revenue_engine.campaign_counters_recount() FROM PUBLIC;
GRANT SELECT ON revenue_engine.campaign_funnel, revenue_engine.step_funnel,
                revenue_engine.template_stats, revenue_engine.due_queue
  TO revenue_engine_user;
