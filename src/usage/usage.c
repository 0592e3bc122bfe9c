/*-------------------------------------------------------------------------
 *
 * usage.c
 *	  track_daily_usage: daily and lifetime counters per user and usage type,
 *	  milestone ladders, daily goals, streaks and feature first use, each
 *	  with its outbox event, all in the caller's transaction.
 *
 * The common call is one statement (a saved plan): it reads the user's
 * profile and the usage type's settings, computes the user's local day, and
 * upserts the daily and the lifetime rows.  The lifetime row's lock
 * serializes calls for one user and usage type, so the thresholds crossed
 * are exactly those in (total - count, total]; the primary key of
 * milestones_reached makes each one recorded once even against backfill.
 * Rarer work (a milestone, a goal, a first use) takes a few more statements.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/int.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "pgtime.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/datetime.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"
#include "catalog/namespace.h"
#include "commands/trigger.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "revenue_engine.h"
#include "outbox/outbox.h"
#include "usage/keyed_update.h"

/* Built-in settings of the usage types the extension knows by name. */
typedef struct BuiltinUsageType
{
	const char *name;
	const int64 *milestones;
	int			nmilestones;
	int32		daily_goal;		/* 0: no goal */
	bool		is_feature;
} BuiltinUsageType;

static const int64 reply_ladder[] = {1, 10, 50, 100, 500, 1000};
static const int32 default_streak_ladder[] = {1, 7, 30};

static const BuiltinUsageType builtin_types[] = {
	{"reply", reply_ladder, lengthof(reply_ladder), 10, false},
	{"meme", NULL, 0, 0, true},
	{"write_like_me", NULL, 0, 0, true},
	{"research", NULL, 0, 0, true},
};

/* Any other usage type: counted, no milestones, no goal, not a feature. */
static const BuiltinUsageType generic_type = {NULL, NULL, 0, 0, false};

/* The settings in effect for one call. */
typedef struct UsageSettings
{
	int64	   *milestones;
	int			nmilestones;
	int32	   *streak_milestones;
	int			nstreak;
	int32		daily_goal;		/* 0: no goal */
	bool		is_feature;
} UsageSettings;

/* Saved plans, prepared on first use in a backend. */
static SPIPlanPtr track_plan = NULL;
static SPIPlanPtr prev_streak_plan = NULL;
static SPIPlanPtr achieve_plan = NULL;
static SPIPlanPtr run_plan = NULL;
static SPIPlanPtr chain_plan = NULL;
static SPIPlanPtr milestone_plan = NULL;
static SPIPlanPtr milestone_only_plan = NULL;

/*
 * The hot statements: the daily and the lifetime upserts.  $1 tenant, $2 user,
 * $3 usage type, $4 count, $5 the user's local day (daily) or now() (lifetime).
 * The lifetime row is locked first; every call takes them in that order.
 */
static const char *track_daily_sql =
"INSERT INTO revenue_engine.daily_usage AS d"
"       (tenant_id, user_id, usage_type, usage_date, count)"
"VALUES ($1, $2, $3, $5, $4)"
"ON CONFLICT (tenant_id, user_id, usage_type, usage_date)"
"DO UPDATE SET count = d.count + excluded.count"
" RETURNING d.count, d.goal_achieved_at IS NOT NULL AS achieved, d.streak_days";
static const char *track_lifetime_sql =
"INSERT INTO revenue_engine.lifetime_usage AS l"
"       (tenant_id, user_id, usage_type, total, first_used_at, last_used_at)"
"VALUES ($1, $2, $3, $4, $5, $5)"
"ON CONFLICT (tenant_id, user_id, usage_type)"
"DO UPDATE SET total = l.total + excluded.total, last_used_at = excluded.last_used_at"
" RETURNING l.total, l.current_streak, l.streak_end_date, l.first_used_at = $5";
static SPIPlanPtr track_daily_plan = NULL;

/* columns of the lifetime upsert, then of the daily upsert */
enum
{
	COL_TOTAL = 1,
	COL_CURRENT_STREAK,
	COL_STREAK_END,
	COL_FRESH
};
enum
{
	COL_DAY_COUNT = 1,
	COL_ACHIEVED,
	COL_DAY_STREAK
};

/*
 * The same two upserts for a row that exists (almost every call), done by
 * primary key without running a statement (keyed_update.c); the statements
 * above insert a new row and cover every case that path declines.  Keys are
 * given in primary key order: tenant, user, usage type (, day).
 */
enum
{
	LT_TOTAL,
	LT_CURRENT_STREAK,
	LT_STREAK_END,
	LT_FIRST_USED,
	LT_LAST_USED,
	LT_BEST_STREAK,
	LT_LATEST,
	LT_LATEST_AT
};
static ReKeyedRel lifetime_rel = {
	"lifetime_usage",
	3, {"tenant_id", "user_id", "usage_type"}, {TEXTOID, UUIDOID, TEXTOID},
	8,
	{"total", "current_streak", "streak_end_date", "first_used_at", "last_used_at",
	"best_streak", "latest_milestone", "latest_milestone_at"},
	{INT8OID, INT4OID, DATEOID, TIMESTAMPTZOID, TIMESTAMPTZOID,
	INT4OID, INT8OID, TIMESTAMPTZOID}
};
enum
{
	DY_COUNT,
	DY_ACHIEVED_AT,
	DY_STREAK,
	DY_GOAL
};
static ReKeyedRel daily_rel = {
	"daily_usage",
	4, {"tenant_id", "user_id", "usage_type", "usage_date"},
	{TEXTOID, UUIDOID, TEXTOID, DATEOID},
	4,
	{"count", "goal_achieved_at", "streak_days", "goal"},
	{INT8OID, TIMESTAMPTZOID, INT4OID, INT4OID}
};

/*
 * What a call adds to both rows.  On that path the lifetime row also takes
 * the highest milestone crossed as its latest, and the daily row its goal
 * when reached (with fold_streak, known from the lifetime row's latest run),
 * so neither row is updated twice.
 */
typedef struct UsageAdd
{
	pg_uuid_t  *user_id;
	const char *usage_type;
	int32		count;
	TimestampTz now;
	const int64 *ladder;
	int			nladder;
	int32		goal;			/* 0: none */
	int32		fold_streak;	/* the day's streak if reached now; -1: unknown */
	/* set by the updates */
	int64		latest;			/* latest_milestone set to this; 0: not set; the old value: */
	bool		old_latest_null;
	int64		old_latest;
	bool		old_latest_at_null;
	TimestampTz old_latest_at;
	bool		goal_now;
} UsageAdd;

/*
 * A user's profile is read by primary key on every call (re_keyed_fetch, no
 * statement, no cache), so a backend keeps nothing per user: its memory does
 * not grow with the number of users, and a committed change is seen by the
 * next call as any row is, by its snapshot.  A profile write invalidates
 * nothing (a relcache invalidation per set_user_profile would make every
 * backend rebuild the table's relcache entry).  The usage types' settings, a
 * handful, are cached for the backend: a statement trigger on usage_types
 * sends a relcache invalidation (revenue_engine.invalidate_cache), the
 * callback empties the type cache, and every call first accepts pending
 * invalidations, so a committed change is seen by the next call in every
 * session.
 */
typedef struct ProfileEntry
{
	pg_tz	   *tz;
	const char *tzname;
	Jsonb	   *goals;			/* NULL: none */
} ProfileEntry;

static ReKeyedRel profile_rel = {
	"user_profiles", 2, {"tenant_id", "user_id"}, {TEXTOID, UUIDOID},
	2, {"timezone", "daily_goals"}, {TEXTOID, JSONBOID}
};

typedef struct TypeEntry
{
	char		name[RE_MAX_NAME_LEN + 1];
	UsageSettings settings;
} TypeEntry;

static MemoryContext cache_cxt = NULL;
static HTAB *type_cache = NULL;
static Oid	types_relid = InvalidOid;
static SPIPlanPtr profile_plan = NULL;
static SPIPlanPtr type_plan = NULL;

static void
reset_caches(void)
{
	if (cache_cxt != NULL)
		MemoryContextReset(cache_cxt);
	type_cache = NULL;
	types_relid = InvalidOid;
}

static void
relcache_callback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == types_relid)
		reset_caches();
	re_keyed_forget(&profile_rel, relid);
	re_keyed_forget(&lifetime_rel, relid);
	re_keyed_forget(&daily_rel, relid);
}

static void
ensure_caches(void)
{
	HASHCTL		ctl;

	if (cache_cxt == NULL)
	{
		cache_cxt = AllocSetContextCreate(TopMemoryContext, "revenue_engine usage caches",
										  ALLOCSET_DEFAULT_SIZES);
		re_register_relcache_callback(relcache_callback, (Datum) 0);
	}
	if (type_cache == NULL)
	{
		Oid			nsp = get_namespace_oid("revenue_engine", false);

		types_relid = get_relname_relid("usage_types", nsp);
		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = RE_MAX_NAME_LEN + 1;
		ctl.entrysize = sizeof(TypeEntry);
		ctl.hcxt = cache_cxt;
		type_cache = hash_create("revenue_engine usage types", 64, &ctl,
								 HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	}
}

/* A milestone, once: CTE m returns a row when this statement recorded it. */
#define MILESTONE_INSERT_CTE \
	"WITH m AS (" \
	"  INSERT INTO revenue_engine.milestones_reached" \
	"   (tenant_id, user_id, usage_type, milestone, lifetime_total, event_id)" \
	"  VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING 1" \
	")"

static void
prepare_plans(void)
{
	Oid			key4[8] = {TEXTOID, UUIDOID, TEXTOID, DATEOID, INT4OID, INT4OID, DATEOID, INT4OID};
	Oid			track_types[5] = {TEXTOID, UUIDOID, TEXTOID, INT8OID, DATEOID};
	Oid			lifetime_types[5] = {TEXTOID, UUIDOID, TEXTOID, INT8OID, TIMESTAMPTZOID};
	Oid			profile_types[2] = {TEXTOID, UUIDOID};
	Oid			type_types[1] = {TEXTOID};
	Oid			ms_types[7] = {TEXTOID, UUIDOID, TEXTOID, INT8OID, INT8OID, UUIDOID, TIMESTAMPTZOID};
	Oid			achieve_types[7] = {TEXTOID, UUIDOID, TEXTOID, DATEOID, INT4OID, INT4OID, TIMESTAMPTZOID};

	if (track_plan != NULL)
		return;

	track_plan = re_prepare_saved(track_lifetime_sql, 5, lifetime_types);
	track_daily_plan = re_prepare_saved(track_daily_sql, 5, track_types);
	profile_plan = re_prepare_saved("SELECT timezone, daily_goals FROM revenue_engine.user_profiles"
								 " WHERE tenant_id = $1 AND user_id = $2", 2, profile_types);
	type_plan = re_prepare_saved("SELECT milestones, streak_milestones, daily_goal, is_feature"
							  "  FROM revenue_engine.usage_types WHERE usage_type = $1",
							  1, type_types);
	prev_streak_plan = re_prepare_saved(
									 "SELECT streak_days FROM revenue_engine.daily_usage"
									 " WHERE tenant_id = $1 AND user_id = $2 AND usage_type = $3"
									 "   AND usage_date = $4 AND goal_achieved_at IS NOT NULL",
									 4, key4);
	chain_plan = re_prepare_saved(
							   "UPDATE revenue_engine.daily_usage SET streak_days = $5"
							   " WHERE tenant_id = $1 AND user_id = $2 AND usage_type = $3"
							   "   AND usage_date = $4 AND goal_achieved_at IS NOT NULL",
							   5, key4);
	/*
	 * The milestone, once, and the lifetime row's latest milestone with it.
	 * The time is a parameter ($7, the transaction's start as now() gives
	 * it), computed once per call: Citus evaluates no STABLE function on
	 * columns in an UPDATE, and every statement here names the tenant as a
	 * parameter so that Citus routes it to one shard.
	 */
	milestone_plan = re_prepare_saved(
								   MILESTONE_INSERT_CTE
								   ", u AS ("
								   "  UPDATE revenue_engine.lifetime_usage"
								   "     SET latest_milestone = $4, latest_milestone_at = $7"
								   "   WHERE tenant_id = $1 AND user_id = $2 AND usage_type = $3"
								   "     AND (latest_milestone IS NULL OR latest_milestone < $4)"
								   "     AND EXISTS (SELECT 1 FROM m) RETURNING 1"
								   ")"
								   "SELECT pg_catalog.count(*) FROM m",
								   7, ms_types);
	/* the milestone, once, when the lifetime update took care of the latest */
	milestone_only_plan = re_prepare_saved(MILESTONE_INSERT_CTE "SELECT pg_catalog.count(*) FROM m",
										   6, ms_types);
	/* the day's goal ($4, $5, its streak $6; $7 now()) */
	achieve_plan = re_prepare_saved(
								 "UPDATE revenue_engine.daily_usage"
								 "   SET goal_achieved_at = $7, goal = $5, streak_days = $6"
								 " WHERE tenant_id = $1 AND user_id = $2 AND usage_type = $3"
								 "   AND usage_date = $4",
								 7, achieve_types);
	/* the lifetime row's latest run of goal days (ending $4 with streak $5) when it is the latest */
	run_plan = re_prepare_saved(
							 "UPDATE revenue_engine.lifetime_usage"
							 "   SET current_streak = CASE WHEN streak_end_date IS NULL"
							 "                              OR $4 >= streak_end_date"
							 "                        THEN $5 ELSE current_streak END,"
							 "       streak_end_date = greatest(streak_end_date, $4),"
							 "       best_streak = greatest(best_streak, $5)"
							 " WHERE tenant_id = $1 AND user_id = $2 AND usage_type = $3",
							 5, key4);
}

static const BuiltinUsageType *
builtin_settings(const char *usage_type)
{
	int			i;

	for (i = 0; i < lengthof(builtin_types); i++)
		if (strcmp(builtin_types[i].name, usage_type) == 0)
			return &builtin_types[i];
	return &generic_type;
}

static void
settings_from_builtin(UsageSettings *s, const char *usage_type)
{
	const BuiltinUsageType *b = builtin_settings(usage_type);

	s->milestones = (int64 *) b->milestones;
	s->nmilestones = b->nmilestones;
	s->streak_milestones = (int32 *) default_streak_ladder;
	s->nstreak = lengthof(default_streak_ladder);
	s->daily_goal = b->daily_goal;
	s->is_feature = b->is_feature;
}

/* Elements of a one-dimensional int8[] or int4[] without NULLs. */
static void *
array_values(Datum d, Oid elemtype, int *n)
{
	ArrayType  *arr = DatumGetArrayTypeP(d);

	if (ARR_NDIM(arr) == 0)
	{
		*n = 0;
		return NULL;
	}
	if (ARR_NDIM(arr) != 1 || ARR_HASNULL(arr) || ARR_ELEMTYPE(arr) != elemtype)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("revenue_engine.usage_types holds a ladder that is not a flat array without nulls")));
	*n = ArrayGetNItems(ARR_NDIM(arr), ARR_DIMS(arr));
	return ARR_DATA_PTR(arr);
}

static Datum
col(int colno, bool *isnull)
{
	return SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, colno, isnull);
}

static int32
streak_of_day(const char *tenant, pg_uuid_t *user_id, text *usage_type, DateADT day)
{
	Datum		values[4];
	bool		isnull;
	Datum		v;
	int			ret;

	values[0] = CStringGetTextDatum(tenant);
	values[1] = UUIDPGetDatum(user_id);
	values[2] = PointerGetDatum(usage_type);
	values[3] = DateADTGetDatum(day);
	ret = SPI_execute_plan(prev_streak_plan, values, NULL, true, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "streak look-up failed: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		return 0;
	v = col(1, &isnull);
	return isnull ? 0 : DatumGetInt32(v);
}

/*
 * The streak of goal day "day" from the lifetime row's latest run of goal
 * days (streak_end_date is the latest goal day), or -1 when the day before
 * must be read: usage for a day at or before the latest run's end.
 */
static int32
streak_from_run(DateADT day, int32 cached_streak, DateADT cached_end, bool end_null)
{
	if (end_null || cached_end < day - 1)
		return 1;
	if (cached_end == day - 1)
		return cached_streak + 1;
	return -1;
}

typedef struct GoalRun
{
	DateADT		end;
	int32		streak;
} GoalRun;

/* lifetime row: a run of goal days ending run->end; the latest run is cached */
static void
lifetime_run(ReKeyedRel *kr, Datum *values, bool *nulls, void *arg)
{
	GoalRun    *run = arg;
	bool		end_null = RE_KEYED_NULL(kr, nulls, LT_STREAK_END);
	DateADT		end = end_null ? 0 : DatumGetDateADT(RE_KEYED_COL(kr, values, LT_STREAK_END));

	if (end_null || run->end >= end)
	{
		RE_KEYED_COL(kr, values, LT_CURRENT_STREAK) = Int32GetDatum(run->streak);
		RE_KEYED_COL(kr, values, LT_STREAK_END) = DateADTGetDatum(run->end);
		RE_KEYED_NULL(kr, nulls, LT_STREAK_END) = false;
	}
	if (run->streak > DatumGetInt32(RE_KEYED_COL(kr, values, LT_BEST_STREAK)))
		RE_KEYED_COL(kr, values, LT_BEST_STREAK) = Int32GetDatum(run->streak);
}

/* The lifetime row's latest run of goal days moves forward when this run is the latest. */
static void
set_lifetime_run(Datum *keys, DateADT end, int32 streak)
{
	GoalRun		run = {end, streak};
	Datum	   *row;
	bool	   *rownulls;
	Datum		values[5];
	int			ret;

	if (re_keyed_update(&lifetime_rel, keys, lifetime_run, &run, &row, &rownulls))
		return;
	values[0] = keys[0];
	values[1] = keys[1];
	values[2] = keys[2];
	values[3] = DateADTGetDatum(end);
	values[4] = Int32GetDatum(streak);
	ret = SPI_execute_plan(run_plan, values, NULL, false, 0);
	if (ret != SPI_OK_UPDATE || SPI_processed != 1)
		elog(ERROR, "recording a streak failed: %s", SPI_result_code_string(ret));
}

/*
 * Mark day "day" achieved and return its streak.  Later goal days that the
 * new day joins to (usage tracked for an earlier date) are renumbered, and
 * the lifetime row's cached run is moved forward when this run is the latest.
 */
static int32
achieve_goal(const char *tenant, pg_uuid_t *user_id, text *usage_type,
			 DateADT day, int32 goal, int32 cached_streak, DateADT cached_end,
			 bool cached_end_null)
{
	Datum		values[7];
	int32		streak;
	DateADT		run_end = day;
	int32		run_streak;
	int			ret;

	streak = streak_from_run(day, cached_streak, cached_end, cached_end_null);
	if (streak < 0)
		streak = streak_of_day(tenant, user_id, usage_type, day - 1) + 1;

	values[0] = CStringGetTextDatum(tenant);
	values[1] = UUIDPGetDatum(user_id);
	values[2] = PointerGetDatum(usage_type);

	run_streak = streak;
	if (!cached_end_null && cached_end > day)
	{
		/* Usage for an earlier day joined runs of later goal days. */
		for (;;)
		{
			values[3] = DateADTGetDatum(run_end + 1);
			values[4] = Int32GetDatum(run_streak + 1);
			ret = SPI_execute_plan(chain_plan, values, NULL, false, 0);
			if (ret != SPI_OK_UPDATE)
				elog(ERROR, "renumbering a streak failed: %s",
					 SPI_result_code_string(ret));
			if (SPI_processed == 0)
				break;
			run_end++;
			run_streak++;
		}
	}

	values[3] = DateADTGetDatum(day);
	values[4] = Int32GetDatum(goal);
	values[5] = Int32GetDatum(streak);
	values[6] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
	ret = SPI_execute_plan(achieve_plan, values, NULL, false, 0);
	if (ret != SPI_OK_UPDATE || SPI_processed != 1)
		elog(ERROR, "marking the daily goal achieved failed: %s",
			 SPI_result_code_string(ret));
	set_lifetime_run(values, run_end, run_streak);
	return streak;
}

/*
 * Record milestone "milestone" once, and as the latest unless latest_done
 * (the lifetime update set it); true when this call recorded it.
 */
static bool
record_milestone(const char *tenant, pg_uuid_t *user_id, text *usage_type,
				 int64 milestone, int64 total, pg_uuid_t *event_id, bool latest_done)
{
	Datum		values[7];
	int			ret;

	values[0] = CStringGetTextDatum(tenant);
	values[1] = UUIDPGetDatum(user_id);
	values[2] = PointerGetDatum(usage_type);
	values[3] = Int64GetDatum(milestone);
	values[4] = Int64GetDatum(total);
	values[5] = UUIDPGetDatum(event_id);
	values[6] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
	ret = SPI_execute_plan(latest_done ? milestone_only_plan : milestone_plan,
						   values, NULL, false, 0);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "recording a milestone failed: %s", SPI_result_code_string(ret));
	{
		bool		isnull;

		return DatumGetInt64(col(1, &isnull)) == 1;
	}
}

/* The user object of this call's events, built once, as the caller. */
typedef struct EventContext
{
	const char *tenant;
	pg_uuid_t  *user_id;
	ReOwnerScope *scope;
	bool		have_user_data;
	Jsonb	   *user_data;
	int			nevents;
} EventContext;

static void
emit_event(EventContext *ev, const char *event_type, Jsonb *data,
		   pg_uuid_t *event_id)
{
	if (!ev->have_user_data)
	{
		re_leave_owner(ev->scope);
		ev->user_data = re_build_user_payload(ev->user_id);
		re_enter_owner(ev->scope);
		ev->have_user_data = true;
	}
	re_outbox_enqueue(ev->tenant, ev->user_id, event_type, data,
					  ev->user_data, event_id);
	ev->nevents++;
}

static bool
in_ladder(const int32 *ladder, int n, int32 value)
{
	int			i;

	for (i = 0; i < n; i++)
		if (ladder[i] == value)
			return true;
	return false;
}

/* The usage type's settings (cached); connected to SPI, in the owner scope. */
static UsageSettings *
lookup_settings(const char *usage_type)
{
	TypeEntry  *e;
	bool		found;
	Datum		values[1];
	int			ret;

	e = hash_search(type_cache, usage_type, HASH_FIND, NULL);
	if (e != NULL)
		return &e->settings;

	values[0] = CStringGetTextDatum(usage_type);
	ret = SPI_execute_plan(type_plan, values, NULL, true, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "usage type look-up failed: %s", SPI_result_code_string(ret));

	e = hash_search(type_cache, usage_type, HASH_ENTER, &found);
	if (SPI_processed == 0)
		settings_from_builtin(&e->settings, usage_type);
	else
	{
		MemoryContext old = MemoryContextSwitchTo(cache_cxt);
		bool		isnull;
		Datum		d;
		void	   *vals;
		int			n;

		vals = array_values(col(1, &isnull), INT8OID, &n);
		e->settings.milestones = palloc(sizeof(int64) * Max(n, 1));
		memcpy(e->settings.milestones, vals, sizeof(int64) * n);
		e->settings.nmilestones = n;
		vals = array_values(col(2, &isnull), INT4OID, &n);
		e->settings.streak_milestones = palloc(sizeof(int32) * Max(n, 1));
		memcpy(e->settings.streak_milestones, vals, sizeof(int32) * n);
		e->settings.nstreak = n;
		d = col(3, &isnull);
		e->settings.daily_goal = isnull ? 0 : DatumGetInt32(d);
		e->settings.is_feature = DatumGetBool(col(4, &isnull));
		MemoryContextSwitchTo(old);
	}
	return &e->settings;
}

/* The user's profile, read by primary key; connected to SPI, in the owner scope. */
static void
lookup_profile(const char *tenant, pg_uuid_t *user_id, ProfileEntry *e)
{
	Datum		keys[2];
	Datum	   *row;
	bool	   *rownulls;
	bool		found;
	char	   *tzname = "UTC";
	Jsonb	   *goals = NULL;
	bool		isnull;

	keys[0] = CStringGetTextDatum(tenant);
	keys[1] = UUIDPGetDatum(user_id);
	if (re_keyed_fetch(&profile_rel, keys, &found, &row, &rownulls))
	{
		if (found)
		{
			tzname = TextDatumGetCString(RE_KEYED_COL(&profile_rel, row, 0));
			if (!RE_KEYED_NULL(&profile_rel, rownulls, 1))
				goals = DatumGetJsonbP(RE_KEYED_COL(&profile_rel, row, 1));
		}
	}
	else
	{
		int			ret = SPI_execute_plan(profile_plan, keys, NULL, true, 1);

		if (ret != SPI_OK_SELECT)
			elog(ERROR, "profile look-up failed: %s", SPI_result_code_string(ret));
		if (SPI_processed == 1)
		{
			Datum		d;

			tzname = TextDatumGetCString(col(1, &isnull));
			d = col(2, &isnull);
			if (!isnull)
				goals = DatumGetJsonbP(d);
		}
	}
	if (goals != NULL && JB_ROOT_COUNT(goals) == 0)
		goals = NULL;

	e->tz = pg_tzset(tzname);
	if (e->tz == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("time zone \"%s\" of user %s is not recognized", tzname,
						DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(user_id)))),
				 errhint("Set it with revenue_engine.set_user_profile().")));
	e->tzname = pg_get_timezone_name(e->tz);
	e->goals = goals;
}

/* The user's own goal for usage_type, or -1 when the profile sets none. */
static int32
profile_goal(ProfileEntry *p, const char *usage_type)
{
	JsonbValue	k;
	JsonbValue *v;

	if (p->goals == NULL)
		return -1;
	k.type = jbvString;
	k.val.string.val = (char *) usage_type;
	k.val.string.len = strlen(usage_type);
	v = findJsonbValueFromContainer(&p->goals->root, JB_FOBJECT, &k);
	if (v == NULL || v->type != jbvNumeric)
		return -1;
	return DatumGetInt32(DirectFunctionCall1(numeric_int4, NumericGetDatum(v->val.numeric)));
}

/* The calendar date of instant now in time zone tz. */
static DateADT
local_date(TimestampTz now, pg_tz *tz)
{
	struct pg_tm tm;
	fsec_t		fsec;
	int			tzoff;

	if (timestamp2tm(now, &tzoff, &tm, &fsec, NULL, tz) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp out of range")));
	return date2j(tm.tm_year, tm.tm_mon, tm.tm_mday) - POSTGRES_EPOCH_JDATE;
}

static void
raise_future_date(pg_uuid_t *user_id, DateADT date, DateADT today, const char *tz)
{
	ereport(ERROR,
			(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
			 errmsg("usage date %s is in the future for user %s",
					re_date_text(date),
					DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(user_id)))),
			 errdetail("Today is %s in the user's time zone \"%s\".",
					   re_date_text(today), tz),
			 errhint("Omit usage_date to count usage on the user's today.")));
}

static void
raise_total_overflow(pg_uuid_t *user_id, const char *usage_type, int32 count)
{
	ereport(ERROR,
			(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
			 errmsg("usage total of user %s for usage type \"%s\" would overflow",
					DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(user_id))),
					usage_type),
			 errdetail("Adding %d to the stored total exceeds the bigint range.", count)));
}

/*
 * The lifetime upsert as a statement (a new row, or what re_keyed_update
 * declines); values are the statement's parameters.
 */
static void
track_lifetime_statement(Datum *values, pg_uuid_t *user_id, const char *usage_type,
						 int32 count, MemoryContext callerctx, int64 *total,
						 bool *first_use, int32 *cached_streak, DateADT *cached_end,
						 bool *end_null)
{
	bool		isnull;
	Datum		d;
	int			ret;

	PG_TRY();
	{
		ret = SPI_execute_plan(track_plan, values, NULL, false, 0);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(callerctx);
		edata = CopyErrorData();
		if (edata->sqlerrcode == ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE)
		{
			FlushErrorState();
			raise_total_overflow(user_id, usage_type, count);
		}
		PG_RE_THROW();
	}
	PG_END_TRY();
	if (ret != SPI_OK_INSERT_RETURNING || SPI_processed != 1)
		elog(ERROR, "tracking usage failed: %s", SPI_result_code_string(ret));
	*total = DatumGetInt64(col(COL_TOTAL, &isnull));
	/* a row inserted now, not one a backfill left at zero */
	*first_use = (*total == count) && DatumGetBool(col(COL_FRESH, &isnull));
	*cached_streak = DatumGetInt32(col(COL_CURRENT_STREAK, &isnull));
	d = col(COL_STREAK_END, end_null);
	*cached_end = *end_null ? 0 : DatumGetDateADT(d);
}

/* lifetime row: total + count, last used now, the highest milestone crossed as the latest */
static void
lifetime_add(ReKeyedRel *kr, Datum *values, bool *nulls, void *arg)
{
	UsageAdd   *add = arg;
	int64		old = DatumGetInt64(RE_KEYED_COL(kr, values, LT_TOTAL));
	int64		total;
	int64		highest = 0;
	int			i;

	if (pg_add_s64_overflow(old, add->count, &total))
		raise_total_overflow(add->user_id, add->usage_type, add->count);
	RE_KEYED_COL(kr, values, LT_TOTAL) = Int64GetDatum(total);
	RE_KEYED_COL(kr, values, LT_LAST_USED) = TimestampTzGetDatum(add->now);
	add->latest = 0;

	for (i = 0; i < add->nladder; i++)
		if (add->ladder[i] > old && add->ladder[i] <= total)
			highest = Max(highest, add->ladder[i]);
	add->old_latest_null = RE_KEYED_NULL(kr, nulls, LT_LATEST);
	add->old_latest = add->old_latest_null ? 0 :
		DatumGetInt64(RE_KEYED_COL(kr, values, LT_LATEST));
	add->old_latest_at_null = RE_KEYED_NULL(kr, nulls, LT_LATEST_AT);
	add->old_latest_at = add->old_latest_at_null ? 0 :
		DatumGetTimestampTz(RE_KEYED_COL(kr, values, LT_LATEST_AT));
	if (highest > 0 && (add->old_latest_null || add->old_latest < highest))
	{
		RE_KEYED_COL(kr, values, LT_LATEST) = Int64GetDatum(highest);
		RE_KEYED_NULL(kr, nulls, LT_LATEST) = false;
		RE_KEYED_COL(kr, values, LT_LATEST_AT) = TimestampTzGetDatum(add->now);
		RE_KEYED_NULL(kr, nulls, LT_LATEST_AT) = false;
		add->latest = highest;
	}
}

/* daily row: count + count, and the goal when reached and its streak is known */
static void
daily_add(ReKeyedRel *kr, Datum *values, bool *nulls, void *arg)
{
	UsageAdd   *add = arg;
	int64		count;

	if (pg_add_s64_overflow(DatumGetInt64(RE_KEYED_COL(kr, values, DY_COUNT)),
							add->count, &count))
		raise_total_overflow(add->user_id, add->usage_type, add->count);
	RE_KEYED_COL(kr, values, DY_COUNT) = Int64GetDatum(count);
	add->goal_now = false;
	if (add->fold_streak > 0 && add->goal > 0 && count >= add->goal &&
		RE_KEYED_NULL(kr, nulls, DY_ACHIEVED_AT))
	{
		RE_KEYED_COL(kr, values, DY_ACHIEVED_AT) = TimestampTzGetDatum(add->now);
		RE_KEYED_NULL(kr, nulls, DY_ACHIEVED_AT) = false;
		RE_KEYED_COL(kr, values, DY_GOAL) = Int32GetDatum(add->goal);
		RE_KEYED_NULL(kr, nulls, DY_GOAL) = false;
		RE_KEYED_COL(kr, values, DY_STREAK) = Int32GetDatum(add->fold_streak);
		RE_KEYED_NULL(kr, nulls, DY_STREAK) = false;
		add->goal_now = true;
	}
}

/*
 * The lifetime update took a milestone as the latest that this call did not
 * record (it was recorded before: totals lowered by a new backfill): put
 * back the latest this call did record, or the old one.
 */
static void
correct_latest_milestone(Datum *keys, UsageAdd *add, int64 recorded)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	int			ret;

	if (plan == NULL)
	{
		Oid			types[5] = {TEXTOID, UUIDOID, TEXTOID, INT8OID, TIMESTAMPTZOID};

		plan = re_prepare_saved("UPDATE revenue_engine.lifetime_usage"
								"   SET latest_milestone = $4, latest_milestone_at = $5"
								" WHERE tenant_id = $1 AND user_id = $2 AND usage_type = $3",
								5, types);
	}
	values[0] = keys[0];
	values[1] = keys[1];
	values[2] = keys[2];
	if (recorded > 0 && (add->old_latest_null || recorded > add->old_latest))
	{
		values[3] = Int64GetDatum(recorded);
		values[4] = TimestampTzGetDatum(add->now);
	}
	else
	{
		values[3] = Int64GetDatum(add->old_latest);
		nulls[3] = add->old_latest_null ? 'n' : ' ';
		values[4] = TimestampTzGetDatum(add->old_latest_at);
		nulls[4] = add->old_latest_at_null ? 'n' : ' ';
	}
	ret = SPI_execute_plan(plan, values, nulls, false, 0);
	if (ret != SPI_OK_UPDATE || SPI_processed != 1)
		elog(ERROR, "correcting the latest milestone failed: %s", SPI_result_code_string(ret));
}

PG_FUNCTION_INFO_V1(re_track_daily_usage);
Datum
re_track_daily_usage(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *user_id;
	text	   *usage_type_t;
	char	   *usage_type;
	int32		count;
	const char *tenant = re_current_tenant_name();
	MemoryContext callerctx = CurrentMemoryContext;
	ReOwnerScope scope = {0};
	EventContext ev = {0};
	Datum		values[6];
	Datum		keys[4];
	UsageAdd	add;
	Datum	   *row;
	bool	   *rownulls;
	bool		lifetime_keyed;
	bool		isnull;
	int			ret;

	/* results, copied out of SPI memory */
	const char *tz;
	TimestampTz now;
	DateADT		today;
	ProfileEntry profile;
	DateADT		usage_date;
	int32		goal;
	int64		day_count;
	int64		total;
	bool		already_achieved;
	bool		goal_now = false;
	int32		streak_days = 0;
	int32		streak_milestone = 0;
	bool		first_use;
	int64	   *crossed;
	int			ncrossed = 0;
	int64		highest = 0;
	int32		day_streak;
	int32		cached_streak;
	bool		end_null;
	DateADT		cached_end;
	UsageSettings settings;
	int			i;
	JsonbParseState *st;

	re_require_arg(fcinfo, 0, "user_id");
	re_require_arg(fcinfo, 1, "usage_type");
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("count must not be null"),
				 errhint("Omit count to count one use.")));
	user_id = PG_GETARG_UUID_P(0);
	usage_type_t = PG_GETARG_TEXT_PP(1);
	usage_type = text_to_cstring(usage_type_t);
	re_check_name("usage type", usage_type);
	count = PG_GETARG_INT32(2);
	if (count <= 0 || count > re_max_count_per_call)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("count %d is out of range", count),
				 errhint("Count between 1 and %d uses per call (revenue_engine.max_count_per_call).",
						 re_max_count_per_call)));
	if (!PG_ARGISNULL(3) && DATE_NOT_FINITE(PG_GETARG_DATEADT(3)))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("usage date %s is not a calendar day",
						re_date_text(PG_GETARG_DATEADT(3)))));

	/* a committed change of a profile or a usage type resets the caches */
	AcceptInvalidationMessages();
	now = re_clock_now();

	re_connect_as_owner(&scope);
	prepare_plans();
	ensure_caches();

	/* copied: a cache reset during the statements below frees the entries */
	settings = *lookup_settings(usage_type);
	settings.milestones = memcpy(MemoryContextAlloc(callerctx, sizeof(int64) * Max(settings.nmilestones, 1)),
								 settings.milestones, sizeof(int64) * settings.nmilestones);
	settings.streak_milestones = memcpy(MemoryContextAlloc(callerctx, sizeof(int32) * Max(settings.nstreak, 1)),
										settings.streak_milestones, sizeof(int32) * settings.nstreak);
	lookup_profile(tenant, user_id, &profile);
	tz = profile.tzname;
	goal = profile_goal(&profile, usage_type);
	if (goal < 0)
		goal = settings.daily_goal;
	today = local_date(now, profile.tz);
	if (PG_ARGISNULL(3))
		usage_date = today;
	else
	{
		usage_date = PG_GETARG_DATEADT(3);
		if (usage_date > today)
			raise_future_date(user_id, usage_date, today, tz);
	}

	values[0] = CStringGetTextDatum(tenant);
	values[1] = UUIDPGetDatum(user_id);
	values[2] = PointerGetDatum(usage_type_t);
	values[3] = Int64GetDatum((int64) count);
	values[4] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());

	/*
	 * The lifetime row first: its lock serializes calls for this user and
	 * usage type, so the thresholds crossed are those in (total - count, total].
	 */
	memset(&add, 0, sizeof(add));
	add.user_id = user_id;
	add.usage_type = usage_type;
	add.count = count;
	add.now = GetCurrentTransactionStartTimestamp();
	add.ladder = settings.milestones;
	add.nladder = settings.nmilestones;
	add.goal = goal;
	keys[0] = values[0];
	keys[1] = values[1];
	keys[2] = values[2];
	lifetime_keyed = re_keyed_update(&lifetime_rel, keys, lifetime_add, &add, &row, &rownulls);
	if (lifetime_keyed)
	{
		total = DatumGetInt64(RE_KEYED_COL(&lifetime_rel, row, LT_TOTAL));
		first_use = (total == count) &&
			DatumGetTimestampTz(RE_KEYED_COL(&lifetime_rel, row, LT_FIRST_USED)) == add.now;
		cached_streak = DatumGetInt32(RE_KEYED_COL(&lifetime_rel, row, LT_CURRENT_STREAK));
		end_null = RE_KEYED_NULL(&lifetime_rel, rownulls, LT_STREAK_END);
		cached_end = end_null ? 0 :
			DatumGetDateADT(RE_KEYED_COL(&lifetime_rel, row, LT_STREAK_END));
	}
	else
		track_lifetime_statement(values, user_id, usage_type, count, callerctx,
								 &total, &first_use, &cached_streak, &cached_end, &end_null);

	values[4] = DateADTGetDatum(usage_date);
	keys[3] = values[4];
	add.fold_streak = streak_from_run(usage_date, cached_streak, cached_end, end_null);
	if (re_keyed_update(&daily_rel, keys, daily_add, &add, &row, &rownulls))
	{
		day_count = DatumGetInt64(RE_KEYED_COL(&daily_rel, row, DY_COUNT));
		already_achieved = !RE_KEYED_NULL(&daily_rel, rownulls, DY_ACHIEVED_AT) &&
			!add.goal_now;
		day_streak = RE_KEYED_NULL(&daily_rel, rownulls, DY_STREAK) ? 0 :
			DatumGetInt32(RE_KEYED_COL(&daily_rel, row, DY_STREAK));
	}
	else
	{
		ret = SPI_execute_plan(track_daily_plan, values, NULL, false, 0);
		if (ret != SPI_OK_INSERT_RETURNING || SPI_processed != 1)
			elog(ERROR, "tracking usage failed: %s", SPI_result_code_string(ret));
		day_count = DatumGetInt64(col(COL_DAY_COUNT, &isnull));
		already_achieved = DatumGetBool(col(COL_ACHIEVED, &isnull));
		{
			Datum		d = col(COL_DAY_STREAK, &isnull);

			day_streak = isnull ? 0 : DatumGetInt32(d);
		}
	}

	ev.tenant = tenant;
	ev.user_id = user_id;
	ev.scope = &scope;

	/* Milestones crossed by this call: thresholds in (total - count, total]. */
	crossed = MemoryContextAlloc(callerctx, sizeof(int64) * Max(settings.nmilestones, 1));
	for (i = 0; i < settings.nmilestones; i++)
	{
		int64		m = settings.milestones[i];
		pg_uuid_t	event_id;

		if (m <= total - count || m > total)
			continue;
		re_new_event_id(&event_id);
		if (!record_milestone(tenant, user_id, usage_type_t, m, total, &event_id,
							  lifetime_keyed))
			continue;
		{
			Jsonb	   *data;

			re_jb_begin(&st);
			re_jb_str(&st, "usage_type", usage_type);
			re_jb_str(&st, "milestone_type", usage_type);
			re_jb_int(&st, "milestone_value", m);
			re_jb_int(&st, "lifetime_total", total);
			re_jb_bool(&st, "is_first", i == 0);
			re_jb_date(&st, "date", usage_date);
			data = re_jb_end(&st);
			emit_event(&ev, "milestone_reached", data, &event_id);
		}
		crossed[ncrossed++] = m;
		highest = m;
	}
	if (add.latest > 0 && highest != add.latest)
		correct_latest_milestone(keys, &add, highest);

	/* Daily goal and streak. */
	{
		if (already_achieved)
			streak_days = day_streak;
		else if (add.goal_now || (goal > 0 && day_count >= goal))
		{
			pg_uuid_t	event_id;
			Jsonb	   *data;

			goal_now = true;
			if (add.goal_now)
			{
				/* the daily update marked it: the run's cache is all that is left */
				streak_days = add.fold_streak;
				set_lifetime_run(keys, usage_date, streak_days);
			}
			else
				streak_days = achieve_goal(tenant, user_id, usage_type_t, usage_date,
										   goal, cached_streak, cached_end, end_null);
			if (in_ladder(settings.streak_milestones, settings.nstreak, streak_days))
				streak_milestone = streak_days;

			re_new_event_id(&event_id);
			re_jb_begin(&st);
			re_jb_str(&st, "usage_type", usage_type);
			re_jb_date(&st, "date", usage_date);
			re_jb_int(&st, "count", day_count);
			re_jb_int(&st, "goal", goal);
			re_jb_int(&st, "streak_days", streak_days);
			if (streak_milestone > 0)
				re_jb_int(&st, "streak_milestone", streak_milestone);
			else
				re_jb_null(&st, "streak_milestone");
			data = re_jb_end(&st);
			emit_event(&ev, "daily_goal_achieved", data, &event_id);
		}
		else if (!end_null && cached_end == usage_date - 1)
			streak_days = cached_streak;
		else if (!end_null && cached_end >= usage_date)
			streak_days = streak_of_day(tenant, user_id, usage_type_t, usage_date - 1);
		else
			streak_days = 0;
	}

	/* Feature first used. */
	if (first_use && settings.is_feature)
	{
		pg_uuid_t	event_id;
		Jsonb	   *data;

		re_new_event_id(&event_id);
		re_jb_begin(&st);
		re_jb_str(&st, "feature", usage_type);
		re_jb_timestamptz(&st, "first_used_at", GetCurrentTransactionStartTimestamp());
		re_jb_date(&st, "date", usage_date);
		data = re_jb_end(&st);
		emit_event(&ev, "feature_first_used", data, &event_id);
	}

	re_disconnect_as_owner(&scope);

	/* The response, in the caller's memory context. */
	re_jb_begin(&st);
	re_jb_bool(&st, "success", true);
	re_jb_str(&st, "usage_type", usage_type);
	re_jb_int(&st, "count", count);
	re_jb_date(&st, "date", usage_date);
	re_jb_str(&st, "timezone", tz);
	re_jb_int(&st, "current_count", day_count);
	if (goal > 0)
		re_jb_int(&st, "daily_goal", goal);
	else
		re_jb_null(&st, "daily_goal");
	re_jb_bool(&st, "goal_achieved", already_achieved || goal_now);
	re_jb_bool(&st, "goal_just_achieved", goal_now);
	re_jb_int(&st, "lifetime_total", total);
	if (ncrossed > 0)
		re_jb_int(&st, "milestone_reached", highest);
	else
		re_jb_null(&st, "milestone_reached");
	re_jb_int_array(&st, "milestones", crossed, ncrossed);
	re_jb_int(&st, "streak_days", streak_days);
	if (streak_milestone > 0)
		re_jb_int(&st, "streak_milestone", streak_milestone);
	else
		re_jb_null(&st, "streak_milestone");
	re_jb_bool(&st, "first_use", first_use);
	re_jb_int(&st, "events", ev.nevents);
	PG_RETURN_JSONB_P(re_jb_end(&st));
}

/* SQL: revenue_engine.builtin_usage_types() */
PG_FUNCTION_INFO_V1(re_builtin_usage_types);
Datum
re_builtin_usage_types(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	for (i = 0; i < lengthof(builtin_types); i++)
	{
		const BuiltinUsageType *b = &builtin_types[i];
		Datum		values[5];
		bool		nulls[5] = {false, false, false, false, false};
		Datum	   *ms = palloc(sizeof(Datum) * Max(b->nmilestones, 1));
		Datum		sm[lengthof(default_streak_ladder)];
		int			j;

		for (j = 0; j < b->nmilestones; j++)
			ms[j] = Int64GetDatum(b->milestones[j]);
		for (j = 0; j < lengthof(default_streak_ladder); j++)
			sm[j] = Int32GetDatum(default_streak_ladder[j]);
		values[0] = CStringGetTextDatum(b->name);
		values[1] = PointerGetDatum(construct_array(ms, b->nmilestones, INT8OID,
													8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		values[2] = PointerGetDatum(construct_array(sm, lengthof(default_streak_ladder),
													INT4OID, 4, true, TYPALIGN_INT));
		values[3] = Int32GetDatum(b->daily_goal);
		nulls[3] = (b->daily_goal == 0);
		values[4] = BoolGetDatum(b->is_feature);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* SQL: revenue_engine.builtin_usage_type(usage_type text) */
PG_FUNCTION_INFO_V1(re_builtin_usage_type);
Datum
re_builtin_usage_type(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	const BuiltinUsageType *b;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};
	Datum	   *ms;
	Datum		sm[lengthof(default_streak_ladder)];
	char	   *name;
	int			j;

	re_require_arg(fcinfo, 0, "usage_type");
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	tupdesc = BlessTupleDesc(tupdesc);

	b = builtin_settings(name);
	ms = palloc(sizeof(Datum) * Max(b->nmilestones, 1));
	for (j = 0; j < b->nmilestones; j++)
		ms[j] = Int64GetDatum(b->milestones[j]);
	for (j = 0; j < lengthof(default_streak_ladder); j++)
		sm[j] = Int32GetDatum(default_streak_ladder[j]);
	values[0] = PointerGetDatum(construct_array(ms, b->nmilestones, INT8OID,
												8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[1] = PointerGetDatum(construct_array(sm, lengthof(default_streak_ladder),
												INT4OID, 4, true, TYPALIGN_INT));
	values[2] = Int32GetDatum(b->daily_goal);
	nulls[2] = (b->daily_goal == 0);
	values[3] = BoolGetDatum(b->is_feature);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/* SQL: revenue_engine.canonical_timezone(timezone text) */
PG_FUNCTION_INFO_V1(re_canonical_timezone);
Datum
re_canonical_timezone(PG_FUNCTION_ARGS)
{
	char	   *name;
	pg_tz	   *tz;

	re_require_arg(fcinfo, 0, "timezone");
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	tz = re_lookup_timezone(name);
	PG_RETURN_TEXT_P(cstring_to_text(pg_get_timezone_name(tz)));
}

/* SQL: revenue_engine.check_usage_type(usage_type text) */
PG_FUNCTION_INFO_V1(re_check_usage_type);
Datum
re_check_usage_type(PG_FUNCTION_ARGS)
{
	re_require_arg(fcinfo, 0, "usage_type");
	re_check_name("usage type", text_to_cstring(PG_GETARG_TEXT_PP(0)));
	PG_RETURN_DATUM(PG_GETARG_DATUM(0));
}

/* Trigger: a change of usage_types empties every backend's usage type cache. */
PG_FUNCTION_INFO_V1(re_invalidate_cache);
Datum
re_invalidate_cache(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("revenue_engine.invalidate_cache() must be called as a trigger")));
	re_invalidate_table(trigdata->tg_relation, "usage_types");
	return PointerGetDatum(NULL);
}
