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

static void
finish_batch(ReJob *job)
{
	if (--job->batch->remaining == 0)
		MemoryContextDelete(job->batch->cxt);
}

void
re_worker_main(Datum arg)
{
	int			slotno = DatumGetInt32(arg);
	Oid			dboid;
	ReHttpClient *client;
	MemoryContext loop_cxt;
	MemoryContext targets_cxt;
	ReTarget  **targets = NULL;
	int			ntargets = 0;
	ReJob	  **done;
	ReHttpRequest **completed;
	int			ndone = 0;
	int			in_flight = 0;
	bool		want_claim = true;
	TimestampTz next_due = 0;
	TimestampTz token_due = 0;
	int			claimed = 0;
	TimestampTz last_record;
	TimestampTz last_refresh = 0;
	TimestampTz last_maintenance = 0;
	TimestampTz last_sweep = 0;
	bool		sweep_soon = true;
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

	client = re_http_client_create(re_worker_max_in_flight);
	if (client == NULL)
		elog(FATAL, "revenue_engine: could not initialize libcurl");
	re_http_set_allow_private(client, re_http_allow_private);
	loop_cxt = AllocSetContextCreate(TopMemoryContext, "revenue_engine worker loop",
									 ALLOCSET_DEFAULT_SIZES);
	targets_cxt = AllocSetContextCreate(TopMemoryContext, "revenue_engine targets",
										ALLOCSET_DEFAULT_SIZES);
	done = MemoryContextAlloc(TopMemoryContext, sizeof(ReJob *) * 10000);
	completed = MemoryContextAlloc(TopMemoryContext, sizeof(ReHttpRequest *) * 10000);

	set_state("reclaiming");
	re_delivery_reclaim_all();
	last_record = GetCurrentTimestamp();
	elog(LOG, "revenue_engine: delivery worker started");

	for (;;)
	{
		TimestampTz now;
		bool		more = false;
		int			i;

		MemoryContextSwitchTo(loop_cxt);
		if (MyLatch->is_set)
		{
			want_claim = true;
			sweep_soon = true;	/* a callback may have parked a status in a race */
		}
		ResetLatch(MyLatch);
		if (ProcDiePending)
			break;
		if (re_delivery_extension_gone)
		{
			elog(LOG, "revenue_engine: extension dropped, delivery worker stopping");
			break;
		}
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			re_http_set_allow_private(client, re_http_allow_private);
			want_claim = true;
		}
		now = GetCurrentTimestamp();

		/* targets that filled their last claim and can take more now */
		token_due = 0;
		for (i = 0; i < ntargets; i++)
			if (targets[i]->seen && targets[i]->may_have_more &&
				target_capacity(targets[i], now, &token_due) > 0)
				more = true;

		if (want_claim || more || (next_due != 0 && now >= next_due) ||
			(token_due != 0 && now >= token_due))
		{
			int			room;

			want_claim = false;
			/* endpoints change rarely: reload them at most once a second */
			if (last_refresh == 0 || now - last_refresh >= 1000000)
			{
				if (!re_delivery_refresh_targets(&targets, &ntargets, targets_cxt))
				{
					elog(LOG, "revenue_engine: extension dropped, delivery worker stopping");
					break;
				}
				last_refresh = now;
			}
			room = re_worker_max_in_flight - in_flight;
			token_due = 0;
			claimed = 0;
			for (i = 0; i < ntargets && room > 0; i++)
			{
				ReTarget   *t = targets[i];
				int			cap;
				ReBatch    *batch;
				MemoryContext bcxt;
				ReJob	   *jobs[RE_CLAIM_BATCH];
				int			n;
				int			k;

				if (!t->seen)
					continue;
				cap = Min(target_capacity(t, now, &token_due), room);
				cap = Min(cap, RE_CLAIM_BATCH);
				if (cap <= 0)
					continue;
				bcxt = AllocSetContextCreate(TopMemoryContext, "revenue_engine batch",
											 ALLOCSET_DEFAULT_SIZES);
				batch = MemoryContextAllocZero(bcxt, sizeof(ReBatch));
				batch->cxt = bcxt;
				n = re_delivery_claim(t, cap, jobs, batch);
				MemoryContextSwitchTo(loop_cxt);
				if (n == 0)
				{
					MemoryContextDelete(bcxt);
					continue;
				}
				claimed += n;
				if (t->bucket ? t->bucket->rate_limit > 0 : t->rate_limit > 0)
					(t->bucket ? t->bucket : t)->tokens -= n;
				for (k = 0; k < n; k++)
				{
					ReJob	   *job = jobs[k];
					long		ts = (long) time(NULL);
					const char *err = NULL;

					job->started_at = GetCurrentTimestamp();
					if (job->kind == RE_JOB_EVENT)
					{
						int			h = job->req.nheaders;

						snprintf(job->id_header, sizeof(job->id_header), "webhook-id: %s", job->event_id);
						snprintf(job->ts_header, sizeof(job->ts_header), "webhook-timestamp: %ld", ts);
						job->hdrs[h++] = job->id_header;
						job->hdrs[h++] = job->ts_header;
						if (t->nsecrets > 0)
						{
							if (re_http_sign(job->event_id, ts, job->body, job->req.body_len,
											 (const char **) t->secrets, t->nsecrets,
											 job->signature, sizeof(job->signature), &err))
							{
								snprintf(job->sig_header, sizeof(job->sig_header),
										 "webhook-signature: %s", job->signature);
								job->hdrs[h++] = job->sig_header;
							}
						}
						job->req.nheaders = h;
					}
					if (err != NULL || !re_http_start(client, &job->req))
					{
						/* never on the network: a failed attempt, recorded as such */
						if (err != NULL)
							snprintf(job->req.error, sizeof(job->req.error), "signing failed: %s", err);
						job->req.transport_error = true;
						done[ndone++] = job;
						continue;
					}
					t->in_flight++;
					in_flight++;
					room--;
				}
			}
			/* after a claim, the next record brings us back; else find the next due row */
			if (claimed == 0)
				next_due = re_delivery_next_due();
			else
				next_due = 0;
			MemoryContextSwitchTo(loop_cxt);
		}

		if (in_flight > 0)
		{
			int			k;
			int			n;

			set_state("delivering");
			pgstat_report_activity(STATE_RUNNING, "revenue_engine: requests in flight");
			n = re_http_poll(client, 2, completed, 10000 - ndone);
			for (k = 0; k < n; k++)
			{
				ReJob	   *job = completed[k]->owner;

				job->target->in_flight--;
				in_flight--;
				done[ndone++] = job;
			}
		}

		now = GetCurrentTimestamp();
		if (ndone > 0 && (ndone >= RE_RECORD_BATCH || in_flight == 0 ||
						  now - last_record >= RE_RECORD_EVERY_MS * 1000))
		{
			int			k;
			int			nsent = 0,
						nretry = 0,
						ndead = 0;
			int			npoll = 0;
			int			nother = 0;

			/* polls first in done[], then the rest */
			for (k = 0; k < ndone; k++)
				if (done[k]->kind == RE_JOB_POLL)
				{
					ReJob	   *tmp = done[npoll];

					done[npoll++] = done[k];
					done[k] = tmp;
				}
			nother = ndone - npoll;
			if (npoll > 0)
				re_delivery_record_polls(done, npoll);
			if (nother > 0)
				re_delivery_record(done + npoll, nother, &nsent, &nretry, &ndead);
			MemoryContextSwitchTo(loop_cxt);
			for (k = 0; k < ndone; k++)
			{
				re_http_request_cleanup(&done[k]->req);
				finish_batch(done[k]);
			}
			SpinLockAcquire(&shared->mutex);
			my_slot->requests += ndone;
			my_slot->sent += nsent;
			my_slot->retried += nretry;
			my_slot->dead += ndead;
			my_slot->in_flight = in_flight;
			SpinLockRelease(&shared->mutex);
			ndone = 0;
			last_record = now;
			want_claim = true;
		}

		if (now - last_maintenance >= RE_MAINTENANCE_EVERY_MS * 1000L && in_flight == 0)
		{
			set_state("maintenance");
			re_delivery_reclaim_expired();
			re_delivery_maintenance();
			MemoryContextSwitchTo(loop_cxt);
			last_maintenance = now;
		}

		/* also while requests are in flight: a blast is when races happen */
		if (re_status_sweep_wanted)
			sweep_soon = true;
		if ((sweep_soon || in_flight > 0) && re_parked_sweep_interval_ms > 0 &&
			now - last_sweep >= re_parked_sweep_interval_ms * 1000L)
		{
			re_delivery_sweep_parked();
			MemoryContextSwitchTo(loop_cxt);
			last_sweep = now;
			sweep_soon = false;
		}

		MemoryContextReset(loop_cxt);

		if (in_flight == 0 && ndone == 0 && !want_claim)
		{
			long		timeout = RE_LAUNCHER_NAPTIME_MS;
			TimestampTz wake = next_due;

			more = false;
			token_due = 0;
			for (i = 0; i < ntargets; i++)
				if (targets[i]->seen && targets[i]->may_have_more &&
					target_capacity(targets[i], now, &token_due) > 0)
					more = true;
			if (more)
				continue;

			/*
			 * A due row that was not claimed belongs to a target out of
			 * tokens (nothing is in flight): wait for its next token.
			 */
			if (wake != 0 && wake <= now)
				wake = token_due != 0 ? token_due : TimestampTzPlusMilliseconds(now, 100);
			else if (token_due != 0 && (wake == 0 || token_due < wake))
				wake = token_due;
			if (wake != 0)
				timeout = Max(1, Min(timeout, (wake - now) / 1000 + 1));
			if (sweep_soon && re_parked_sweep_interval_ms > 0)
				timeout = Max(1, Min(timeout, re_parked_sweep_interval_ms - (now - last_sweep) / 1000));
			set_state("idle");
			pgstat_report_activity(STATE_IDLE, NULL);
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 timeout, PG_WAIT_EXTENSION);
		}
	}

	set_state("stopping");
	re_http_client_destroy(client);
	proc_exit(0);
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
