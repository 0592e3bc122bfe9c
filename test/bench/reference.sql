/*
 * Baselines for the track_daily_usage benchmark (test/bench/run.sh).
 *
 * Schema "bench" holds tables shaped like the extension's and two functions
 * with the same signature as revenue_engine.track_daily_usage(uuid, text, integer):
 *
 *   bench.track_daily_usage_plpgsql  the reference: how applications do it today,
 *                                    one plain PL/pgSQL function (plans cached
 *                                    per session, as PL/pgSQL does)
 *   bench.track_daily_usage_floor    the floor: a LANGUAGE sql function doing only
 *                                    the daily and the lifetime upserts
 *
 * The tenant is the constant 'default' (what revenue_engine.current_tenant()
 * returns in the benchmark); built-in 'reply' has the ladder 1,10,50,100,500,1000
 * and the daily goal 10 unless the user's profile says otherwise.
 */
CREATE SCHEMA bench;

CREATE TABLE bench.user_profiles (
    tenant_id   text        NOT NULL,
    user_id     uuid        NOT NULL,
    timezone    text        NOT NULL DEFAULT 'UTC',
    daily_goals jsonb       NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, user_id)
);

CREATE TABLE bench.daily_usage (
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

CREATE TABLE bench.lifetime_usage (
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

-- Like revenue_engine.webhook_events, with the same indexes.
CREATE TABLE bench.webhook_events (
    tenant_id       text        NOT NULL DEFAULT 'default',
    id              uuid        NOT NULL DEFAULT gen_random_uuid(),
    user_id         uuid,
    event_type      text        NOT NULL,
    event_data      jsonb       NOT NULL DEFAULT '{}',
    user_data       jsonb,
    status          text        NOT NULL DEFAULT 'pending',
    attempts        integer     NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    error_message   text,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT webhook_events_status_check CHECK (status IN ('pending', 'sent', 'failed')),
    CONSTRAINT webhook_events_attempts_check CHECK (attempts >= 0)
);
CREATE INDEX webhook_events_due_idx ON bench.webhook_events (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_events_user_idx ON bench.webhook_events (tenant_id, user_id, created_at);

/*
 * The reference.  Look up the user's time zone and goal, upsert the daily
 * row returning the day's count, mark the goal achieved once and write that
 * event, upsert the lifetime row, read the total back, find the milestone
 * crossed with an IF/ELSIF ladder, write the milestone event, build the reply.
 */
CREATE FUNCTION bench.track_daily_usage_plpgsql(
    p_user_id    uuid,
    p_usage_type text,
    p_count      integer DEFAULT 1)
RETURNS jsonb
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_tenant    constant text := 'default';
    v_tz        text;
    v_goal      integer;
    v_today     date;
    v_day_count bigint;
    v_achieved  boolean;
    v_goal_now  boolean := false;
    v_total     bigint;
    v_milestone bigint;
    v_prev      bigint;
BEGIN
    SELECT p.timezone, (p.daily_goals ->> p_usage_type)::integer
      INTO v_tz, v_goal
      FROM bench.user_profiles p
     WHERE p.tenant_id = v_tenant AND p.user_id = p_user_id;
    v_tz := coalesce(v_tz, 'UTC');
    IF v_goal IS NULL AND p_usage_type = 'reply' THEN
        v_goal := 10;
    END IF;
    v_today := (now() AT TIME ZONE v_tz)::date;

    INSERT INTO bench.daily_usage AS d (tenant_id, user_id, usage_type, usage_date, count)
    VALUES (v_tenant, p_user_id, p_usage_type, v_today, p_count)
    ON CONFLICT (tenant_id, user_id, usage_type, usage_date)
    DO UPDATE SET count = d.count + excluded.count
    RETURNING d.count, d.goal_achieved_at IS NOT NULL
         INTO v_day_count, v_achieved;

    IF NOT v_achieved AND v_goal IS NOT NULL AND v_day_count >= v_goal THEN
        UPDATE bench.daily_usage
           SET goal = v_goal, goal_achieved_at = now()
         WHERE tenant_id = v_tenant AND user_id = p_user_id
           AND usage_type = p_usage_type AND usage_date = v_today
           AND goal_achieved_at IS NULL;
        IF FOUND THEN
            v_goal_now := true;
            INSERT INTO bench.webhook_events (tenant_id, user_id, event_type, event_data)
            VALUES (v_tenant, p_user_id, 'daily_goal_achieved',
                    jsonb_build_object('usage_type', p_usage_type, 'date', v_today,
                                       'count', v_day_count, 'goal', v_goal));
        END IF;
    END IF;

    INSERT INTO bench.lifetime_usage AS l
           (tenant_id, user_id, usage_type, total, first_used_at, last_used_at)
    VALUES (v_tenant, p_user_id, p_usage_type, p_count, now(), now())
    ON CONFLICT (tenant_id, user_id, usage_type)
    DO UPDATE SET total = l.total + excluded.total, last_used_at = excluded.last_used_at;

    SELECT l.total INTO v_total
      FROM bench.lifetime_usage l
     WHERE l.tenant_id = v_tenant AND l.user_id = p_user_id AND l.usage_type = p_usage_type;

    v_prev := v_total - p_count;
    IF v_total >= 1000 AND v_prev < 1000 THEN
        v_milestone := 1000;
    ELSIF v_total >= 500 AND v_prev < 500 THEN
        v_milestone := 500;
    ELSIF v_total >= 100 AND v_prev < 100 THEN
        v_milestone := 100;
    ELSIF v_total >= 50 AND v_prev < 50 THEN
        v_milestone := 50;
    ELSIF v_total >= 10 AND v_prev < 10 THEN
        v_milestone := 10;
    ELSIF v_total >= 1 AND v_prev < 1 THEN
        v_milestone := 1;
    END IF;

    IF v_milestone IS NOT NULL THEN
        INSERT INTO bench.webhook_events (tenant_id, user_id, event_type, event_data)
        VALUES (v_tenant, p_user_id, 'milestone_reached',
                jsonb_build_object('usage_type', p_usage_type, 'milestone_type', p_usage_type,
                                   'milestone_value', v_milestone, 'lifetime_total', v_total,
                                   'is_first', v_milestone = 1, 'date', v_today));
    END IF;

    RETURN jsonb_build_object(
        'success', true,
        'usage_type', p_usage_type,
        'count', p_count,
        'date', v_today,
        'timezone', v_tz,
        'current_count', v_day_count,
        'daily_goal', v_goal,
        'goal_achieved', v_achieved OR v_goal_now,
        'goal_just_achieved', v_goal_now,
        'lifetime_total', v_total,
        'milestone_reached', v_milestone);
END
$fn$;

/* The floor: only the two upserts, the day in UTC; returns the lifetime total. */
CREATE FUNCTION bench.track_daily_usage_floor(
    p_user_id    uuid,
    p_usage_type text,
    p_count      integer DEFAULT 1)
RETURNS bigint
LANGUAGE sql
AS $fn$
    INSERT INTO bench.daily_usage AS d (tenant_id, user_id, usage_type, usage_date, count)
    VALUES ('default', p_user_id, p_usage_type, current_date, p_count)
    ON CONFLICT (tenant_id, user_id, usage_type, usage_date)
    DO UPDATE SET count = d.count + excluded.count;

    INSERT INTO bench.lifetime_usage AS l
           (tenant_id, user_id, usage_type, total, first_used_at, last_used_at)
    VALUES ('default', p_user_id, p_usage_type, p_count, now(), now())
    ON CONFLICT (tenant_id, user_id, usage_type)
    DO UPDATE SET total = l.total + excluded.total, last_used_at = excluded.last_used_at
    RETURNING l.total;
$fn$;
