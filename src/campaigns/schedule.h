/*-------------------------------------------------------------------------
 *
 * schedule.h
 *	  When a campaign step is due: the delay, the contact's time zone, the
 *	  send window, quiet hours, business days and a local time of day.
 *
 * The one implementation of this arithmetic: the SQL function
 * revenue_engine.next_send_time() and the campaign scheduler (issue 12) both
 * call re_next_send_time().
 *
 *-------------------------------------------------------------------------
 */
#ifndef RE_CAMPAIGNS_SCHEDULE_H
#define RE_CAMPAIGNS_SCHEDULE_H

#include "pgtime.h"
#include "utils/date.h"
#include "utils/timestamp.h"

typedef enum ReDelayUnit
{
	RE_DELAY_MINUTES,			/* elapsed time */
	RE_DELAY_HOURS,				/* elapsed time */
	RE_DELAY_DAYS,				/* calendar days in the contact's zone */
	RE_DELAY_WEEKS,				/* 7 calendar days */
	RE_DELAY_BUSINESS_DAYS		/* calendar days that are not Sat/Sun/holiday */
} ReDelayUnit;

/*
 * A daily span of local time of day [start, end) in microseconds since local
 * midnight; start > end crosses midnight (20:00-08:00).  start = end is
 * rejected by re_check_send_schedule.
 */
typedef struct ReDailySpan
{
	bool		set;
	int64		start;
	int64		end;
} ReDailySpan;

typedef struct ReSendSchedule
{
	int64		delay;			/* >= 0; 0 = due at once */
	ReDelayUnit unit;
	pg_tz	   *tz;				/* the contact's zone (or the fallback) */
	ReDailySpan window;			/* sends only inside, if set */
	ReDailySpan quiet;			/* never sends inside, if set */
	int			nholidays;
	const DateADT *holidays;	/* ascending, no duplicates
								 * (re_normalize_holidays) */
	bool		has_at_time;
	int64		at_time;		/* wait until this local time of day */
} ReSendSchedule;

/* The unit named unit ("minutes", "hours", "days", "weeks", "business_days") or 22023. */
extern ReDelayUnit re_parse_delay_unit(const char *unit);

/* Sort and de-duplicate n holiday dates in place; returns the new count. */
extern int	re_normalize_holidays(DateADT *dates, int n);

/* Raise 22023 for a schedule that can never send (see schedule.c). */
extern void re_check_send_schedule(const ReSendSchedule *s);

/* The instant a step started at start is due under schedule s (>= start). */
extern TimestampTz re_next_send_time(TimestampTz start, const ReSendSchedule *s);

#endif							/* RE_CAMPAIGNS_SCHEDULE_H */
