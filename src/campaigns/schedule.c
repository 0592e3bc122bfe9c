/*-------------------------------------------------------------------------
 *
 * schedule.c
 *	  next_send_time: when a campaign step is due (issue 12, point 5).
 *
 * Rules (README "Campaign scheduling (foundation)"):
 *	- minutes and hours are elapsed time;
 *	- days and weeks are calendar steps in the contact's zone: the local time
 *	  of day is kept across DST (09:00 stays 09:00);
 *	- business days are calendar days that are not Saturday, Sunday or one of
 *	  the holidays; when the unit is business days the result also never falls
 *	  on such a day (a window or local time moves on to the next business day);
 *	- a local time that does not exist (spring forward) becomes the first
 *	  instant after the gap, i.e. the transition itself; an ambiguous one
 *	  (fall back) the first occurrence.  Both are "the first instant whose
 *	  local wall-clock time is >= the wanted one", which is how local times
 *	  are turned into instants everywhere here (first_instant_at);
 *	- then "at_time": the next occurrence of that local time of day, at or
 *	  after the instant;
 *	- then the send window and quiet hours: a closed instant moves to the
 *	  next instant at which the window is open and quiet hours are over,
 *	  evaluated on local wall-clock time, so it is DST-correct (an opening
 *	  that falls into a DST gap is the end of the gap);
 *	- a zero delay is due at once, subject to the window.
 *
 * All times are microseconds (TimestampTz); "wall" values are the local
 * wall-clock time written as a timestamp (PostgreSQL epoch, no zone).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/int.h"
#include "datatype/timestamp.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"

#include "revenue_engine.h"
#include "campaigns/schedule.h"

/* seconds from the Unix epoch to the PostgreSQL epoch */
#define RE_UNIX_TO_PG_SECS \
	((int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY)

/* the last date a timestamp can hold (exclusive), relative to 2000-01-01 */
#define RE_DATE_END (TIMESTAMP_END_JULIAN - POSTGRES_EPOCH_JDATE)

static int64
floor_div(int64 a, int64 b)
{
	int64		q = a / b;

	return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static void
out_of_range(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
			 errmsg("next send time is out of the range of timestamp with time zone")));
}

static pg_time_t
unix_secs(TimestampTz t)
{
	return (pg_time_t) (floor_div(t, USECS_PER_SEC) + RE_UNIX_TO_PG_SECS);
}

/* The UTC offset (seconds east) in effect at instant t. */
static int64
gmtoff_at(TimestampTz t, pg_tz *tz)
{
	pg_time_t	secs = unix_secs(t);
	struct pg_tm *tm = pg_localtime(&secs, tz);

	if (tm == NULL)
		out_of_range();
	return tm->tm_gmtoff;
}

static Timestamp
wall_at(TimestampTz t, pg_tz *tz)
{
	return t + gmtoff_at(t, tz) * USECS_PER_SEC;
}

/*
 * The next offset change after instant t: true and *boundary, *after_off set,
 * or false when the zone has no later transition.
 */
static bool
next_transition(TimestampTz t, pg_tz *tz, TimestampTz *boundary, int64 *after_off)
{
	pg_time_t	secs = unix_secs(t);
	pg_time_t	b;
	long int	before_gmtoff,
				after_gmtoff;
	int			before_isdst,
				after_isdst;

	if (pg_next_dst_boundary(&secs, &before_gmtoff, &before_isdst, &b,
							 &after_gmtoff, &after_isdst, tz) != 1)
		return false;
	*boundary = ((int64) b - RE_UNIX_TO_PG_SECS) * USECS_PER_SEC;
	*after_off = after_gmtoff;
	return *boundary > t;
}

/*
 * The first instant at or after lo whose local wall-clock time is >= wall:
 * the instant itself when wall exists once, the first occurrence when it
 * exists twice (fall back), the end of the gap when it does not exist
 * (spring forward).  Walks the zone's offset segments from lo, so lo should
 * be within days of the answer.
 */
static TimestampTz
first_instant_at(TimestampTz lo, Timestamp wall, pg_tz *tz)
{
	TimestampTz cur = lo;
	int64		off = gmtoff_at(cur, tz);
	int			hops;

	if (cur + off * USECS_PER_SEC >= wall)
		return cur;
	for (hops = 0; hops < 1000; hops++)
	{
		/* where this segment's offset reaches wall */
		TimestampTz u = wall - off * USECS_PER_SEC;
		TimestampTz b;
		int64		after;

		if (!next_transition(cur, tz, &b, &after) || u < b)
			return u;
		if (b + after * USECS_PER_SEC >= wall)
			return b;			/* wall lies in the gap that starts at b */
		cur = b;
		off = after;
	}
	elog(ERROR, "next_send_time: no local time %s after %s",
		 timestamptz_to_str(wall), timestamptz_to_str(lo));
	return 0;					/* keep compiler quiet */
}

static bool
span_contains(const ReDailySpan *span, int64 tod)
{
	if (span->start < span->end)
		return tod >= span->start && tod < span->end;
	return tod >= span->start || tod < span->end;
}

static bool
is_holiday(const ReSendSchedule *s, DateADT d)
{
	int			lo = 0,
				hi = s->nholidays - 1;

	while (lo <= hi)
	{
		int			mid = lo + (hi - lo) / 2;

		if (s->holidays[mid] == d)
			return true;
		if (s->holidays[mid] < d)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return false;
}

static bool
is_weekday(DateADT d)
{
	int			dow = j2day(d + POSTGRES_EPOCH_JDATE);	/* 0 = Sunday */

	return dow != 0 && dow != 6;
}

static bool
is_business_day(const ReSendSchedule *s, DateADT d)
{
	return is_weekday(d) && !is_holiday(s, d);
}

/* Whether the window and quiet hours allow local time of day tod. */
static bool
tod_may_send(const ReSendSchedule *s, int64 tod)
{
	if (s->window.set && !span_contains(&s->window, tod))
		return false;
	if (s->quiet.set && span_contains(&s->quiet, tod))
		return false;
	return true;
}

/* Whether a local (date, time of day) may send. */
static bool
may_send(const ReSendSchedule *s, DateADT d, int64 tod)
{
	if (!tod_may_send(s, tod))
		return false;
	if (s->unit == RE_DELAY_BUSINESS_DAYS && !is_business_day(s, d))
		return false;
	return true;
}

static void
split_wall(Timestamp wall, DateADT *d, int64 *tod)
{
	*d = (DateADT) floor_div(wall, USECS_PER_DAY);
	*tod = wall - (int64) *d * USECS_PER_DAY;
}

static Timestamp
make_wall(int64 d, int64 tod)
{
	if (d < -POSTGRES_EPOCH_JDATE || d >= RE_DATE_END)
		out_of_range();
	return d * USECS_PER_DAY + tod;
}

/* Holidays h with from < h <= to that fall on a weekday. */
static int64
weekday_holidays_between(const ReSendSchedule *s, int64 from, int64 to)
{
	int64		n = 0;
	int			i;

	for (i = 0; i < s->nholidays; i++)
		if (s->holidays[i] > from && s->holidays[i] <= to &&
			is_weekday(s->holidays[i]))
			n++;
	return n;
}

/* The date n (> 0) business days after d. */
static int64
add_business_days(const ReSendSchedule *s, int64 d, int64 n)
{
	int64		remaining = n;

	/* whole weeks hold 5 weekdays each, less the holidays among them */
	while (remaining > 5)
	{
		int64		weeks = (remaining - 1) / 5;
		int64		end = d + 7 * weeks;

		if (end >= RE_DATE_END)
			out_of_range();
		remaining -= 5 * weeks - weekday_holidays_between(s, d, end);
		d = end;
	}
	while (remaining > 0)
	{
		if (++d >= RE_DATE_END)
			out_of_range();
		if (is_business_day(s, (DateADT) d))
			remaining--;
	}
	return d;
}

/* The first instant at or after t at which s may send. */
static TimestampTz
next_opening(const ReSendSchedule *s, TimestampTz t)
{
	int64		limit = 16 * ((int64) s->nholidays + 16);
	int64		i;

	for (i = 0; i < limit; i++)
	{
		DateADT		d;
		int64		tod;
		Timestamp	next;
		TimestampTz cand,
					b;
		int64		after;

		split_wall(wall_at(t, s->tz), &d, &tod);
		if (may_send(s, d, tod))
			return t;

		/* the next local time at which may_send can change: an opening... */
		next = make_wall((int64) d + 1, 0);
		if (s->window.set && s->window.start > tod)
			next = Min(next, make_wall(d, s->window.start));
		if (s->quiet.set && s->quiet.end > tod)
			next = Min(next, make_wall(d, s->quiet.end));
		cand = first_instant_at(t, next, s->tz);
		/* ... or a DST transition, where the wall clock may jump back */
		if (next_transition(t, s->tz, &b, &after) && b < cand)
			cand = b;
		t = cand;
	}
	elog(ERROR, "next_send_time: no opening found");
	return 0;					/* keep compiler quiet */
}

ReDelayUnit
re_parse_delay_unit(const char *unit)
{
	if (strcmp(unit, "minutes") == 0)
		return RE_DELAY_MINUTES;
	if (strcmp(unit, "hours") == 0)
		return RE_DELAY_HOURS;
	if (strcmp(unit, "days") == 0)
		return RE_DELAY_DAYS;
	if (strcmp(unit, "weeks") == 0)
		return RE_DELAY_WEEKS;
	if (strcmp(unit, "business_days") == 0)
		return RE_DELAY_BUSINESS_DAYS;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown delay unit \"%s\"", unit),
			 errhint("Use minutes, hours, days, weeks or business_days.")));
	return RE_DELAY_MINUTES;	/* keep compiler quiet */
}

static int
holiday_cmp(const void *a, const void *b)
{
	DateADT		x = *(const DateADT *) a;
	DateADT		y = *(const DateADT *) b;

	return (x > y) - (x < y);
}

int
re_normalize_holidays(DateADT *dates, int n)
{
	int			i,
				k = 0;

	if (n == 0)
		return 0;
	qsort(dates, n, sizeof(DateADT), holiday_cmp);
	for (i = 1; i < n; i++)
		if (dates[i] != dates[k])
			dates[++k] = dates[i];
	return k + 1;
}

static char *
tod_str(int64 tod)
{
	return DatumGetCString(DirectFunctionCall1(time_out, TimeADTGetDatum(tod)));
}

void
re_check_send_schedule(const ReSendSchedule *s)
{
	if (s->delay < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("delay must not be negative: " INT64_FORMAT, s->delay),
				 errhint("A delay of 0 sends at once.")));
	if (s->window.set && s->window.start == s->window.end)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("send window %s-%s is empty: start equals end",
						tod_str(s->window.start), tod_str(s->window.end)),
				 errhint("Leave the window NULL to send at any time of day.")));
	if (s->quiet.set && s->quiet.start == s->quiet.end)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("quiet hours %s-%s are empty: start equals end",
						tod_str(s->quiet.start), tod_str(s->quiet.end)),
				 errhint("Leave quiet hours NULL for none.")));

	/*
	 * The times of day that may send are the window less the quiet hours;
	 * each piece of it begins at the window's start, at the end of quiet
	 * hours or at midnight, so none of those sending means none ever does.
	 */
	if (s->window.set && s->quiet.set &&
		!tod_may_send(s, 0) && !tod_may_send(s, s->window.start) &&
		!tod_may_send(s, s->quiet.end))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("send window %s-%s lies entirely within quiet hours %s-%s",
						tod_str(s->window.start), tod_str(s->window.end),
						tod_str(s->quiet.start), tod_str(s->quiet.end))));
}

TimestampTz
re_next_send_time(TimestampTz start, const ReSendSchedule *s)
{
	TimestampTz t = start;
	DateADT		d;
	int64		tod;

	if (TIMESTAMP_NOT_FINITE(start))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("start time must be finite: %s", timestamptz_to_str(start))));
	re_check_send_schedule(s);

	if (s->delay > 0)
	{
		int64		step;
		Timestamp	wall;

		switch (s->unit)
		{
			case RE_DELAY_MINUTES:
			case RE_DELAY_HOURS:
				if (pg_mul_s64_overflow(s->delay, s->unit == RE_DELAY_MINUTES ?
										USECS_PER_MINUTE : USECS_PER_HOUR, &step) ||
					pg_add_s64_overflow(start, step, &t) ||
					!IS_VALID_TIMESTAMP(t))
					out_of_range();
				break;
			case RE_DELAY_DAYS:
			case RE_DELAY_WEEKS:
			case RE_DELAY_BUSINESS_DAYS:
				split_wall(wall_at(start, s->tz), &d, &tod);
				if (s->unit == RE_DELAY_BUSINESS_DAYS)
					wall = make_wall(add_business_days(s, d, s->delay), tod);
				else if (s->delay > (RE_DATE_END - (int64) d) / (s->unit == RE_DELAY_WEEKS ? 7 : 1))
					out_of_range();
				else
					wall = make_wall((int64) d + s->delay * (s->unit == RE_DELAY_WEEKS ? 7 : 1), tod);
				/* from two days before: every zone's offset is below 26 hours */
				t = first_instant_at(Max(start, wall - 2 * USECS_PER_DAY), wall, s->tz);
				break;
		}
	}

	if (s->has_at_time)
	{
		int64		target;

		split_wall(wall_at(t, s->tz), &d, &tod);
		target = (int64) d + (s->at_time < tod ? 1 : 0);
		while (s->unit == RE_DELAY_BUSINESS_DAYS && !is_business_day(s, (DateADT) target))
			if (++target >= RE_DATE_END)
				out_of_range();
		t = first_instant_at(t, make_wall(target, s->at_time), s->tz);
	}

	t = next_opening(s, t);
	if (!IS_VALID_TIMESTAMP(t))
		out_of_range();
	return t;
}

/*
 * A daily span from arguments argno and argno + 1: both NULL is no span, one
 * NULL is 22004.  24:00 is midnight.
 */
static bool
get_span(FunctionCallInfo fcinfo, int argno, const char *start_name,
		 const char *end_name, int64 *start, int64 *end)
{
	if (PG_ARGISNULL(argno) && PG_ARGISNULL(argno + 1))
		return false;
	re_require_arg(fcinfo, argno, start_name);
	re_require_arg(fcinfo, argno + 1, end_name);
	*start = PG_GETARG_TIMEADT(argno) % USECS_PER_DAY;
	*end = PG_GETARG_TIMEADT(argno + 1) % USECS_PER_DAY;
	return true;
}

/*
 * SQL: revenue_engine.next_send_time(start_at, delay_amount, delay_unit,
 *		timezone, window_start, window_end, quiet_start, quiet_end, holidays,
 *		at_local_time, fallback_timezone)
 */
PG_FUNCTION_INFO_V1(re_next_send_time_sql);
Datum
re_next_send_time_sql(PG_FUNCTION_ARGS)
{
	ReSendSchedule s;
	const char *zone;

	memset(&s, 0, sizeof(s));
	re_require_arg(fcinfo, 0, "start_at");
	re_require_arg(fcinfo, 1, "delay_amount");
	re_require_arg(fcinfo, 2, "delay_unit");
	s.delay = PG_GETARG_INT32(1);
	s.unit = re_parse_delay_unit(text_to_cstring(PG_GETARG_TEXT_PP(2)));

	/* the contact's zone, else the campaign's fallback (default UTC) */
	if (PG_ARGISNULL(3))
	{
		re_require_arg(fcinfo, 10, "fallback_timezone (timezone is null)");
		zone = text_to_cstring(PG_GETARG_TEXT_PP(10));
	}
	else
		zone = text_to_cstring(PG_GETARG_TEXT_PP(3));
	s.tz = re_lookup_timezone(zone);

	s.window.set = get_span(fcinfo, 4, "window_start", "window_end", &s.window.start, &s.window.end);
	s.quiet.set = get_span(fcinfo, 6, "quiet_start", "quiet_end", &s.quiet.start, &s.quiet.end);

	if (!PG_ARGISNULL(8))
	{
		ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(8);
		Datum	   *elems;
		bool	   *nulls;
		int			n,
					i;
		DateADT    *dates;

		deconstruct_array(arr, DATEOID, sizeof(DateADT), true, TYPALIGN_INT,
						  &elems, &nulls, &n);
		dates = palloc(sizeof(DateADT) * Max(n, 1));
		for (i = 0; i < n; i++)
		{
			if (nulls[i])
				ereport(ERROR,
						(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						 errmsg("holidays must not contain null (element %d)", i + 1)));
			dates[i] = DatumGetDateADT(elems[i]);
		}
		s.nholidays = re_normalize_holidays(dates, n);
		s.holidays = dates;
	}

	if (!PG_ARGISNULL(9))
	{
		s.has_at_time = true;
		s.at_time = PG_GETARG_TIMEADT(9) % USECS_PER_DAY;
	}

	PG_RETURN_TIMESTAMPTZ(re_next_send_time(PG_GETARG_TIMESTAMPTZ(0), &s));
}
