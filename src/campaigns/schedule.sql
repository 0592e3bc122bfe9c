
-- Campaign scheduling (issue 12, foundation): when a step is due.  Pure
-- arithmetic on its arguments (src/campaigns/schedule.c; the campaign
-- scheduler calls the same C code).  IMMUTABLE like pg_catalog.timezone(text,
-- timestamptz): the result depends on the arguments and the server's time zone
-- database only, never on the session's TimeZone (a NULL timezone means
-- fallback_timezone, default UTC).
CREATE FUNCTION revenue_engine.next_send_time(
    start_at          timestamptz,
    delay_amount      integer,
    delay_unit        text,
    timezone          text    DEFAULT NULL,
    window_start      time    DEFAULT NULL,
    window_end        time    DEFAULT NULL,
    quiet_start       time    DEFAULT NULL,
    quiet_end         time    DEFAULT NULL,
    holidays          date[]  DEFAULT NULL,
    at_local_time     time    DEFAULT NULL,
    fallback_timezone text    DEFAULT 'UTC')
RETURNS timestamptz
LANGUAGE C IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 're_next_send_time_sql';
COMMENT ON FUNCTION revenue_engine.next_send_time(timestamptz, integer, text, text, time, time,
                                                  time, time, date[], time, text) IS
    'the instant a campaign step started at start_at is due: delay in minutes/hours (elapsed), days/weeks/business_days (calendar, in the contact''s zone), then at_local_time, then the send window and quiet hours (local, DST-correct)';
REVOKE ALL ON FUNCTION revenue_engine.next_send_time(timestamptz, integer, text, text, time, time,
                                                     time, time, date[], time, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION revenue_engine.next_send_time(timestamptz, integer, text, text, time, time,
                                                        time, time, date[], time, text)
    TO revenue_engine_user;
