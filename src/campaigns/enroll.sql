/*
 * campaigns: enrollment, its triggers, re-entry and stop conditions (issue 12).
 *
 * One piece of code enrolls: enroll_internal().  enroll() (the application),
 * the triggers on contacts (contact created, tag added), the outbox trigger
 * on webhook_events (an event type; enroll.c) and blast follow-ups
 * (campaign_blast_followups, called by the worker) all call it, in the
 * transaction of the write that caused it: a rollback leaves nothing.
 *
 * Concurrency.  A contact is in a campaign at most once at a time: the
 * unique index enrollments_open_idx, and (campaign, contact, entry) numbers
 * the entries.  enroll_internal reads the contact's last entry, decides the
 * re-entry policy on it, and inserts entry + 1 with INSERT .. ON CONFLICT DO
 * NOTHING against both keys: of concurrent enrollers exactly one inserts,
 * the others wait for it (speculative insertion waits for the conflicting
 * transaction) and return its enrollment.  Nothing is checked and then
 * inserted.
 *
 * Stopping (exit_enrollment, campaign_stop_contact: replies, opt-outs, exit
 * rules) updates the enrollment row, which locks it, before it cancels the
 * enrollment's queued sends; the runner claims enrollments FOR UPDATE SKIP
 * LOCKED and the delivery worker claims queued sends only.  So a step is
 * either claimed and its send queued before the stop commits (and then
 * cancelled by it, unless the delivery worker already took it), or never.
 */

/*
 * The enrollment, the open one when the contact is already in, or NULL when
 * the campaign's re-entry policy refuses another entry (then a 'refused'
 * history row names the previous enrollment, the one that blocks).  The
 * caller has checked that the campaign is active and the context an object.
 */
CREATE FUNCTION revenue_engine.enroll_internal(
    tenant       text,
    campaign_id  bigint,
    contact_id   bigint,
    context      jsonb,
    start_at     timestamptz,
    trigger_kind text,
    entry_key    text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_variable
DECLARE
    ts       timestamptz := revenue_engine.clock_now();
    c        record;
    prev     record;
    enr      bigint;
    due      timestamptz;
    attempt  integer := 0;
BEGIN
    /*
     * The campaign row FOR SHARE: an archive_campaign() (or pause) that has
     * not committed yet is waited for and its status seen, and one that
     * comes later waits for this transaction, so that its stop finds this
     * enrollment.  Without the lock an enrollment that read the campaign
     * active just before the archive committed would stay open, never run.
     * Only an active campaign enrolls; the callers raised their error
     * already, so a campaign that stopped being active meanwhile enrolls
     * nobody (NULL), without failing the writing transaction.
     */
    SELECT cp.version, cp.reentry, cp.reentry_cooldown, cp.status INTO c
      FROM revenue_engine.campaigns cp
     WHERE cp.tenant_id = tenant AND cp.id = campaign_id
       FOR SHARE;
    IF NOT FOUND OR c.status <> 'active' THEN
        RETURN NULL;
    END IF;
    due := CASE WHEN start_at IS NULL OR start_at <= ts THEN ts ELSE start_at END;
    LOOP
        attempt := attempt + 1;
        -- the open enrollment, if any (entered by a committed transaction)
        SELECT e.id INTO enr FROM revenue_engine.enrollments e
         WHERE e.tenant_id = tenant AND e.campaign_id = campaign_id
           AND e.contact_id = contact_id AND e.status = 'active';
        IF FOUND THEN
            RETURN enr;
        END IF;
        -- the last entry decides the re-entry policy
        SELECT e.id, e.entry, e.ended_at INTO prev FROM revenue_engine.enrollments e
         WHERE e.tenant_id = tenant AND e.campaign_id = campaign_id AND e.contact_id = contact_id
         ORDER BY e.entry DESC LIMIT 1;
        IF FOUND AND (c.reentry = 'never'
                      OR (c.reentry = 'cooldown' AND ts < prev.ended_at + c.reentry_cooldown)) THEN
            INSERT INTO revenue_engine.enrollment_history
                   (tenant_id, enrollment_id, campaign_id, version, step, event, reason, detail, at)
            VALUES (tenant, prev.id, campaign_id, c.version, NULL, 'refused',
                    CASE c.reentry WHEN 'never' THEN 're-entry never'
                         ELSE 're-entry cooldown until ' || (prev.ended_at + c.reentry_cooldown)::text END,
                    jsonb_build_object('trigger', trigger_kind, 'entry_key', entry_key), ts);
            RETURN NULL;
        END IF;
        INSERT INTO revenue_engine.enrollments AS e
               (tenant_id, campaign_id, contact_id, version, entry, status, step, step_started_at,
                next_run_at, context, entry_key, trigger_kind, enrolled_at, updated_at)
        VALUES (tenant, campaign_id, contact_id, c.version, coalesce(prev.entry, 0) + 1, 'active', 1, ts,
                due, context, entry_key, trigger_kind, ts, ts)
        ON CONFLICT DO NOTHING
        RETURNING e.id INTO enr;
        IF enr IS NOT NULL THEN
            EXIT;
        END IF;
        -- A concurrent enrollment committed first: it is the open one (next
        -- turn), or it already ended and the policy is decided again.
        IF attempt >= 5 THEN
            RAISE EXCEPTION 'enrolling contact % in campaign % kept conflicting', contact_id, campaign_id
                USING ERRCODE = '40001', HINT = 'Retry the transaction.';
        END IF;
    END LOOP;
    INSERT INTO revenue_engine.enrollment_history
           (tenant_id, enrollment_id, campaign_id, version, step, event, reason, detail, at)
    VALUES (tenant, enr, campaign_id, c.version, 1, 'enrolled', trigger_kind,
            jsonb_build_object('entry', coalesce(prev.entry, 0) + 1, 'entry_key', entry_key,
                               'next_run_at', due),
            ts);
    -- The worker learns of it at this commit: a zero delay runs the first
    -- step right away, a later start may come before the next due step it
    -- knows of (it looks for new ones by itself only every 10 s).
    PERFORM revenue_engine.wake_worker();
    RETURN enr;
END
$fn$;
COMMENT ON FUNCTION revenue_engine.enroll_internal(text, bigint, bigint, jsonb, timestamptz, text, text) IS
    'internal: enroll a contact (one piece of code for enroll() and every trigger); the open enrollment, or NULL when the re-entry policy refuses';

-- The value of the version's first exit rule's match_key in the context: the entry's key.
-- plpgsql, not sql: Citus plans no statement of an SQL function whose tenant
-- is a parameter (a distributed enroll() runs it on a shard's node).
CREATE FUNCTION revenue_engine.campaign_entry_key(tenant text, campaign_id bigint, context jsonb)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    RETURN (SELECT context ->> (r.rule ->> 'match_key')
              FROM revenue_engine.campaigns cp
              JOIN revenue_engine.campaign_versions v
                ON v.tenant_id = cp.tenant_id AND v.campaign_id = cp.id AND v.version = cp.version
             CROSS JOIN LATERAL pg_catalog.jsonb_array_elements(v.exit_rules) WITH ORDINALITY AS r(rule, n)
             WHERE cp.tenant_id = campaign_entry_key.tenant AND cp.id = campaign_entry_key.campaign_id
               AND r.rule ? 'match_key'
             ORDER BY r.n LIMIT 1);
END
$fn$;

-- Enroll a contact in every active campaign of a trigger kind (and value).
CREATE FUNCTION revenue_engine.campaign_trigger_enroll(
    tenant text, kind text, value text, contact_id bigint, context jsonb)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_variable
DECLARE
    c   record;
    n   integer := 0;
BEGIN
    -- campaigns_trigger_idx: trigger_value = value, or IS NULL (contact_created)
    FOR c IN SELECT cp.id FROM revenue_engine.campaigns cp
              WHERE cp.tenant_id = tenant AND cp.trigger_kind = kind AND cp.status = 'active'
                AND (cp.trigger_value = value OR (value IS NULL AND cp.trigger_value IS NULL))
              ORDER BY cp.id
    LOOP
        IF revenue_engine.enroll_internal(tenant, c.id, contact_id, context, NULL, kind,
                                          revenue_engine.campaign_entry_key(tenant, c.id, context))
           IS NOT NULL THEN
            n := n + 1;
        END IF;
    END LOOP;
    RETURN n;
END
$fn$;

/*
 * The application's enrollment.  Validates everything before writing:
 * unknown campaign or contact 42704, a campaign that is not active 55000, a
 * context that is not a JSON object 22023, a start that is not finite 22008.
 */
CREATE FUNCTION revenue_engine.enroll(
    campaign text,
    contact  text,
    context  jsonb       DEFAULT '{}',
    start_at timestamptz DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_variable
DECLARE
    tenant text := revenue_engine.current_tenant();
    c      record;
    ct     bigint;
BEGIN
    IF campaign IS NULL OR contact IS NULL OR context IS NULL THEN
        RAISE EXCEPTION 'campaign, contact and context must not be null'
            USING ERRCODE = '22004', HINT = 'Pass ''{}'' for an enrollment without context.';
    END IF;
    IF jsonb_typeof(context) <> 'object' THEN
        RAISE EXCEPTION 'context must be a JSON object, not %', jsonb_typeof(context)
            USING ERRCODE = '22023';
    END IF;
    IF start_at IS NOT NULL AND NOT isfinite(start_at) THEN
        RAISE EXCEPTION 'start_at must be a finite time, not %', start_at USING ERRCODE = '22008';
    END IF;
    SELECT cp.id, cp.status INTO c FROM revenue_engine.campaigns cp
     WHERE cp.tenant_id = tenant AND cp.name = campaign;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'campaign "%" does not exist', campaign USING ERRCODE = '42704';
    END IF;
    IF c.status <> 'active' THEN
        RAISE EXCEPTION 'campaign "%" is %, not active', campaign, c.status
            USING ERRCODE = '55000', HINT = 'Activate it with revenue_engine.activate_campaign().';
    END IF;
    ct := revenue_engine.contact_id_of(tenant, contact);
    RETURN revenue_engine.enroll_internal(tenant, c.id, ct, context, start_at, 'manual',
                                          revenue_engine.campaign_entry_key(tenant, c.id, context));
END
$fn$;
COMMENT ON FUNCTION revenue_engine.enroll(text, text, jsonb, timestamptz) IS
    'enroll a contact (external reference) in an active campaign; the enrollment (the open one if already in), NULL when re-entry is refused';

/*
 * Stop enrollments: each still open one becomes exited with the reason
 * (the UPDATE locks it first), history 'exited', and its queued sends are
 * cancelled (sends queued -> cancelled, their campaign messages too, history
 * 'cancelled'); a send the delivery worker already claimed goes out.  The
 * number of enrollments stopped.
 */
CREATE FUNCTION revenue_engine.campaign_stop_enrollments(tenant text, ids bigint[], reason text)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_variable
DECLARE
    ts   timestamptz := revenue_engine.clock_now();
    x    bigint;
    e    record;
    m    record;
    n    integer := 0;
BEGIN
    /*
     * One enrollment at a time, in id order (two stops of one contact, a
     * reply and an opt-out, lock in the same order and never deadlock), by
     * its primary key: statements with scalar keys, whose plans probe the
     * keys also when made before the tables were analyzed; each routed by
     * tenant_id (Citus).
     */
    IF ids IS NULL OR cardinality(ids) = 0 THEN
        RETURN 0;
    END IF;
    FOREACH x IN ARRAY (SELECT array_agg(DISTINCT u.id ORDER BY u.id) FROM unnest(ids) AS u(id)) LOOP
        UPDATE revenue_engine.enrollments en
           SET status = 'exited', ended_at = ts, end_reason = reason, next_run_at = NULL, updated_at = ts
         WHERE en.tenant_id = tenant AND en.id = x AND en.status = 'active'
        RETURNING en.id, en.campaign_id, en.version, en.step INTO e;
        CONTINUE WHEN NOT FOUND;
        n := n + 1;
        INSERT INTO revenue_engine.enrollment_history
               (tenant_id, enrollment_id, campaign_id, version, step, event, reason, at)
        VALUES (tenant, e.id, e.campaign_id, e.version, e.step, 'exited', reason, ts);
        -- its queued sends; the delivery worker claims queued sends only
        FOR m IN SELECT cm.send_id, cm.step FROM revenue_engine.campaign_messages cm
                  WHERE cm.tenant_id = tenant AND cm.enrollment_id = x AND cm.status = 'queued'
                  ORDER BY cm.step
        LOOP
            UPDATE revenue_engine.sends sd SET status = 'cancelled'
             WHERE sd.tenant_id = tenant AND sd.id = m.send_id AND sd.status = 'queued';
            CONTINUE WHEN NOT FOUND;
            UPDATE revenue_engine.campaign_messages cm SET status = 'cancelled'
             WHERE cm.tenant_id = tenant AND cm.send_id = m.send_id AND cm.status = 'queued';
            INSERT INTO revenue_engine.enrollment_history
                   (tenant_id, enrollment_id, campaign_id, version, step, event, reason, detail, at)
            VALUES (tenant, e.id, e.campaign_id, e.version, m.step, 'cancelled', reason,
                    jsonb_build_object('send_id', m.send_id), ts);
        END LOOP;
    END LOOP;
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION revenue_engine.campaign_stop_enrollments(text, bigint[], text) IS
    'internal: stop open enrollments with a reason (history exited) and cancel their queued sends (history cancelled)';

/*
 * The contact's open enrollments, all or those in campaigns whose channel is
 * of channel_kind (and, when given, whose purpose is purpose); the enroll
 * part's selection for campaign_stop_contact and the opt-out trigger.
 */
CREATE FUNCTION revenue_engine.campaign_open_enrollments(
    tenant text, contact_id bigint, channel_kind text, purpose text)
RETURNS bigint[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_variable
DECLARE
    ids bigint[];
BEGIN
    IF channel_kind IS NULL AND purpose IS NULL THEN
        SELECT array_agg(e.id) INTO ids FROM revenue_engine.enrollments e
         WHERE e.tenant_id = tenant AND e.contact_id = contact_id AND e.status = 'active';
    ELSIF channel_kind IS NULL THEN
        SELECT array_agg(e.id) INTO ids
          FROM revenue_engine.enrollments e
          JOIN revenue_engine.campaigns cp ON cp.tenant_id = e.tenant_id AND cp.id = e.campaign_id
         WHERE e.tenant_id = tenant AND e.contact_id = contact_id AND e.status = 'active'
           AND cp.purpose = purpose;
    ELSE
        SELECT array_agg(e.id) INTO ids
          FROM revenue_engine.enrollments e
          JOIN revenue_engine.campaigns cp ON cp.tenant_id = e.tenant_id AND cp.id = e.campaign_id
          JOIN revenue_engine.channels ch ON ch.tenant_id = cp.tenant_id AND ch.id = cp.channel_id
         WHERE e.tenant_id = tenant AND e.contact_id = contact_id AND e.status = 'active'
           AND ch.kind = channel_kind AND (purpose IS NULL OR cp.purpose = purpose);
    END IF;
    RETURN ids;
END
$fn$;

/*
 * Stop every open enrollment of a contact, or those in campaigns whose
 * channel is of channel_kind; how many.  Called on an inbound reply (the
 * outcomes part's status ingestion: reason 'replied').
 */
CREATE FUNCTION revenue_engine.campaign_stop_contact(
    tenant       text,
    contact_id   bigint,
    reason       text,
    channel_kind text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    ids bigint[];
BEGIN
    IF tenant IS NULL OR contact_id IS NULL OR reason IS NULL THEN
        RAISE EXCEPTION 'tenant, contact_id and reason must not be null' USING ERRCODE = '22004';
    END IF;
    ids := revenue_engine.campaign_open_enrollments(tenant, contact_id, channel_kind, NULL);
    IF ids IS NULL THEN
        RETURN 0;
    END IF;
    RETURN revenue_engine.campaign_stop_enrollments(tenant, ids, reason);
END
$fn$;
COMMENT ON FUNCTION revenue_engine.campaign_stop_contact(text, bigint, text, text) IS
    'internal: stop a contact''s open enrollments (all, or of a channel kind) with a reason, cancelling their queued sends; how many';

-- The application's manual stop: true when an open enrollment was stopped.
CREATE FUNCTION revenue_engine.exit_enrollment(
    campaign text,
    contact  text,
    reason   text DEFAULT 'manual')
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_variable
DECLARE
    tenant text := revenue_engine.current_tenant();
    cp_id  bigint;
    ct     bigint;
    enr    bigint;
BEGIN
    IF campaign IS NULL OR contact IS NULL OR reason IS NULL THEN
        RAISE EXCEPTION 'campaign, contact and reason must not be null' USING ERRCODE = '22004';
    END IF;
    SELECT cp.id INTO cp_id FROM revenue_engine.campaigns cp
     WHERE cp.tenant_id = tenant AND cp.name = campaign;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'campaign "%" does not exist', campaign USING ERRCODE = '42704';
    END IF;
    ct := revenue_engine.contact_id_of(tenant, contact);
    SELECT e.id INTO enr FROM revenue_engine.enrollments e
     WHERE e.tenant_id = tenant AND e.campaign_id = cp_id AND e.contact_id = ct AND e.status = 'active';
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    RETURN revenue_engine.campaign_stop_enrollments(tenant, ARRAY[enr], reason) = 1;
END
$fn$;
COMMENT ON FUNCTION revenue_engine.exit_enrollment(text, text, text) IS
    'stop a contact''s open enrollment in a campaign (exited, with the reason) and cancel its queued sends; false when it was not in';

-- Whether the client's statement is COPY: rows a restore loads enroll and stop nothing (enroll.c).
CREATE FUNCTION revenue_engine.campaign_rows_copied()
RETURNS boolean
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 're_campaign_rows_copied';

/*
 * Triggers on contacts: a contact created enrolls in the active
 * contact_created campaigns, a tag added (at creation or later) in the
 * active tag_added campaigns of that tag.  They run as the owner (the rows
 * are written by contacts.sql's functions or the table owner) and read the
 * row's values as data only.  Rows loaded by COPY (a restore) enroll
 * nothing: they come with their enrollments.
 */
CREATE FUNCTION revenue_engine.campaign_contact_inserted()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    t text;
BEGIN
    IF revenue_engine.campaign_rows_copied() THEN
        RETURN NULL;
    END IF;
    PERFORM revenue_engine.campaign_trigger_enroll(NEW.tenant_id, 'contact_created', NULL, NEW.id,
                                                   jsonb_build_object('trigger', 'contact_created'));
    FOR t IN SELECT DISTINCT u.tag FROM unnest(NEW.tags) AS u(tag) WHERE u.tag IS NOT NULL ORDER BY 1 LOOP
        PERFORM revenue_engine.campaign_trigger_enroll(NEW.tenant_id, 'tag_added', t, NEW.id,
                                                       jsonb_build_object('trigger', 'tag_added', 'tag', t));
    END LOOP;
    RETURN NULL;
END
$fn$;

CREATE FUNCTION revenue_engine.campaign_contact_tagged()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    t text;
BEGIN
    IF revenue_engine.campaign_rows_copied() THEN
        RETURN NULL;
    END IF;
    FOR t IN SELECT u.tag FROM unnest(NEW.tags) AS u(tag) WHERE u.tag IS NOT NULL
             EXCEPT SELECT o.tag FROM unnest(OLD.tags) AS o(tag) ORDER BY 1 LOOP
        PERFORM revenue_engine.campaign_trigger_enroll(NEW.tenant_id, 'tag_added', t, NEW.id,
                                                       jsonb_build_object('trigger', 'tag_added', 'tag', t));
    END LOOP;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER campaign_contact_inserted
    AFTER INSERT ON revenue_engine.contacts
    FOR EACH ROW EXECUTE FUNCTION revenue_engine.campaign_contact_inserted();
CREATE TRIGGER campaign_contact_tagged
    AFTER UPDATE OF tags ON revenue_engine.contacts
    FOR EACH ROW WHEN (NOT (NEW.tags OPERATOR(pg_catalog.<@) OLD.tags))
    EXECUTE FUNCTION revenue_engine.campaign_contact_tagged();

/*
 * Opt-out: consent for a channel kind and purpose turned (or recorded) false
 * stops the contact's enrollments in campaigns of that purpose whose channel
 * is of that kind.  The runner re-checks consent at each send anyway; this
 * cancels what is already queued.
 */
CREATE FUNCTION revenue_engine.campaign_consent_withdrawn()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    ids bigint[];
BEGIN
    IF revenue_engine.campaign_rows_copied() THEN
        RETURN NULL;
    END IF;
    ids := revenue_engine.campaign_open_enrollments(NEW.tenant_id, NEW.contact_id, NEW.channel_kind, NEW.purpose);
    IF ids IS NOT NULL THEN
        PERFORM revenue_engine.campaign_stop_enrollments(NEW.tenant_id, ids, 'opt-out');
    END IF;
    RETURN NULL;
END
$fn$;
CREATE TRIGGER campaign_consent_withdrawn
    AFTER INSERT ON revenue_engine.contact_consents
    FOR EACH ROW WHEN (NOT NEW.granted)
    EXECUTE FUNCTION revenue_engine.campaign_consent_withdrawn();
CREATE TRIGGER campaign_consent_revoked
    AFTER UPDATE OF granted ON revenue_engine.contact_consents
    FOR EACH ROW WHEN (OLD.granted AND NOT NEW.granted)
    EXECUTE FUNCTION revenue_engine.campaign_consent_withdrawn();

/*
 * An outbox event (webhook_events row) of a user with contacts: exit rules
 * first (open enrollments whose version names the event type, with the
 * rule's match_key equal in the entry context and the event's data), then
 * enrollments waiting for it (wait_event step of that type and key: the step
 * moves on, due now, history 'resumed'), then the active campaigns
 * triggered by the event type.  Called by the C trigger on webhook_events
 * (enroll.c) only for event types some campaign of the tenant names.
 */
CREATE FUNCTION revenue_engine.campaign_on_event(
    tenant     text,
    user_id    uuid,
    event_type text,
    event_data jsonb,
    event_id   uuid)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_variable
DECLARE
    ts       timestamptz := revenue_engine.clock_now();
    contacts bigint[];
    ids      bigint[];
    ct       bigint;
    ctx      jsonb;
    n        integer := 0;
BEGIN
    SELECT array_agg(k.id ORDER BY k.id) INTO contacts FROM revenue_engine.contacts k
     WHERE k.tenant_id = tenant AND k.user_id = user_id;
    IF contacts IS NULL THEN
        RETURN 0;
    END IF;
    IF jsonb_typeof(event_data) <> 'object' THEN
        event_data := '{}';
    END IF;

    -- Per contact (usually one), with scalar keys: a plan made before the
    -- tables were analyzed then still probes enrollments_contact_idx by
    -- (tenant, contact), not every open enrollment of the tenant.
    FOREACH ct IN ARRAY contacts LOOP
        -- exit rules of the enrollment's own version
        SELECT array_agg(e.id) INTO ids
          FROM revenue_engine.enrollments e
          JOIN revenue_engine.campaign_versions v
            ON v.tenant_id = e.tenant_id AND v.campaign_id = e.campaign_id AND v.version = e.version
         WHERE e.tenant_id = tenant AND e.contact_id = ct AND e.status = 'active'
           AND EXISTS (SELECT 1 FROM jsonb_array_elements(v.exit_rules) AS r(rule)
                        WHERE r.rule ->> 'event_type' = event_type
                          AND (NOT r.rule ? 'match_key'
                               OR e.context ->> (r.rule ->> 'match_key') = event_data ->> (r.rule ->> 'match_key')));
        IF ids IS NOT NULL THEN
            n := n + revenue_engine.campaign_stop_enrollments(tenant, ids, 'exit rule: ' || event_type);
        END IF;

        -- enrollments waiting for this event: locked, moved on, due now
        WITH w AS (
            UPDATE revenue_engine.enrollments e
               SET step = e.step + 1, step_started_at = ts, next_run_at = ts, updated_at = ts
              FROM revenue_engine.campaign_steps s
             WHERE e.tenant_id = tenant AND e.contact_id = ct AND e.status = 'active'
               AND s.tenant_id = e.tenant_id AND s.campaign_id = e.campaign_id AND s.version = e.version
               AND s.position = e.step AND s.kind = 'wait_event' AND s.event_type = event_type
               AND (s.match_key IS NULL OR e.context ->> s.match_key = event_data ->> s.match_key)
            RETURNING e.id, e.campaign_id, e.version, e.step - 1 AS waited)
        INSERT INTO revenue_engine.enrollment_history
               (tenant_id, enrollment_id, campaign_id, version, step, event, reason, detail, at)
        SELECT tenant, w.id, w.campaign_id, w.version, w.waited, 'resumed', 'event ' || event_type,
               jsonb_build_object('event_id', event_id), ts
          FROM w;
        IF FOUND THEN
            PERFORM revenue_engine.wake_worker();
        END IF;
    END LOOP;

    -- campaigns this event type triggers
    IF EXISTS (SELECT 1 FROM revenue_engine.campaigns cp
                WHERE cp.tenant_id = tenant AND cp.trigger_kind = 'event'
                  AND cp.trigger_value = event_type AND cp.status = 'active') THEN
        ctx := event_data || jsonb_build_object('event_type', event_type, 'event_id', event_id);
        FOREACH ct IN ARRAY contacts LOOP
            n := n + revenue_engine.campaign_trigger_enroll(tenant, 'event', event_type, ct, ctx);
        END LOOP;
    END IF;
    RETURN n;
END
$fn$;

/*
 * Blast follow-ups: for each active blast_no_reply campaign, the recipients
 * of its tag's blasts sent more than trigger_after ago without a reply, and
 * with a contact of that phone, are enrolled once: campaigns.followups_until
 * remembers up to which send time they were taken (at first the campaign's
 * creation less trigger_after).  Called by the worker every few seconds; a
 * campaign another call holds is skipped.  The number of enrollments.
 */
CREATE FUNCTION revenue_engine.campaign_blast_followups(now timestamptz)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_variable
DECLARE
    t       record;
    c       record;
    r       record;
    cutoff  timestamptz;
    since   timestamptz;
    n       integer := 0;
    ctx     jsonb;
BEGIN
    IF now IS NULL THEN
        RAISE EXCEPTION 'now must not be null' USING ERRCODE = '22004';
    END IF;
    -- The campaigns of every tenant (a small table), then each one locked by
    -- its key (one tenant per statement: Citus locks no rows across shards).
    FOR t IN SELECT cp.tenant_id, cp.id FROM revenue_engine.campaigns cp
              WHERE cp.trigger_kind = 'blast_no_reply' AND cp.status = 'active'
              ORDER BY cp.tenant_id, cp.id
    LOOP
        SELECT cp.tenant_id, cp.id, cp.trigger_value, cp.trigger_after, cp.followups_until, cp.created_at
          INTO c
          FROM revenue_engine.campaigns cp
         WHERE cp.tenant_id = t.tenant_id AND cp.id = t.id
           AND cp.trigger_kind = 'blast_no_reply' AND cp.status = 'active'
           FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        cutoff := now - coalesce(c.trigger_after, interval '0');
        since := coalesce(c.followups_until, c.created_at - coalesce(c.trigger_after, interval '0'));
        CONTINUE WHEN cutoff <= since;
        FOR r IN SELECT DISTINCT ON (k.id) k.id AS contact_id, br.id AS recipient_id, b.id AS blast_id
                   FROM revenue_engine.blasts b
                   JOIN revenue_engine.blast_recipients br
                     ON br.tenant_id = b.tenant_id AND br.blast_id = b.id
                   JOIN revenue_engine.contacts k ON k.tenant_id = br.tenant_id AND k.phone = br.phone
                  WHERE b.tenant_id = c.tenant_id AND b.tag = c.trigger_value
                    AND br.sent_at > since AND br.sent_at <= cutoff
                    AND br.replied_at IS NULL AND br.status IN ('sent', 'delivered', 'read')
                  ORDER BY k.id, br.sent_at DESC
        LOOP
            ctx := jsonb_build_object('trigger', 'blast_no_reply', 'blast_id', r.blast_id,
                                      'blast_tag', c.trigger_value, 'recipient_id', r.recipient_id);
            IF revenue_engine.enroll_internal(c.tenant_id, c.id, r.contact_id, ctx, NULL, 'blast_no_reply',
                                              revenue_engine.campaign_entry_key(c.tenant_id, c.id, ctx))
               IS NOT NULL THEN
                n := n + 1;
            END IF;
        END LOOP;
        UPDATE revenue_engine.campaigns cp SET followups_until = cutoff
         WHERE cp.tenant_id = c.tenant_id AND cp.id = c.id;
    END LOOP;
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION revenue_engine.campaign_blast_followups(timestamptz) IS
    'internal (the worker): enroll blast recipients without a reply after the campaign''s delay in the active blast_no_reply campaigns; how many';

/*
 * The outbox trigger (enroll.c).  It is on track_daily_usage's path: for an
 * event type no campaign of the tenant names (trigger, wait_event step, exit
 * rule), it costs a look-up in a per-backend cache, which the trigger below
 * empties in every backend when campaigns, versions or steps change.
 */
CREATE FUNCTION revenue_engine.campaign_event_trigger()
RETURNS trigger
LANGUAGE C
AS 'MODULE_PATHNAME', 're_campaign_event_trigger';
CREATE TRIGGER campaign_event
    AFTER INSERT ON revenue_engine.webhook_events
    FOR EACH ROW EXECUTE FUNCTION revenue_engine.campaign_event_trigger();

CREATE FUNCTION revenue_engine.campaign_hooks_changed()
RETURNS trigger
LANGUAGE C
AS 'MODULE_PATHNAME', 're_campaign_hooks_changed';
CREATE TRIGGER campaign_hooks_changed
    AFTER INSERT OR DELETE OR TRUNCATE ON revenue_engine.campaigns
    FOR EACH STATEMENT EXECUTE FUNCTION revenue_engine.campaign_hooks_changed();
CREATE TRIGGER campaign_hooks_updated
    AFTER UPDATE ON revenue_engine.campaigns
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status
                       OR OLD.trigger_kind IS DISTINCT FROM NEW.trigger_kind
                       OR OLD.trigger_value IS DISTINCT FROM NEW.trigger_value)
    EXECUTE FUNCTION revenue_engine.campaign_hooks_changed();
CREATE TRIGGER campaign_hooks_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON revenue_engine.campaign_versions
    FOR EACH STATEMENT EXECUTE FUNCTION revenue_engine.campaign_hooks_changed();
CREATE TRIGGER campaign_hooks_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON revenue_engine.campaign_steps
    FOR EACH STATEMENT EXECUTE FUNCTION revenue_engine.campaign_hooks_changed();

REVOKE ALL ON FUNCTION revenue_engine.enroll_internal(text, bigint, bigint, jsonb, timestamptz, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION revenue_engine.campaign_entry_key(text, bigint, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION revenue_engine.campaign_trigger_enroll(text, text, text, bigint, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION revenue_engine.campaign_stop_enrollments(text, bigint[], text) FROM PUBLIC;
REVOKE ALL ON FUNCTION revenue_engine.campaign_stop_contact(text, bigint, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION revenue_engine.campaign_open_enrollments(text, bigint, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION revenue_engine.campaign_contact_inserted() FROM PUBLIC;
REVOKE ALL ON FUNCTION revenue_engine.campaign_contact_tagged() FROM PUBLIC;
REVOKE ALL ON FUNCTION revenue_engine.campaign_consent_withdrawn() FROM PUBLIC;
REVOKE ALL ON FUNCTION revenue_engine.campaign_on_event(text, uuid, text, jsonb, uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION revenue_engine.campaign_blast_followups(timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION revenue_engine.campaign_event_trigger() FROM PUBLIC;
REVOKE ALL ON FUNCTION revenue_engine.campaign_rows_copied() FROM PUBLIC;
REVOKE ALL ON FUNCTION revenue_engine.campaign_hooks_changed() FROM PUBLIC;
REVOKE ALL ON FUNCTION revenue_engine.enroll(text, text, jsonb, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION revenue_engine.exit_enrollment(text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION revenue_engine.enroll(text, text, jsonb, timestamptz) TO revenue_engine_user;
GRANT EXECUTE ON FUNCTION revenue_engine.exit_enrollment(text, text, text) TO revenue_engine_user;
