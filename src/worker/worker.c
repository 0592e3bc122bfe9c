/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The launcher starts one delivery worker in every database where the
 *	  extension is installed.  A worker claims due rows in short
 *	  transactions, performs the requests concurrently with libcurl, and
 *	  records outcomes in short transactions; no transaction is open while
 *	  requests are on the network.  A commit that enqueues sets the worker's
 *	  latch, so delivery starts within milliseconds.  DROP DATABASE (and the
 *	  ALTER DATABASE forms that need the database idle) stop the database's
 *	  worker first, so they are never blocked by it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "lib/ilist.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "tcop/tcopprot.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "revenue_engine.h"
#include "http/http.h"
#include "outbox/delivery.h"
#include "blasts/blasts.h"
#include "worker/worker.h"

#define RE_MAX_DATABASES 64
#define RE_LAUNCHER_NAPTIME_MS 10000
#define RE_RECORD_EVERY_MS 20
#define RE_RECORD_BATCH 256
#define RE_CLAIM_BATCH 500
#define RE_MAINTENANCE_EVERY_MS 10000
#define RE_MAX_DONE 10000		/* worker_max_in_flight's maximum */
#define RE_STOP_GRACE_MS 3000	/* requests in flight at SIGTERM: well inside
								 * pg_ctl's 60 s */
#define RE_ERROR_BACKOFF_MS 1000	/* a unit that failed waits before its retry */
#define RE_CLAIM_EVERY_MS 2		/* while requests are in flight, freed room is
								 * claimed in batches this far apart */

bool		re_http_allow_private = false;
int			re_worker_max_in_flight = 256;

typedef struct ReWorkerSlot
{
	bool		in_use;
	Oid			dboid;
	pid_t		pid;
	Latch	   *latch;
	char		state[32];
	TimestampTz started_at;
	TimestampTz last_activity;
	TimestampTz no_start_before;	/* stopped for DDL on its database */
	TimestampTz no_extension_at;	/* found no extension then */
	int			in_flight;
	uint64		requests;
	uint64		sent;
	uint64		retried;
	uint64		dead;
} ReWorkerSlot;

typedef struct ReShared
{
	slock_t		mutex;
	Latch	   *launcher_latch;
	bool		rescan;
	ReWorkerSlot slots[RE_MAX_DATABASES];
} ReShared;

static ReShared *shared = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static ProcessUtility_hook_type prev_process_utility = NULL;
static bool wake_pending = false;
static ReWorkerSlot *my_slot = NULL;

static void
shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(ReShared)));
}

static void
shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("revenue_engine", sizeof(ReShared), &found);
	if (!found)
	{
		memset(shared, 0, sizeof(ReShared));
		SpinLockInit(&shared->mutex);
	}
	LWLockRelease(AddinShmemInitLock);
}

static void
set_state(const char *state)
{
	if (my_slot == NULL)
		return;
	SpinLockAcquire(&shared->mutex);
	strlcpy(my_slot->state, state, sizeof(my_slot->state));
	my_slot->last_activity = GetCurrentTimestamp();
	SpinLockRelease(&shared->mutex);
}

/* Waking workers at commit */

void
re_worker_wake_at_commit(void)
{
	wake_pending = true;
}

static void
wake_database_worker(Oid dboid)
{
	Latch	   *latch = NULL;
	int			i;

	if (shared == NULL)
		return;
	SpinLockAcquire(&shared->mutex);
	for (i = 0; i < RE_MAX_DATABASES; i++)
	{
		if (shared->slots[i].in_use && shared->slots[i].dboid == dboid &&
			shared->slots[i].latch != NULL)
		{
			latch = shared->slots[i].latch;
			break;
		}
	}
	if (latch == NULL)
	{
		/* no worker yet (CREATE EXTENSION, or it died): ask the launcher */
		shared->rescan = true;
		latch = shared->launcher_latch;
	}
	SpinLockRelease(&shared->mutex);
	if (latch)
		SetLatch(latch);
}

static void
xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (wake_pending)
				wake_database_worker(MyDatabaseId);
			wake_pending = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			wake_pending = false;
			break;
		default:
			break;
	}
}

/* Stopping a database's worker before DDL that needs the database idle */

static void
stop_database_worker(Oid dboid)
{
	pid_t		pid = 0;
	int			i;
	int			waited;

	if (shared == NULL || !OidIsValid(dboid))
		return;
	SpinLockAcquire(&shared->mutex);
	for (i = 0; i < RE_MAX_DATABASES; i++)
	{
		ReWorkerSlot *s = &shared->slots[i];

		if (s->in_use && s->dboid == dboid)
		{
			s->no_start_before = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 30000);
			pid = s->pid;
		}
	}
	SpinLockRelease(&shared->mutex);
	if (pid == 0)
		return;

	kill(pid, SIGTERM);
	for (waited = 0; waited < 5000; waited += 10)
	{
		bool		gone = true;

		SpinLockAcquire(&shared->mutex);
		for (i = 0; i < RE_MAX_DATABASES; i++)
			if (shared->slots[i].in_use && shared->slots[i].dboid == dboid &&
				shared->slots[i].pid == pid)
				gone = false;
		SpinLockRelease(&shared->mutex);
		if (gone)
			return;
		pg_usleep(10000L);
		CHECK_FOR_INTERRUPTS();
	}
}

static void
process_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
				ProcessUtilityContext context, ParamListInfo params,
				QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *stmt = pstmt->utilityStmt;
	const char *dbname = NULL;

	if (IsA(stmt, DropdbStmt))
		dbname = ((DropdbStmt *) stmt)->dbname;
	else if (IsA(stmt, RenameStmt) && ((RenameStmt *) stmt)->renameType == OBJECT_DATABASE)
		dbname = ((RenameStmt *) stmt)->subname;
	else if (IsA(stmt, AlterDatabaseStmt))
		dbname = ((AlterDatabaseStmt *) stmt)->dbname;
	if (dbname != NULL)
		stop_database_worker(get_database_oid(dbname, true));

	if (prev_process_utility)
		prev_process_utility(pstmt, queryString, readOnlyTree, context, params,
							 queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
								queryEnv, dest, qc);
}

/* revenue_engine.parked_sweep_interval */
static int	re_parked_sweep_interval_ms = 2000;

void
re_worker_init(void)
{
	BackgroundWorker worker;

	DefineCustomBoolVariable("revenue_engine.http_allow_private",
							 "Let deliveries reach loopback, private, link-local and other internal addresses.",
							 "Off: such addresses are refused after DNS resolution. Tests and demos turn it on for 127.0.0.1.",
							 &re_http_allow_private,
							 false,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);
	DefineCustomIntVariable("revenue_engine.worker_max_in_flight",
							"Requests a delivery worker keeps in flight at most.",
							NULL,
							&re_worker_max_in_flight,
							256, 1, 10000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("revenue_engine.parked_sweep_interval",
							"How often a busy delivery worker applies statuses parked in a race with their message id landing.",
							"0 turns the worker's sweep off (tests); revenue_engine.apply_parked_statuses() does it by hand.",
							&re_parked_sweep_interval_ms,
							2000, 0, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = shmem_startup;
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = process_utility;
	RegisterXactCallback(xact_callback, NULL);

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	strlcpy(worker.bgw_library_name, "revenue_engine", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "re_launcher_main", BGW_MAXLEN);
	strlcpy(worker.bgw_name, "revenue_engine launcher", BGW_MAXLEN);
	strlcpy(worker.bgw_type, "revenue_engine launcher", BGW_MAXLEN);
	RegisterBackgroundWorker(&worker);
}

/* The launcher */

static bool
start_worker(Oid dboid, int slotno, BackgroundWorkerHandle **handle)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	strlcpy(worker.bgw_library_name, "revenue_engine", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "re_worker_main", BGW_MAXLEN);
	snprintf(worker.bgw_name, BGW_MAXLEN, "revenue_engine worker for database %u", dboid);
	strlcpy(worker.bgw_type, "revenue_engine worker", BGW_MAXLEN);
	worker.bgw_main_arg = Int32GetDatum(slotno);
	worker.bgw_notify_pid = MyProcPid;
	return RegisterDynamicBackgroundWorker(&worker, handle);
}

void
re_launcher_main(Datum arg)
{
	BackgroundWorkerHandle *handles[RE_MAX_DATABASES] = {0};
	bool		warned_full = false;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("revenue_engine launcher");

	SpinLockAcquire(&shared->mutex);
	shared->launcher_latch = MyLatch;
	shared->rescan = true;
	SpinLockRelease(&shared->mutex);

	for (;;)
	{
		Oid			dbs[1024];
		int			ndbs = 0;
		int			i,
					j;
		TimestampTz now;
		bool		rescan;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		ResetLatch(MyLatch);

		/* forget workers that stopped */
		SpinLockAcquire(&shared->mutex);
		rescan = shared->rescan;
		shared->rescan = false;
		SpinLockRelease(&shared->mutex);
		for (i = 0; i < RE_MAX_DATABASES; i++)
		{
			pid_t		pid;

			if (handles[i] != NULL &&
				GetBackgroundWorkerPid(handles[i], &pid) == BGWH_STOPPED)
			{
				pfree(handles[i]);
				handles[i] = NULL;
				SpinLockAcquire(&shared->mutex);
				shared->slots[i].in_use = false;
				shared->slots[i].pid = 0;
				shared->slots[i].latch = NULL;
				SpinLockRelease(&shared->mutex);
			}
		}

		/* every database that accepts connections */
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
		{
			Relation	rel = table_open(DatabaseRelationId, AccessShareLock);
			TableScanDesc scan = table_beginscan_catalog(rel, 0, NULL);
			HeapTuple	tup;

			while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL &&
				   ndbs < lengthof(dbs))
			{
				Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);

				if (db->datallowconn && !db->datistemplate)
					dbs[ndbs++] = db->oid;
			}
			table_endscan(scan);
			table_close(rel, AccessShareLock);
		}
		PopActiveSnapshot();
		CommitTransactionCommand();

		now = GetCurrentTimestamp();
		for (j = 0; j < ndbs; j++)
		{
			int			free_slot = -1;
			bool		running = false;

			SpinLockAcquire(&shared->mutex);
			for (i = 0; i < RE_MAX_DATABASES; i++)
			{
				ReWorkerSlot *s = &shared->slots[i];

				/*
				 * Skip a database whose worker runs, was stopped for DDL, or
				 * found no extension lately (a commit that installs it asks
				 * for a rescan).
				 */
				if (s->dboid == dbs[j] &&
					(s->in_use || now < s->no_start_before ||
					 (!rescan && s->no_extension_at != 0 &&
					  now < TimestampTzPlusMilliseconds(s->no_extension_at, 300000))))
					running = true;
				if (!s->in_use && s->dboid == dbs[j])
					free_slot = i;
			}
			/* else a slot never used, else one whose database went away */
			for (i = 0; free_slot < 0 && i < RE_MAX_DATABASES; i++)
				if (!shared->slots[i].in_use && shared->slots[i].dboid == InvalidOid)
					free_slot = i;
			for (i = 0; free_slot < 0 && i < RE_MAX_DATABASES; i++)
			{
				ReWorkerSlot *s = &shared->slots[i];
				int			k;
				bool		alive = false;

				for (k = 0; k < ndbs; k++)
					if (dbs[k] == s->dboid)
						alive = true;
				if (!s->in_use && !alive)
					free_slot = i;
			}
			if (!running && free_slot >= 0)
			{
				ReWorkerSlot *s = &shared->slots[free_slot];

				memset(s, 0, sizeof(ReWorkerSlot));
				s->in_use = true;
				s->dboid = dbs[j];
				strlcpy(s->state, "starting", sizeof(s->state));
			}
			SpinLockRelease(&shared->mutex);
			if (running)
				continue;
			if (free_slot < 0)
			{
				if (!warned_full)
					ereport(WARNING,
							(errmsg("revenue_engine: more than %d databases, database %u gets no delivery worker",
									RE_MAX_DATABASES, dbs[j])));
				warned_full = true;
				continue;
			}
			if (!start_worker(dbs[j], free_slot, &handles[free_slot]))
			{
				ereport(WARNING,
						(errmsg("revenue_engine: could not start a delivery worker for database %u", dbs[j]),
						 errhint("Raise max_worker_processes: the launcher and one worker per database need one each.")));
				SpinLockAcquire(&shared->mutex);
				shared->slots[free_slot].in_use = false;
				/* try again at the next scan, not at once */
				shared->slots[free_slot].no_start_before =
					TimestampTzPlusMilliseconds(now, RE_LAUNCHER_NAPTIME_MS);
				SpinLockRelease(&shared->mutex);
			}
		}

		pgstat_report_activity(STATE_IDLE, NULL);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 RE_LAUNCHER_NAPTIME_MS, PG_WAIT_EXTENSION);
	}
}

/* A database's worker */

static void
release_slot(int code, Datum arg)
{
	if (my_slot == NULL)
		return;
	SpinLockAcquire(&shared->mutex);
	my_slot->pid = 0;
	my_slot->latch = NULL;
	my_slot->in_flight = 0;
	strlcpy(my_slot->state, "stopped", sizeof(my_slot->state));
	SpinLockRelease(&shared->mutex);
}

/* The worker found no extension: wait for CREATE EXTENSION to wake the launcher. */
static void
exit_no_extension(void)
{
	Latch	   *launcher = NULL;

	SpinLockAcquire(&shared->mutex);
	if (MyLatch->is_set)
	{
		/* a commit woke us after we looked: it may have created the extension */
		shared->rescan = true;
		launcher = shared->launcher_latch;
	}
	else
		my_slot->no_extension_at = GetCurrentTimestamp();
	SpinLockRelease(&shared->mutex);
	if (launcher)
		SetLatch(launcher);
	proc_exit(0);
}

/*
 * How many rows target t may start now: its in-flight limit and, when it is
 * rate limited, the tokens refilled since the last look.  When it is out of
 * tokens, *token_due becomes (at the latest) when the next one is there.
 */
static int
target_capacity(ReTarget *t, TimestampTz now, TimestampTz *token_due)
{
	int			cap = t->max_in_flight - t->in_flight;
	ReTarget   *b = t->bucket ? t->bucket : t;	/* whose rate limit */

	if (b->rate_limit > 0)
	{
		double		per_token_s = b->rate_period_s / b->rate_limit;

		b->tokens = Min((double) b->rate_limit,
						b->tokens + (now - b->tokens_at) / 1e6 / per_token_s);
		b->tokens_at = now;
		cap = Min(cap, (int) b->tokens);
		if (b->tokens < 1.0)
		{
			TimestampTz due = TimestampTzPlusMilliseconds(now,
														  (int64) ((1.0 - b->tokens) * per_token_s * 1000) + 1);

			if (*token_due == 0 || due < *token_due)
				*token_due = due;
		}
	}
	return Max(cap, 0);
}

/*
 * The worker's state between iterations of its loop.  A job is in one place
 * at a time: on the network (in_flight list) or completed and waiting to be
 * recorded (done[]).
 */
typedef struct WorkerLoop
{
	ReHttpClient *client;
	WaitEventSet *events;		/* the latch, the postmaster, libcurl's sockets */
	MemoryContext cxt;			/* reset at every iteration */
	ReTargetSet *targets;
	int			claim_cursor;	/* where the next claim starts in targets->all */
	dlist_head	in_flight;
	int			nin_flight;
	ReJob	  **done;
	int			ndone;
	ReHttpRequest **completed;
	bool		want_claim;		/* every target may have rows due */
	bool		claim_more;		/* room was freed: claim for those that may
								 * have more */
	bool		sweep_soon;
	TimestampTz next_due;
	TimestampTz token_due;
	TimestampTz last_record;
	TimestampTz last_claim;
	TimestampTz last_refresh;
	TimestampTz last_maintenance;
	TimestampTz last_sweep;
	TimestampTz stop_at;		/* after SIGTERM: when requests in flight are
								 * given up */
} WorkerLoop;

/*
 * SIGTERM asks the worker to stop claiming, let its requests finish and
 * record every outcome it holds.  die() would end it wherever it is, its
 * outcomes lost and its requests sent again after the lease.
 */
static volatile sig_atomic_t stop_requested = false;

static void
handle_sigterm(SIGNAL_ARGS)
{
	int			save_errno = errno;

	stop_requested = true;
	SetLatch(MyLatch);
	errno = save_errno;
}

static void
unit_error_context(void *arg)
{
	errcontext("revenue_engine worker: %s", (const char *) arg);
}

/*
 * Run one unit of work (its own short transactions).  An ERROR aborts the
 * transaction, is logged with what the unit was doing, and the worker goes
 * on: false, with the message in *error (in the caller's context) if asked.
 */
static bool
run_unit(const char *what, void (*fn) (void *), void *arg, char **error)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile bool ok = true;

	PG_TRY();
	{
		ErrorContextCallback callback;

		callback.callback = unit_error_context;
		callback.arg = (void *) what;
		callback.previous = error_context_stack;
		error_context_stack = &callback;
		fn(arg);
		error_context_stack = callback.previous;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		EmitErrorReport();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		MemoryContextSwitchTo(cxt);
		pgstat_report_activity(STATE_IDLE, NULL);
		if (error)
			*error = pstrdup(edata->message);
		FreeErrorData(edata);
		ok = false;
	}
	PG_END_TRY();
	return ok;
}

static void
finish_batch(ReJob *job)
{
	job->target->held--;
	if (--job->batch->remaining == 0)
		MemoryContextDelete(job->batch->cxt);
}

/* Claiming and starting requests */

static bool
target_rate_limited(ReTarget *t)
{
	return t->bucket ? t->bucket->rate_limit > 0 : t->rate_limit > 0;
}

/* Whether a target filled its last claim and can take more now; sets token_due. */
static bool
targets_want_more(WorkerLoop *w, TimestampTz now)
{
	bool		more = false;
	int			i;

	w->token_due = 0;
	for (i = 0; i < w->targets->n; i++)
	{
		ReTarget   *t = w->targets->all[i];

		if (t->seen && t->may_have_more && now >= t->claim_after &&
			target_capacity(t, now, &w->token_due) > 0)
			more = true;
	}
	return more;
}

/* Sign an event's request and put it on the network, or in done[] if it cannot go. */
static void
start_job(WorkerLoop *w, ReJob *job)
{
	ReTarget   *t = job->target;
	const char *err = NULL;

	job->started_at = GetCurrentTimestamp();
	if (job->kind == RE_JOB_EVENT)
	{
		int			h = job->req.nheaders;
		long		ts = (long) time(NULL);

		snprintf(job->id_header, sizeof(job->id_header), "webhook-id: %s", job->event_id);
		snprintf(job->ts_header, sizeof(job->ts_header), "webhook-timestamp: %ld", ts);
		job->hdrs[h++] = job->id_header;
		job->hdrs[h++] = job->ts_header;
		if (t->nsecrets > 0 &&
			re_http_sign(job->event_id, ts, job->body, job->req.body_len,
						 (const char **) t->secrets, t->nsecrets,
						 job->signature, sizeof(job->signature), &err))
		{
			snprintf(job->sig_header, sizeof(job->sig_header),
					 "webhook-signature: %s", job->signature);
			job->hdrs[h++] = job->sig_header;
		}
		job->req.nheaders = h;
	}
	if (err != NULL || !re_http_start(w->client, &job->req))
	{
		/* never on the network: a failed attempt, recorded as such */
		if (err != NULL)
			snprintf(job->req.error, sizeof(job->req.error), "signing failed: %s", err);
		job->req.transport_error = true;
		w->done[w->ndone++] = job;
		return;
	}
	t->in_flight++;
	dlist_push_tail(&w->in_flight, &job->in_flight_node);
	w->nin_flight++;
}

typedef struct ClaimArgs
{
	ReJobKind	kind;
	ReTarget  **targets;
	int		   *limits;
	int			ntargets;
	int			max;
	ReJob	  **jobs;
	ReBatch    *batch;
	int			n;
} ClaimArgs;

static void
claim_unit(void *arg)
{
	ClaimArgs  *a = arg;

	a->n = re_delivery_claim(a->kind, a->targets, a->limits, a->ntargets, a->max,
							 a->jobs, a->batch);
}

/* A target whose claim failed alone waits, longer after each failure. */
static void
claim_failed(ReTarget *t, TimestampTz now)
{
	t->claim_failures++;
	t->claim_after = TimestampTzPlusMilliseconds(now, RE_ERROR_BACKOFF_MS *
												 (1L << Min(t->claim_failures - 1, 6)));
	t->may_have_more = false;
}

/*
 * Claim for targets of one kind in one statement (up to limits[i] each, max
 * in all) and start the requests.  When the statement fails, each target is
 * claimed alone, so that a bad one only holds itself back.
 */
static int
claim_kind(WorkerLoop *w, ReJobKind kind, ReTarget **targets, int *limits,
		   int ntargets, int max, TimestampTz now)
{
	MemoryContext bcxt;
	ClaimArgs	a = {kind, targets, limits, ntargets, max, NULL, NULL, 0};
	int			last = -1;
	int			k;

	if (ntargets == 0 || max <= 0)
		return 0;
	bcxt = AllocSetContextCreate(TopMemoryContext, "revenue_engine batch",
								 ALLOCSET_DEFAULT_SIZES);
	a.batch = MemoryContextAllocZero(bcxt, sizeof(ReBatch));
	a.batch->cxt = bcxt;
	a.jobs = palloc(sizeof(ReJob *) * max);
	for (k = 0; k < ntargets; k++)
		targets[k]->last_claimed = 0;
	if (!run_unit(kind == RE_JOB_EVENT ? "claiming events" :
				  kind == RE_JOB_SEND ? "claiming sends" : "claiming status polls",
				  claim_unit, &a, NULL))
	{
		int			n = 0;

		MemoryContextDelete(bcxt);
		if (ntargets == 1)
		{
			claim_failed(targets[0], now);
			return 0;
		}
		for (k = 0; k < ntargets && n < max; k++)
			n += claim_kind(w, kind, &targets[k], &limits[k], 1, max - n, now);
		return n;
	}
	if (a.n == 0)
		MemoryContextDelete(bcxt);
	for (k = 0; k < a.n; k++)
		a.jobs[k]->target->last_claimed++;
	for (k = 0; k < ntargets; k++)
		if (targets[k]->last_claimed > 0)
			last = k;
	for (k = 0; k < ntargets; k++)
	{
		ReTarget   *t = targets[k];

		/*
		 * The targets are probed in their order until max rows: those before
		 * the last one that brought rows were probed to the end; after it, a
		 * claim cut short probed none.
		 */
		if (k < last || a.n < max)
			t->may_have_more = (t->last_claimed == limits[k]);
		else if (k == last)
			t->may_have_more = true;
		t->claim_failures = 0;
		t->held += t->last_claimed;
		if (target_rate_limited(t))
			(t->bucket ? t->bucket : t)->tokens -= t->last_claimed;
	}
	for (k = 0; k < a.n; k++)
		start_job(w, a.jobs[k]);
	return a.n;
}

typedef struct RefreshArgs
{
	WorkerLoop *w;
	bool		present;
} RefreshArgs;

static void
refresh_unit(void *arg)
{
	RefreshArgs *a = arg;

	a->present = re_delivery_refresh_targets(a->w->targets);
}

static void
next_due_unit(void *arg)
{
	*(TimestampTz *) arg = re_delivery_next_due();
}

/*
 * Claim for targets with room, at most room rows: one statement per kind.
 * The targets are taken in turn from where the last claim stopped, so that
 * a few busy ones do not starve the others.  all: every target (something
 * may have become due anywhere); else those that may have more, only as many
 * as can fill the room twice over.
 */
static int
claim_targets(WorkerLoop *w, int room, bool all, TimestampTz now)
{
	ReTargetSet *set = w->targets;
	ReTarget  **picked[3];
	int		   *limits[3];
	int			npicked[3] = {0, 0, 0};
	int			claimed = 0;
	int			offered = 0;
	int			last = -1;
	int			kind;
	int			j;
	int			k;

	for (kind = 0; kind < 3; kind++)
	{
		picked[kind] = palloc(sizeof(ReTarget *) * Max(set->n, 1));
		limits[kind] = palloc(sizeof(int) * Max(set->n, 1));
	}
	w->token_due = 0;
	for (j = 0; j < set->n && (all || offered < 2 * room); j++)
	{
		ReTarget   *t = set->all[(w->claim_cursor + j) % set->n];
		int			cap;

		t->last_claimed = 0;
		if (!t->seen || now < t->claim_after || (!all && !t->may_have_more))
			continue;
		cap = Min(target_capacity(t, now, &w->token_due), RE_CLAIM_BATCH);
		if (cap <= 0)
			continue;
		offered += cap;
		picked[t->kind][npicked[t->kind]] = t;
		limits[t->kind][npicked[t->kind]++] = cap;
	}
	for (kind = 0; kind < 3; kind++)
		claimed += claim_kind(w, (ReJobKind) kind, picked[kind], limits[kind],
							  npicked[kind], room - claimed, now);
	/* on after the last target that brought rows, else after those looked at */
	for (k = 0; k < j; k++)
		if (set->all[(w->claim_cursor + k) % set->n]->last_claimed > 0)
			last = k;
	if (set->n > 0)
		w->claim_cursor = (w->claim_cursor + (last >= 0 ? last + 1 : j)) % set->n;
	return claimed;
}

/* Claim what is due for every target with room, if anything may be due. */
static void
claim_step(WorkerLoop *w, TimestampTz now)
{
	bool		more = targets_want_more(w, now);
	int			room;
	int			claimed = 0;

	bool		due = (w->next_due != 0 && now >= w->next_due) ||
		(w->token_due != 0 && now >= w->token_due);
	bool		all = w->want_claim || due;

	/* room freed by a few completions waits a moment to be claimed as a batch */
	if (more && w->nin_flight > 0 &&
		now - w->last_claim < RE_CLAIM_EVERY_MS * 1000L)
		more = false;
	if (!(all || more || w->claim_more))
		return;
	w->want_claim = false;
	w->claim_more = false;
	w->last_claim = now;
	/* endpoints change rarely: reload them at most once a second */
	if (w->last_refresh == 0 || now - w->last_refresh >= 1000000)
	{
		RefreshArgs a = {w, true};

		(void) run_unit("loading endpoints and channels", refresh_unit, &a, NULL);
		w->last_refresh = now;
		if (!a.present)
			return;				/* the extension is gone: the loop ends */
	}
	room = re_worker_max_in_flight - w->nin_flight - w->ndone;
	if (room > 0)
		claimed = claim_targets(w, room, all, now);
	/* after a claim, the next record brings us back; else find the next due row */
	w->next_due = 0;
	if (claimed == 0 &&
		!run_unit("looking for the next due row", next_due_unit, &w->next_due, NULL))
		w->next_due = TimestampTzPlusMilliseconds(now, RE_ERROR_BACKOFF_MS);
}

/* Requests on the network */

static void
job_completed(WorkerLoop *w, ReJob *job)
{
	dlist_delete(&job->in_flight_node);
	job->target->in_flight--;
	w->nin_flight--;
	w->done[w->ndone++] = job;
}

/* What libcurl's ready sockets and due timer have brought to an end. */
static void
drive_requests(WorkerLoop *w)
{
	int			n;
	int			k;

	n = re_http_poll(w->client, 0, w->completed, RE_MAX_DONE - w->ndone);
	for (k = 0; k < n; k++)
		job_completed(w, (ReJob *) w->completed[k]->owner);
}

/* At the stop deadline: requests still unanswered are failed attempts. */
static void
give_up_in_flight(WorkerLoop *w)
{
	dlist_mutable_iter iter;
	int			n = w->nin_flight;

	dlist_foreach_modify(iter, &w->in_flight)
	{
		ReJob	   *job = dlist_container(ReJob, in_flight_node, iter.cur);

		re_http_cancel(w->client, &job->req,
					   "the worker stopped before the answer came");
		job_completed(w, job);
	}
	elog(LOG, "revenue_engine: stop deadline reached, %d request(s) recorded as unanswered", n);
}

/* Recording outcomes */

typedef struct RecordArgs
{
	ReJob	  **jobs;
	int			n;
	int			nsent;
	int			nretry;
	int			ndead;
} RecordArgs;

static void
record_unit(void *arg)
{
	RecordArgs *a = arg;

	re_delivery_record(a->jobs, a->n, &a->nsent, &a->nretry, &a->ndead);
}

static void
record_polls_unit(void *arg)
{
	RecordArgs *a = arg;

	re_delivery_record_polls(a->jobs, a->n);
}

/*
 * Record the outcomes of n jobs in one transaction; when that fails, each
 * job in its own, so that only a row that cannot be recorded (a trigger
 * raising for it ...) is left out, and it is recorded with that error.
 */
static void
record_jobs(ReJob **jobs, int n, RecordArgs *total)
{
	RecordArgs	a = {jobs, n, 0, 0, 0};
	char	   *error = NULL;
	int			i;

	if (run_unit(n == 1 ? "recording an outcome" : "recording a batch of outcomes",
				 record_unit, &a, &error))
	{
		total->nsent += a.nsent;
		total->nretry += a.nretry;
		total->ndead += a.ndead;
		return;
	}
	if (n > 1)
	{
		for (i = 0; i < n; i++)
			record_jobs(&jobs[i], 1, total);
		return;
	}
	if (jobs[0]->record_error != NULL)
	{
		/* not even the error could be written: the lease brings the row back */
		elog(LOG, "revenue_engine: the outcome of %s %s could not be recorded; it is retried when its lease expires",
			 jobs[0]->kind == RE_JOB_EVENT ? "event" : "send",
			 jobs[0]->kind == RE_JOB_EVENT ? jobs[0]->event_id :
			 psprintf(INT64_FORMAT, jobs[0]->send_id));
		return;
	}
	jobs[0]->record_error = MemoryContextStrdup(jobs[0]->batch->cxt, error);
	record_jobs(jobs, 1, total);
}

/* Polls' answers: a batch, else one by one (a failed poll is only logged). */
static void
record_polls(ReJob **jobs, int n)
{
	RecordArgs	a = {jobs, n, 0, 0, 0};
	int			i;

	if (run_unit("recording status polls", record_polls_unit, &a, NULL) || n == 1)
		return;
	for (i = 0; i < n; i++)
		record_polls(&jobs[i], 1);
}

/* Record what completed: in batches, at once when stopping. */
static void
record_step(WorkerLoop *w, TimestampTz now)
{
	RecordArgs	total = {NULL, 0, 0, 0, 0};
	int			npoll = 0;
	int			k;

	if (w->ndone == 0 ||
		!(w->ndone >= RE_RECORD_BATCH || w->nin_flight == 0 || w->stop_at != 0 ||
		  now - w->last_record >= RE_RECORD_EVERY_MS * 1000))
		return;
	/* polls first in done[], then the rest */
	for (k = 0; k < w->ndone; k++)
		if (w->done[k]->kind == RE_JOB_POLL)
		{
			ReJob	   *tmp = w->done[npoll];

			w->done[npoll++] = w->done[k];
			w->done[k] = tmp;
		}
	if (npoll > 0)
		record_polls(w->done, npoll);
	if (w->ndone > npoll)
		record_jobs(w->done + npoll, w->ndone - npoll, &total);
	for (k = 0; k < w->ndone; k++)
	{
		re_http_request_cleanup(&w->done[k]->req);
		finish_batch(w->done[k]);
	}
	SpinLockAcquire(&shared->mutex);
	my_slot->requests += w->ndone;
	my_slot->sent += total.nsent;
	my_slot->retried += total.nretry;
	my_slot->dead += total.ndead;
	my_slot->in_flight = w->nin_flight;
	SpinLockRelease(&shared->mutex);
	w->ndone = 0;
	w->last_record = now;
	w->claim_more = true;
}

/* Maintenance and the parked-status sweep */

static void
maintenance_unit(void *arg)
{
	re_delivery_reclaim_expired();
	re_delivery_maintenance();
}

static void
sweep_unit(void *arg)
{
	re_delivery_sweep_parked();
}

static void
maintenance_step(WorkerLoop *w, TimestampTz now)
{
	if (now - w->last_maintenance >= RE_MAINTENANCE_EVERY_MS * 1000L && w->nin_flight == 0)
	{
		set_state("maintenance");
		(void) run_unit("maintenance", maintenance_unit, NULL, NULL);
		w->last_maintenance = now;
	}

	/* also while requests are in flight: a blast is when races happen */
	if (re_status_sweep_wanted)
		w->sweep_soon = true;
	if ((w->sweep_soon || w->nin_flight > 0) && re_parked_sweep_interval_ms > 0 &&
		now - w->last_sweep >= re_parked_sweep_interval_ms * 1000L)
	{
		(void) run_unit("applying parked statuses", sweep_unit, NULL, NULL);
		w->last_sweep = now;
		w->sweep_soon = false;
	}
}

/* The latch, settings and SIGTERM: what the next iteration does. */
static void
handle_wakeup(WorkerLoop *w)
{
	if (MyLatch->is_set)
	{
		w->want_claim = true;
		w->sweep_soon = true;	/* a callback may have parked a status in a race */
	}
	ResetLatch(MyLatch);
	/* a cancel (pg_cancel_backend) ends a unit's statement; between units there is none */
	QueryCancelPending = false;
	CHECK_FOR_INTERRUPTS();
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
		re_http_set_allow_private(w->client, re_http_allow_private);
		re_http_set_max_connections(w->client, re_worker_max_in_flight);
		w->want_claim = true;
	}
	if (stop_requested && w->stop_at == 0)
	{
		w->stop_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), RE_STOP_GRACE_MS);
		elog(LOG, "revenue_engine: delivery worker stopping: %d request(s) in flight, %d outcome(s) to record",
			 w->nin_flight, w->ndone);
		set_state("stopping");
	}
}

static long
ms_until(TimestampTz at, TimestampTz now)
{
	return at <= now ? 0 : (at - now) / 1000 + 1;
}

/* Nothing in flight, nothing to record: until a due row, a token or the sweep. */
static long
idle_timeout(WorkerLoop *w, TimestampTz now)
{
	long		timeout = RE_LAUNCHER_NAPTIME_MS;
	TimestampTz wake = w->next_due;

	if (targets_want_more(w, now))
		return 0;

	/*
	 * A due row that was not claimed belongs to a target out of tokens
	 * (nothing is in flight): wait for its next token.
	 */
	if (wake != 0 && wake <= now)
		wake = w->token_due != 0 ? w->token_due : TimestampTzPlusMilliseconds(now, 100);
	else if (w->token_due != 0 && (wake == 0 || w->token_due < wake))
		wake = w->token_due;
	if (wake != 0)
		timeout = Max(1, Min(timeout, ms_until(wake, now)));
	if (w->sweep_soon && re_parked_sweep_interval_ms > 0)
		timeout = Max(1, Min(timeout, re_parked_sweep_interval_ms - (now - w->last_sweep) / 1000));
	return timeout;
}

/*
 * Wait for the latch, a socket of a request, libcurl's timer or the next
 * thing due (a record, a claim, a row, the stop deadline): the worker
 * sleeps in the kernel, it does not poll.
 */
static void
wait_step(WorkerLoop *w, TimestampTz now)
{
	long		timeout;
	long		curl_ms = re_http_timeout_ms(w->client);
	WaitEvent	event;

	if ((w->want_claim || w->claim_more) && w->stop_at == 0)
		return;
	if (w->nin_flight == 0 && w->ndone == 0)
		timeout = w->stop_at == 0 ? idle_timeout(w, now) : 0;
	else
	{
		timeout = RE_LAUNCHER_NAPTIME_MS;
		if (w->ndone > 0)
			timeout = Min(timeout, ms_until(TimestampTzPlusMilliseconds(w->last_record, RE_RECORD_EVERY_MS), now));
		if (w->stop_at == 0 && targets_want_more(w, now))
			timeout = Min(timeout, ms_until(TimestampTzPlusMilliseconds(w->last_claim, RE_CLAIM_EVERY_MS), now));
		if (w->stop_at != 0)
			timeout = Min(timeout, ms_until(w->stop_at, now));
	}
	if (curl_ms >= 0)
		timeout = Min(timeout, curl_ms);
	if (timeout <= 0)
		return;
	if (w->nin_flight == 0 && w->ndone == 0)
	{
		set_state("idle");
		pgstat_report_activity(STATE_IDLE, NULL);
	}
	(void) WaitEventSetWait(w->events, timeout, &event, 1, PG_WAIT_EXTENSION);
}

/*
 * The loop: claim, drive requests, record, maintain, wait.  After SIGTERM it
 * claims nothing more, lets the requests in flight finish until stop_at,
 * records every outcome and returns.
 */
static void
delivery_loop(WorkerLoop *w)
{
	for (;;)
	{
		TimestampTz now;

		MemoryContextSwitchTo(w->cxt);
		handle_wakeup(w);
		if (re_delivery_extension_gone)
		{
			elog(LOG, "revenue_engine: extension dropped, delivery worker stopping");
			return;
		}
		now = GetCurrentTimestamp();
		if (w->stop_at == 0)
			claim_step(w, now);
		if (re_delivery_extension_gone)
			continue;
		if (w->nin_flight > 0)
		{
			set_state(w->stop_at == 0 ? "delivering" : "stopping");
			pgstat_report_activity(STATE_RUNNING, "revenue_engine: requests in flight");
		}
		drive_requests(w);
		now = GetCurrentTimestamp();
		if (w->stop_at != 0 && now >= w->stop_at && w->nin_flight > 0)
			give_up_in_flight(w);
		record_step(w, now);
		if (w->stop_at != 0 && w->nin_flight == 0 && w->ndone == 0)
			return;
		if (w->stop_at == 0)
			maintenance_step(w, now);
		MemoryContextReset(w->cxt);
		wait_step(w, GetCurrentTimestamp());
	}
}

static void
reclaim_all_unit(void *arg)
{
	re_delivery_reclaim_all();
}

static void
run_delivery_worker(void)
{
	WorkerLoop	w;

	/* from here on SIGTERM is a request to stop cleanly (see handle_sigterm) */
	pqsignal(SIGTERM, handle_sigterm);
	if (ProcDiePending)
		proc_exit(0);			/* terminated during start-up: nothing held yet */

	memset(&w, 0, sizeof(w));
	w.client = re_http_client_create(re_worker_max_in_flight);
	if (w.client == NULL)
		elog(FATAL, "revenue_engine: could not initialize libcurl");
	re_http_set_allow_private(w.client, re_http_allow_private);
	w.events = CreateWaitEventSet(TopMemoryContext, 3);
	AddWaitEventToSet(w.events, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(w.events, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(w.events, WL_SOCKET_READABLE, re_http_wait_fd(w.client), NULL, NULL);
	w.cxt = AllocSetContextCreate(TopMemoryContext, "revenue_engine worker loop",
								  ALLOCSET_DEFAULT_SIZES);
	w.targets = re_delivery_target_set(AllocSetContextCreate(TopMemoryContext,
															 "revenue_engine targets",
															 ALLOCSET_DEFAULT_SIZES));
	dlist_init(&w.in_flight);
	w.done = MemoryContextAlloc(TopMemoryContext, sizeof(ReJob *) * RE_MAX_DONE);
	w.completed = MemoryContextAlloc(TopMemoryContext, sizeof(ReHttpRequest *) * RE_MAX_DONE);
	w.want_claim = true;
	w.sweep_soon = true;

	set_state("reclaiming");
	(void) run_unit("reclaiming the leases of a previous worker", reclaim_all_unit, NULL, NULL);
	w.last_record = GetCurrentTimestamp();
	elog(LOG, "revenue_engine: delivery worker started");

	delivery_loop(&w);

	set_state("stopping");
	re_http_client_destroy(w.client);
	proc_exit(0);
}

void
re_worker_main(Datum arg)
{
	int			slotno = DatumGetInt32(arg);
	Oid			dboid;
	bool		have_lock;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	my_slot = &shared->slots[slotno];
	dboid = my_slot->dboid;
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	pgstat_report_appname("revenue_engine worker");

	SpinLockAcquire(&shared->mutex);
	my_slot->pid = MyProcPid;
	my_slot->latch = MyLatch;
	my_slot->started_at = GetCurrentTimestamp();
	SpinLockRelease(&shared->mutex);
	before_shmem_exit(release_slot, (Datum) 0);

	if (!re_delivery_extension_present())
		exit_no_extension();

	/* one worker per database: a session-level advisory lock says so */
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	SPI_execute("SELECT pg_try_advisory_lock(hashtext('revenue_engine worker'))", false, 1);
	{
		bool		isnull;

		have_lock = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
											   SPI_tuptable->tupdesc, 1, &isnull));
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	if (!have_lock)
	{
		elog(LOG, "revenue_engine: another delivery worker serves this database");
		proc_exit(0);
	}

	run_delivery_worker();
}

/* SQL: revenue_engine.wake_worker() */
PG_FUNCTION_INFO_V1(re_wake_worker);
Datum
re_wake_worker(PG_FUNCTION_ARGS)
{
	re_worker_wake_at_commit();
	PG_RETURN_VOID();
}

/* SQL: revenue_engine.worker_status() */
PG_FUNCTION_INFO_V1(re_worker_status);
Datum
re_worker_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ReWorkerSlot copy[RE_MAX_DATABASES];
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	if (shared == NULL)
		return (Datum) 0;
	SpinLockAcquire(&shared->mutex);
	memcpy(copy, shared->slots, sizeof(copy));
	SpinLockRelease(&shared->mutex);

	for (i = 0; i < RE_MAX_DATABASES; i++)
	{
		ReWorkerSlot *s = &copy[i];
		Datum		values[10];
		bool		nulls[10] = {0};
		char	   *dbname;

		if (!s->in_use || s->pid == 0)
			continue;
		dbname = get_database_name(s->dboid);
		values[0] = dbname ? CStringGetTextDatum(dbname) : (Datum) 0;
		nulls[0] = (dbname == NULL);
		values[1] = Int32GetDatum(s->pid);
		values[2] = CStringGetTextDatum(s->state);
		values[3] = TimestampTzGetDatum(s->started_at);
		values[4] = TimestampTzGetDatum(s->last_activity);
		nulls[4] = (s->last_activity == 0);
		values[5] = Int32GetDatum(s->in_flight);
		values[6] = Int64GetDatum((int64) s->requests);
		values[7] = Int64GetDatum((int64) s->sent);
		values[8] = Int64GetDatum((int64) s->retried);
		values[9] = Int64GetDatum((int64) s->dead);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
