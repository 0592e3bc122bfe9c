/*
 * usage: per-user settings, daily and lifetime counters, milestone ladders,
 * daily goals, streaks and feature first use.  track_daily_usage is in C
 * (usage.c); backfill and settings are set-based SQL.
 */

-- Settings of a usage type that differ from the built-in defaults.
CREATE TABLE revenue_engine.usage_types (
    usage_type        text      NOT NULL PRIMARY KEY,
    milestones        bigint[]  NOT NULL,
    streak_milestones integer[] NOT NULL,
    daily_goal        integer,
    is_feature        boolean   NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT usage_types_daily_goal_check CHECK (daily_goal > 0)
);
COMMENT ON TABLE revenue_engine.usage_types IS
    'usage types whose settings differ from the built-in defaults; write it with revenue_engine.set_usage_type()';
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.usage_types', '');

CREATE TABLE revenue_engine.user_profiles (
    tenant_id   text        NOT NULL DEFAULT revenue_engine.current_tenant(),
    user_id     uuid        NOT NULL,
    timezone    text        NOT NULL DEFAULT 'UTC',
    daily_goals jsonb       NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, user_id),
    CONSTRAINT user_profiles_daily_goals_check
        CHECK (pg_catalog.jsonb_typeof(daily_goals) = 'object')
);
COMMENT ON TABLE revenue_engine.user_profiles IS
    'per-user time zone and daily goals; write it with revenue_engine.set_user_profile()';
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.user_profiles', '');

-- Updated in place many times a day: leave room on the page for HOT updates.
CREATE TABLE revenue_engine.daily_usage (
    tenant_id        text    NOT NULL,
    user_id          uuid    NOT NULL,
    usage_type       text    NOT NULL,
    usage_date       date    NOT NULL,
    count            bigint  NOT NULL,
    backfilled_count bigint  NOT NULL DEFAULT 0,
    goal             integer,
    goal_achieved_at timestamptz,
    streak_days      integer,
    PRIMARY KEY (tenant_id, user_id, usage_type, usage_date)
) WITH (fillfactor = 70);
COMMENT ON TABLE revenue_engine.daily_usage IS
    'usage per user, usage type and local calendar day of the user';
COMMENT ON COLUMN revenue_engine.daily_usage.backfilled_count IS
    'the part of count set by backfill_usage (replaced, not added, when backfill runs again)';
COMMENT ON COLUMN revenue_engine.daily_usage.streak_days IS
    'consecutive local days with the goal achieved, ending on this day (NULL unless achieved)';
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.daily_usage', '');

CREATE TABLE revenue_engine.lifetime_usage (
    tenant_id           text        NOT NULL,
    user_id             uuid        NOT NULL,
    usage_type          text        NOT NULL,
    total               bigint      NOT NULL,
    backfilled_total    bigint      NOT NULL DEFAULT 0,
    first_used_at       timestamptz NOT NULL,
    last_used_at        timestamptz NOT NULL,
    latest_milestone    bigint,
    latest_milestone_at timestamptz,
    current_streak      integer     NOT NULL DEFAULT 0,
    streak_end_date     date,
    best_streak         integer     NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, user_id, usage_type)
) WITH (fillfactor = 70);
COMMENT ON TABLE revenue_engine.lifetime_usage IS
    'lifetime usage per user and usage type';
COMMENT ON COLUMN revenue_engine.lifetime_usage.current_streak IS
    'length of the most recent run of goal days, which ends on streak_end_date';
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.lifetime_usage', '');

-- One row per (user, usage type, threshold), ever: the primary key is the guarantee.
CREATE TABLE revenue_engine.milestones_reached (
    tenant_id      text        NOT NULL,
    user_id        uuid        NOT NULL,
    usage_type     text        NOT NULL,
    milestone      bigint      NOT NULL,
    reached_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
    lifetime_total bigint      NOT NULL,
    backfilled     boolean     NOT NULL DEFAULT false,
    event_id       uuid,
    PRIMARY KEY (tenant_id, user_id, usage_type, milestone)
);
COMMENT ON TABLE revenue_engine.milestones_reached IS
    'every milestone each user reached, exactly once; backfilled rows emitted no event';
SELECT pg_catalog.pg_extension_config_dump('revenue_engine.milestones_reached', '');

-- track_daily_usage caches the usage types' settings per backend; a change
-- resets the caches of every backend (a relcache invalidation: usage types
-- change rarely).  Profiles are read by primary key on every call: their
-- writes invalidate nothing.
CREATE FUNCTION revenue_engine.invalidate_cache()
RETURNS trigger
LANGUAGE C
AS 'MODULE_PATHNAME', 're_invalidate_cache';
CREATE TRIGGER usage_types_invalidate_cache
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON revenue_engine.usage_types
    FOR EACH STATEMENT EXECUTE FUNCTION revenue_engine.invalidate_cache();

CREATE FUNCTION revenue_engine.track_daily_usage(
    user_id    uuid,
    usage_type text,
    count      integer DEFAULT 1,
    usage_date date DEFAULT NULL)
RETURNS jsonb
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 're_track_daily_usage';
COMMENT ON FUNCTION revenue_engine.track_daily_usage(uuid, text, integer, date) IS
    'count usage for a user on their local day; records milestones, goals, streaks and first use, and writes their events';

-- The built-in settings, for every usage type the extension knows by name.
CREATE FUNCTION revenue_engine.builtin_usage_types(
    OUT usage_type text, OUT milestones bigint[], OUT streak_milestones integer[],
    OUT daily_goal integer, OUT is_feature boolean)
RETURNS SETOF record
LANGUAGE C IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 're_builtin_usage_types';

-- The built-in settings of any usage type (the defaults for a type not listed).
CREATE FUNCTION revenue_engine.builtin_usage_type(
    usage_type text,
    OUT milestones bigint[], OUT streak_milestones integer[],
    OUT daily_goal integer, OUT is_feature boolean)
RETURNS record
LANGUAGE C IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 're_builtin_usage_type';

-- A time zone name as PostgreSQL spells it, or error 22023.
CREATE FUNCTION revenue_engine.canonical_timezone(timezone text)
RETURNS text
LANGUAGE C STABLE
AS 'MODULE_PATHNAME', 're_canonical_timezone';

-- Validates a usage type name; raises 22004/22023 or returns it unchanged.
CREATE FUNCTION revenue_engine.check_usage_type(usage_type text)
RETURNS text
LANGUAGE C IMMUTABLE
AS 'MODULE_PATHNAME', 're_check_usage_type';

CREATE VIEW revenue_engine.usage_type_settings AS
SELECT t.usage_type, t.milestones, t.streak_milestones, t.daily_goal, t.is_feature,
       true AS customized
  FROM revenue_engine.usage_types t
UNION ALL
SELECT b.usage_type, b.milestones, b.streak_milestones, b.daily_goal, b.is_feature,
       false
  FROM revenue_engine.builtin_usage_types() b
 WHERE NOT EXISTS (SELECT 1 FROM revenue_engine.usage_types t
                    WHERE t.usage_type OPERATOR(pg_catalog.=) b.usage_type);
COMMENT ON VIEW revenue_engine.usage_type_settings IS
    'the settings in effect for every usage type that is configured or built in';

CREATE FUNCTION revenue_engine.set_usage_type(
    usage_type        text,
    milestones        bigint[]  DEFAULT NULL,
    streak_milestones integer[] DEFAULT NULL,
    daily_goal        integer   DEFAULT NULL,
    is_feature        boolean   DEFAULT NULL,
    clear_daily_goal  boolean   DEFAULT false)
RETURNS revenue_engine.usage_types
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    cur  revenue_engine.usage_types;
    b    record;
    v    bigint;
    prev bigint;
    row  revenue_engine.usage_types;
BEGIN
    PERFORM revenue_engine.check_usage_type(set_usage_type.usage_type);

    FOREACH v IN ARRAY coalesce(set_usage_type.milestones, '{}'::bigint[]) || coalesce(set_usage_type.streak_milestones::bigint[], '{}'::bigint[])
    LOOP
        IF v IS NULL OR v <= 0 THEN
            RAISE EXCEPTION 'milestone % is not a positive number', coalesce(v::text, 'NULL')
                USING ERRCODE = '22023',
                      HINT = 'A ladder is a list of increasing positive thresholds, such as ''{1,10,50,100}''.';
        END IF;
    END LOOP;
    prev := NULL;
    FOREACH v IN ARRAY coalesce(set_usage_type.milestones, '{}'::bigint[]) LOOP
        IF prev IS NOT NULL AND v <= prev THEN
            RAISE EXCEPTION 'milestones % are not strictly increasing', set_usage_type.milestones
                USING ERRCODE = '22023',
                      HINT = 'List each threshold once, smallest first, such as ''{1,10,50,100}''.';
        END IF;
        prev := v;
    END LOOP;
    prev := NULL;
    FOREACH v IN ARRAY coalesce(set_usage_type.streak_milestones::bigint[], '{}'::bigint[]) LOOP
        IF prev IS NOT NULL AND v <= prev THEN
            RAISE EXCEPTION 'streak milestones % are not strictly increasing', set_usage_type.streak_milestones
                USING ERRCODE = '22023',
                      HINT = 'List each number of days once, smallest first, such as ''{1,7,30}''.';
        END IF;
        prev := v;
    END LOOP;
    IF set_usage_type.daily_goal IS NOT NULL AND set_usage_type.daily_goal <= 0 THEN
        RAISE EXCEPTION 'daily goal % is not a positive number', set_usage_type.daily_goal
            USING ERRCODE = '22023',
                  HINT = 'Pass clear_daily_goal => true to remove the goal.';
    END IF;

    SELECT * INTO cur FROM revenue_engine.usage_types t
     WHERE t.usage_type = set_usage_type.usage_type FOR UPDATE;
    IF NOT FOUND THEN
        SELECT * INTO b FROM revenue_engine.builtin_usage_type(set_usage_type.usage_type);
        cur.usage_type := set_usage_type.usage_type;
        cur.milestones := b.milestones;
        cur.streak_milestones := b.streak_milestones;
        cur.daily_goal := b.daily_goal;
        cur.is_feature := b.is_feature;
    END IF;

    INSERT INTO revenue_engine.usage_types AS t
           (usage_type, milestones, streak_milestones, daily_goal, is_feature, updated_at)
    VALUES (cur.usage_type,
            coalesce(set_usage_type.milestones, cur.milestones),
            coalesce(set_usage_type.streak_milestones, cur.streak_milestones),
            CASE WHEN clear_daily_goal THEN NULL
                 ELSE coalesce(set_usage_type.daily_goal, cur.daily_goal) END,
            coalesce(set_usage_type.is_feature, cur.is_feature),
            now())
    ON CONFLICT ON CONSTRAINT usage_types_pkey DO UPDATE
       SET milestones = excluded.milestones,
           streak_milestones = excluded.streak_milestones,
           daily_goal = excluded.daily_goal,
           is_feature = excluded.is_feature,
           updated_at = excluded.updated_at
    RETURNING * INTO row;
    RETURN row;
END
$fn$;
COMMENT ON FUNCTION revenue_engine.set_usage_type(text, bigint[], integer[], integer, boolean, boolean) IS
    'configure a usage type: milestone ladder, streak ladder, default daily goal, feature flag (NULL keeps the current value)';

-- Back to the built-in settings.
-- PL/pgSQL, not SQL: Citus plans no statement with parameters in a SQL function.
CREATE FUNCTION revenue_engine.reset_usage_type(usage_type text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM revenue_engine.check_usage_type(reset_usage_type.usage_type);
    DELETE FROM revenue_engine.usage_types t WHERE t.usage_type = reset_usage_type.usage_type;
    RETURN FOUND;
END
$fn$;

CREATE FUNCTION revenue_engine.set_user_profile(
    user_id     uuid,
    timezone    text  DEFAULT NULL,
    daily_goals jsonb DEFAULT NULL)
RETURNS revenue_engine.user_profiles
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    tz    text;
    k     text;
    v     jsonb;
    goals jsonb;
    row   revenue_engine.user_profiles;
    -- the tenant and the time, once per call, are parameters of the
    -- statements (Citus routes by tenant_id = $n and evaluates no STABLE
    -- function on columns in ON CONFLICT ... DO UPDATE)
    tenant text := revenue_engine.current_tenant();
    ts    timestamptz := now();
BEGIN
    IF set_user_profile.user_id IS NULL THEN
        RAISE EXCEPTION 'user_id must not be null' USING ERRCODE = '22004';
    END IF;
    IF set_user_profile.timezone IS NOT NULL THEN
        tz := revenue_engine.canonical_timezone(set_user_profile.timezone);
    END IF;
    IF set_user_profile.daily_goals IS NOT NULL THEN
        IF jsonb_typeof(set_user_profile.daily_goals) <> 'object' THEN
            RAISE EXCEPTION 'daily_goals must be a JSON object, not %', set_user_profile.daily_goals
                USING ERRCODE = '22023',
                      HINT = 'Map usage types to goals, such as ''{"reply": 20}''; null removes a goal.';
        END IF;
        FOR k, v IN SELECT * FROM jsonb_each(set_user_profile.daily_goals) LOOP
            PERFORM revenue_engine.check_usage_type(k);
            IF jsonb_typeof(v) <> 'null' AND (jsonb_typeof(v) <> 'number'
                    OR v::numeric <> trunc(v::numeric) OR v::numeric <= 0 OR v::numeric > 2147483647) THEN
                RAISE EXCEPTION 'daily goal % for usage type "%" is not a positive integer', v, k
                    USING ERRCODE = '22023',
                          HINT = 'Map usage types to goals, such as ''{"reply": 20}''; null removes a goal.';
            END IF;
        END LOOP;
    END IF;

    SELECT p.daily_goals INTO goals FROM revenue_engine.user_profiles p
     WHERE p.tenant_id = tenant
       AND p.user_id = set_user_profile.user_id;
    goals := jsonb_strip_nulls(coalesce(goals, '{}') || coalesce(set_user_profile.daily_goals, '{}'));

    INSERT INTO revenue_engine.user_profiles AS p
           (tenant_id, user_id, timezone, daily_goals, created_at, updated_at)
    VALUES (tenant, set_user_profile.user_id, coalesce(tz, 'UTC'), goals, ts, ts)
    ON CONFLICT ON CONSTRAINT user_profiles_pkey DO UPDATE
       SET timezone = coalesce(tz, p.timezone),
           daily_goals = excluded.daily_goals,
           updated_at = excluded.updated_at
    RETURNING * INTO row;
    RETURN row;
END
$fn$;
COMMENT ON FUNCTION revenue_engine.set_user_profile(uuid, text, jsonb) IS
    'set a user''s IANA time zone and daily goals per usage type (merged; a null goal removes it)';

-- Lifetime figures per user and usage type, with the streak as of the user's today.
CREATE VIEW revenue_engine.user_lifetime_stats AS
SELECT l.tenant_id,
       l.user_id,
       l.usage_type,
       l.total AS lifetime_total,
       l.first_used_at,
       l.last_used_at,
       l.latest_milestone,
       l.latest_milestone_at,
       (SELECT count(*) FROM revenue_engine.milestones_reached m
         WHERE m.tenant_id = l.tenant_id AND m.user_id = l.user_id
           AND m.usage_type = l.usage_type) AS milestones_reached,
       CASE WHEN l.streak_end_date >= (pg_catalog.timezone(coalesce(p.timezone, 'UTC'), revenue_engine.clock_now()))::date - 1
            THEN l.current_streak ELSE 0 END AS current_streak,
       l.best_streak,
       coalesce(p.timezone, 'UTC') AS timezone
  FROM revenue_engine.lifetime_usage l
  LEFT JOIN revenue_engine.user_profiles p
         ON p.tenant_id = l.tenant_id AND p.user_id = l.user_id;
COMMENT ON VIEW revenue_engine.user_lifetime_stats IS
    'lifetime total, first use, latest milestone and streaks per user and usage type';


/*
 * backfill_usage: build counters, milestones, goals and streaks from the
 * application's history.  The count of a (user, usage type, day) the query
 * returns replaces what an earlier backfill set for that day (tracked usage
 * is kept), so a second run changes nothing.  Milestones and goals it finds
 * already passed are marked reached without events unless emit_events is
 * true.  The caller's half (backfill.c) runs the query as the caller, casts
 * its columns to uuid, text, date and bigint as the caller, and builds the
 * events' user objects as the caller; backfill_apply, the owner's half,
 * receives those arrays only.
 */
CREATE FUNCTION revenue_engine.backfill_usage(query text, emit_events boolean DEFAULT false)
RETURNS jsonb
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 're_backfill_usage';
COMMENT ON FUNCTION revenue_engine.backfill_usage(text, boolean) IS
    'build counters, milestones, goals and streaks from a query of (user_id, usage_type, usage_date, count); idempotent';

-- One (user, usage type) of a backfill: its settings, time zone, today and days.
CREATE TYPE revenue_engine.backfill_pair AS (
    user_id    uuid,
    usage_type text,
    tz         text,
    goal       integer,
    milestones bigint[],
    is_feature boolean,
    today      date,
    first_date date,
    last_date  date,
    is_new     boolean);

/*
 * The owner's half of backfill_usage (backfill.c calls it inside the owner
 * scope; nobody else may execute it): the rows as four arrays, and the
 * user objects (payload_users, payloads) the caller built for the events.
 * It reads its arguments and the extension's tables only.
 */
CREATE FUNCTION revenue_engine.backfill_apply(
    user_ids uuid[], usage_types text[], usage_dates date[], counts bigint[],
    emit_events boolean, payload_users uuid[], payloads jsonb[])
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    tenant   text := revenue_engine.current_tenant();
    -- the times, once per call: parameters of the statements, as Citus needs
    -- (no STABLE function on columns in UPDATE, CASE or ON CONFLICT)
    ts       timestamptz := now();
    clock    timestamptz := revenue_engine.clock_now();
    bad      record;
    -- jsonb rows of revenue_engine.backfill_pair, read back with
    -- jsonb_populate_recordset: Citus sends a statement's parameters of the
    -- extension's own types untyped to the node that runs it, where one the
    -- statement does not use cannot be typed (an array of the type was)
    pairs    jsonb;
    n_ms     bigint;
    g_users  uuid[];
    g_types  text[];
    g_dates  date[];
    n_new    bigint;
BEGIN
    SELECT * INTO bad
      FROM unnest(user_ids, usage_types, usage_dates, counts) AS s(user_id, usage_type, usage_date, count)
     WHERE s.user_id IS NULL OR s.usage_type IS NULL OR s.usage_date IS NULL OR s.count IS NULL
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'backfill row (%, %, %, %) has a null column',
              coalesce(bad.user_id::text, 'NULL'), coalesce(bad.usage_type, 'NULL'),
              coalesce(bad.usage_date::text, 'NULL'), coalesce(bad.count::text, 'NULL')
            USING ERRCODE = '22004';
    END IF;
    SELECT * INTO bad
      FROM unnest(user_ids, usage_types, usage_dates, counts) AS s(user_id, usage_type, usage_date, count)
     WHERE s.count <= 0 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'backfill count % for user %, usage type "%", day % is not positive',
              bad.count, bad.user_id, bad.usage_type, bad.usage_date
            USING ERRCODE = '22023';
    END IF;
    PERFORM revenue_engine.check_usage_type(t.usage_type)
       FROM (SELECT DISTINCT u.usage_type FROM unnest(usage_types) AS u(usage_type)) t;

    -- One row per (user, type): settings, time zone and the user's today.
    pairs := (
        SELECT coalesce(jsonb_agg(x), '[]') FROM (
            SELECT s.user_id, s.usage_type,
                   coalesce(p.timezone, 'UTC') AS tz,
                   coalesce((p.daily_goals ->> s.usage_type)::integer,
                            CASE WHEN t.usage_type IS NOT NULL THEN t.daily_goal ELSE b.daily_goal END) AS goal,
                   CASE WHEN t.usage_type IS NOT NULL THEN t.milestones ELSE b.milestones END AS milestones,
                   CASE WHEN t.usage_type IS NOT NULL THEN t.is_feature ELSE b.is_feature END AS is_feature,
                   timezone(coalesce(p.timezone, 'UTC'), clock)::date AS today,
                   min(s.usage_date) AS first_date, max(s.usage_date) AS last_date,
                   NOT EXISTS (SELECT 1 FROM revenue_engine.lifetime_usage l
                                WHERE l.tenant_id = tenant AND l.user_id = s.user_id
                                  AND l.usage_type = s.usage_type) AS is_new
              FROM unnest(user_ids, usage_types, usage_dates) AS s(user_id, usage_type, usage_date)
              LEFT JOIN revenue_engine.user_profiles p
                     ON p.tenant_id = tenant AND p.user_id = s.user_id
              LEFT JOIN revenue_engine.usage_types t ON t.usage_type = s.usage_type
              CROSS JOIN LATERAL revenue_engine.builtin_usage_type(s.usage_type) b
             GROUP BY 1, 2, 3, 4, 5, 6, 7, 10) x);

    SELECT s.*, pr.tz, pr.today INTO bad
      FROM unnest(user_ids, usage_types, usage_dates) AS s(user_id, usage_type, usage_date)
      JOIN jsonb_populate_recordset(NULL::revenue_engine.backfill_pair, pairs) pr ON pr.user_id = s.user_id AND pr.usage_type = s.usage_type
     WHERE s.usage_date > pr.today LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'backfill day % for user % is in the future', bad.usage_date, bad.user_id
            USING ERRCODE = '22008',
                  DETAIL = format('Today is %s in the user''s time zone %s.', bad.today, bad.tz);
    END IF;

    -- Daily counters: this backfill's count replaces the previous backfill's.
    WITH agg AS (
        SELECT s.user_id, s.usage_type, s.usage_date, sum(s.count) AS count
          FROM unnest(user_ids, usage_types, usage_dates, counts) AS s(user_id, usage_type, usage_date, count)
         GROUP BY 1, 2, 3
    ), delta AS (
        SELECT a.user_id, a.usage_type, a.count - coalesce(d.backfilled_count, 0) AS delta
          FROM agg a
          LEFT JOIN revenue_engine.daily_usage d
                 ON d.tenant_id = tenant AND d.user_id = a.user_id
                AND d.usage_type = a.usage_type AND d.usage_date = a.usage_date
    ), upd AS (
        INSERT INTO revenue_engine.daily_usage AS d
               (tenant_id, user_id, usage_type, usage_date, count, backfilled_count)
        SELECT tenant, a.user_id, a.usage_type, a.usage_date, a.count, a.count FROM agg a
        ON CONFLICT (tenant_id, user_id, usage_type, usage_date) DO UPDATE
           SET count = d.count - d.backfilled_count + excluded.backfilled_count,
               backfilled_count = excluded.backfilled_count
        RETURNING 1
    ), per_pair AS (
        SELECT x.user_id, x.usage_type, sum(x.delta) AS delta
          FROM delta x GROUP BY 1, 2
    )
    INSERT INTO revenue_engine.lifetime_usage AS l
           (tenant_id, user_id, usage_type, total, backfilled_total, first_used_at, last_used_at)
    SELECT tenant, pp.user_id, pp.usage_type, pp.delta, pp.delta,
           pr.first_date::timestamp AT TIME ZONE pr.tz,
           pr.last_date::timestamp AT TIME ZONE pr.tz
      FROM per_pair pp
      JOIN jsonb_populate_recordset(NULL::revenue_engine.backfill_pair, pairs) pr ON pr.user_id = pp.user_id AND pr.usage_type = pp.usage_type
     WHERE (SELECT count(*) FROM upd) >= 0
    ON CONFLICT (tenant_id, user_id, usage_type) DO UPDATE
       SET total = l.total + excluded.total,
           backfilled_total = l.backfilled_total + excluded.backfilled_total,
           first_used_at = least(l.first_used_at, excluded.first_used_at),
           last_used_at = greatest(l.last_used_at, excluded.last_used_at);

    -- Milestones already passed: each recorded once; events only when asked.
    WITH ins AS (
        INSERT INTO revenue_engine.milestones_reached AS m
               (tenant_id, user_id, usage_type, milestone, lifetime_total, backfilled, event_id)
        SELECT tenant, pr.user_id, pr.usage_type, ms.milestone, l.total, NOT emit_events,
               CASE WHEN emit_events THEN gen_random_uuid() END
          FROM jsonb_populate_recordset(NULL::revenue_engine.backfill_pair, pairs) pr
          JOIN revenue_engine.lifetime_usage l
            ON l.tenant_id = tenant AND l.user_id = pr.user_id AND l.usage_type = pr.usage_type
         CROSS JOIN LATERAL unnest(pr.milestones) AS ms(milestone)
         WHERE ms.milestone <= l.total
        ON CONFLICT DO NOTHING
        RETURNING m.user_id, m.usage_type, m.milestone, m.lifetime_total, m.event_id
    ), latest AS (
        UPDATE revenue_engine.lifetime_usage l
           SET latest_milestone = x.milestone, latest_milestone_at = ts
          FROM (SELECT i.user_id, i.usage_type, max(i.milestone) AS milestone
                  FROM ins i GROUP BY 1, 2) x
         WHERE l.tenant_id = tenant AND l.user_id = x.user_id AND l.usage_type = x.usage_type
           AND (l.latest_milestone IS NULL OR x.milestone > l.latest_milestone)
        RETURNING 1
    ), events AS (
        INSERT INTO revenue_engine.webhook_events
               (tenant_id, id, user_id, event_type, event_data, user_data)
        SELECT tenant, i.event_id, i.user_id, 'milestone_reached',
               jsonb_build_object('usage_type', i.usage_type, 'milestone_type', i.usage_type,
                                  'milestone_value', i.milestone, 'lifetime_total', i.lifetime_total,
                                  'is_first', pr.milestones[1] = i.milestone, 'backfilled', true),
               u.user_data
          FROM ins i
          JOIN jsonb_populate_recordset(NULL::revenue_engine.backfill_pair, pairs) pr ON pr.user_id = i.user_id AND pr.usage_type = i.usage_type
          LEFT JOIN unnest(payload_users, payloads) AS u(user_id, user_data) ON u.user_id = i.user_id
         WHERE emit_events
        RETURNING 1
    )
    SELECT count(*) INTO n_ms FROM ins;

    -- Goals reached on days not yet marked.
    WITH g AS (
        UPDATE revenue_engine.daily_usage d
           SET goal = pr.goal,
               -- the end of the user's day: its next midnight less 1 us, taken
               -- in UTC (timestamptz - interval is STABLE, which Citus takes in
               -- no UPDATE with columns; the same instant)
               goal_achieved_at = least(ts, timezone('UTC', timezone('UTC', (d.usage_date + 1)::timestamp AT TIME ZONE pr.tz)
                                                            - interval '1 microsecond'))
          FROM jsonb_populate_recordset(NULL::revenue_engine.backfill_pair, pairs) pr
         WHERE d.tenant_id = tenant AND d.user_id = pr.user_id AND d.usage_type = pr.usage_type
           AND d.goal_achieved_at IS NULL AND pr.goal IS NOT NULL AND d.count >= pr.goal
        RETURNING d.user_id, d.usage_type, d.usage_date
    )
    SELECT coalesce(array_agg(g.user_id), '{}'), coalesce(array_agg(g.usage_type), '{}'),
           coalesce(array_agg(g.usage_date), '{}')
      INTO g_users, g_types, g_dates
      FROM g;

    -- Streaks: recompute every run of consecutive goal days of the pairs touched.
    WITH a AS (
        SELECT d.user_id, d.usage_type, d.usage_date,
               d.usage_date - (row_number() OVER w)::integer AS grp
          FROM revenue_engine.daily_usage d
          JOIN jsonb_populate_recordset(NULL::revenue_engine.backfill_pair, pairs) pr
            ON d.tenant_id = tenant AND d.user_id = pr.user_id AND d.usage_type = pr.usage_type
         WHERE d.goal_achieved_at IS NOT NULL
        WINDOW w AS (PARTITION BY d.user_id, d.usage_type ORDER BY d.usage_date)
    ), s AS (
        SELECT a.*, row_number() OVER (PARTITION BY a.user_id, a.usage_type, a.grp
                                       ORDER BY a.usage_date)::integer AS streak
          FROM a
    )
    UPDATE revenue_engine.daily_usage d
       SET streak_days = s.streak
      FROM s
     WHERE d.tenant_id = tenant AND d.user_id = s.user_id AND d.usage_type = s.usage_type
       AND d.usage_date = s.usage_date AND d.streak_days IS DISTINCT FROM s.streak;

    UPDATE revenue_engine.lifetime_usage l
       SET current_streak = x.current_streak, streak_end_date = x.streak_end_date,
           best_streak = greatest(l.best_streak, x.best_streak)
      FROM (SELECT DISTINCT ON (d.user_id, d.usage_type)
                   d.user_id, d.usage_type, d.streak_days AS current_streak,
                   d.usage_date AS streak_end_date,
                   max(d.streak_days) OVER (PARTITION BY d.user_id, d.usage_type) AS best_streak
              FROM revenue_engine.daily_usage d
              JOIN jsonb_populate_recordset(NULL::revenue_engine.backfill_pair, pairs) pr
                ON d.tenant_id = tenant AND d.user_id = pr.user_id AND d.usage_type = pr.usage_type
             WHERE d.goal_achieved_at IS NOT NULL
             ORDER BY d.user_id, d.usage_type, d.usage_date DESC) x
     WHERE l.tenant_id = tenant AND l.user_id = x.user_id AND l.usage_type = x.usage_type;

    SELECT count(*) INTO n_new FROM jsonb_populate_recordset(NULL::revenue_engine.backfill_pair, pairs) pr WHERE pr.is_new AND pr.is_feature;
    IF emit_events THEN
        INSERT INTO revenue_engine.webhook_events (tenant_id, user_id, event_type, event_data, user_data)
        SELECT tenant, g.user_id, 'daily_goal_achieved',
               jsonb_build_object('usage_type', g.usage_type, 'date', g.usage_date,
                                  'count', d.count, 'goal', d.goal, 'streak_days', d.streak_days,
                                  'streak_milestone',
                                  CASE WHEN d.streak_days = ANY (b.streak_milestones)
                                       THEN d.streak_days END,
                                  'backfilled', true),
               u.user_data
          FROM unnest(g_users, g_types, g_dates) AS g(user_id, usage_type, usage_date)
          JOIN revenue_engine.daily_usage d
            ON d.tenant_id = tenant AND d.user_id = g.user_id AND d.usage_type = g.usage_type
           AND d.usage_date = g.usage_date
          LEFT JOIN revenue_engine.usage_type_settings b ON b.usage_type = g.usage_type
          LEFT JOIN unnest(payload_users, payloads) AS u(user_id, user_data) ON u.user_id = g.user_id;

        INSERT INTO revenue_engine.webhook_events (tenant_id, user_id, event_type, event_data, user_data)
        SELECT tenant, pr.user_id, 'feature_first_used',
               jsonb_build_object('feature', pr.usage_type,
                                  'first_used_at', pr.first_date::timestamp AT TIME ZONE pr.tz,
                                  'backfilled', true),
               u.user_data
          FROM jsonb_populate_recordset(NULL::revenue_engine.backfill_pair, pairs) pr
          LEFT JOIN unnest(payload_users, payloads) AS u(user_id, user_data) ON u.user_id = pr.user_id
         WHERE pr.is_new AND pr.is_feature;
    END IF;

    RETURN jsonb_build_object(
               'rows', cardinality(user_ids),
               'users', (SELECT count(DISTINCT pr.user_id) FROM jsonb_populate_recordset(NULL::revenue_engine.backfill_pair, pairs) pr),
               'usage_days', (SELECT count(*) FROM (SELECT DISTINCT s.user_id, s.usage_type, s.usage_date
                                                      FROM unnest(user_ids, usage_types, usage_dates)
                                                           AS s(user_id, usage_type, usage_date)) d),
               'milestones_marked', n_ms,
               'goals_marked', cardinality(g_users),
               'features_first_used', n_new,
               'events_emitted', CASE WHEN emit_events THEN n_ms + cardinality(g_users) + n_new
                                      ELSE 0 END);
END
$fn$;

-- Functions are for the application role only; the tables are written through them.
-- Internal, no grant: backfill_apply (the owner's half), invalidate_cache (a trigger).
-- backfill_usage writes any user's history, so it is for the owner unless granted.
REVOKE ALL ON ALL TABLES IN SCHEMA revenue_engine FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA revenue_engine FROM PUBLIC;
REVOKE ALL ON FUNCTION
    revenue_engine.backfill_apply(uuid[], text[], date[], bigint[], boolean, uuid[], jsonb[])
  FROM PUBLIC, revenue_engine_user;
GRANT EXECUTE ON FUNCTION
    revenue_engine.track_daily_usage(uuid, text, integer, date),
    revenue_engine.set_user_profile(uuid, text, jsonb),
    revenue_engine.builtin_usage_types(),
    revenue_engine.builtin_usage_type(text),
    revenue_engine.canonical_timezone(text),
    revenue_engine.check_usage_type(text)
  TO revenue_engine_user;
GRANT SELECT ON revenue_engine.user_profiles, revenue_engine.daily_usage,
    revenue_engine.lifetime_usage, revenue_engine.milestones_reached,
    revenue_engine.usage_types, revenue_engine.usage_type_settings,
    revenue_engine.user_lifetime_stats
  TO revenue_engine_user;
