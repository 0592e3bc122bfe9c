/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The launcher starts one delivery worker in every database where the
 *	  extension is installed.  A worker claims due rows in short
 *	  transactions, performs the requests concurrently with libcurl, and
 *	  records outcomes in short transactions; no transaction is open while
 *	  requests are on the network.  A commit that enqueues (and a COMMIT
 *	  PREPARED) sets the worker's latch, so delivery starts within
 *	  milliseconds.  DROP DATABASE (and the other statements that need the
 *	  database idle) stop the database's worker first, once the statement's
 *	  own permission checks would pass, so they are never blocked by it.
 *
 *	  Who owns what, so that a restart of any process loses nothing:
 *	  - only the launcher assigns a slot (FREE -> STARTING), one per
 *	    database; the worker it starts attaches to it (-> RUNNING) if the
 *	    slot's generation is still the one it was started for, and frees it
 *	    in its exit callback, leaving a report for the launcher (no
 *	    extension, start me again as the owner, could not log in, stopped).
 *	    That one slot per database is what makes a worker the only one of
 *	    its database: no lock an application could take or hold;
 *	  - a launcher that restarts adopts the RUNNING slots (their workers
 *	    free them) and frees STARTING slots it did not register once they
 *	    are older than a grace period (a late worker then finds its
 *	    generation gone and exits);
 *	  - what the launcher knows of each database (no extension since,
 *	    owner, restart back-off) lives in its own hash table, not in the
 *	    64 slots, so databases without the extension never hold a slot;
 *	  - a statement that needs a database idle holds it (one entry per
 *	    backend) until its transaction ends; the launcher starts no worker
 *	    for a held database and a starting worker that sees the hold exits.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_database.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_tablespace_d.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "commands/defrem.h"
#include "commands/tablespace.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "lib/ilist.h"
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
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "revenue_engine.h"
#include "compat.h"
#include "http/http.h"
#include "outbox/delivery.h"
#include "blasts/blasts.h"
#include "campaigns/runner.h"
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
#define RE_CLAIM_ALL_EVERY_MS 1000	/* and every target is looked at this often */
/* campaign steps: at most this many per loop turn, shared by the due tenants */
#define RE_CAMPAIGN_BUDGET 1000
#define RE_CAMPAIGN_MIN_SHARE 50
/*
 * Due enrollments are looked for when the worker is woken (an enrolling or
 * resuming commit), at the next due step it knows of, and else this often:
 * a safety net that costs an idle worker one short transaction.
 */
#define RE_CAMPAIGN_SCAN_EVERY_MS 10000
#define RE_BLAST_FOLLOWUPS_EVERY_MS 30000

/* A stopped worker is started again after this, doubled per quick exit. */
#define RE_RESTART_DELAY_MS 1000
#define RE_RESTART_MAX_DELAY_MS 10000
/* A worker that ran less than this failed at startup: a crash loop backs off. */
#define RE_QUICK_EXIT_MS 2000
/*
 * A database found without the extension is looked at again after this, as
 * a backstop: CREATE EXTENSION (even prepared) asks for its worker itself.
 */
#define RE_NO_EXTENSION_RECHECK_MS 3600000
/* After the owner could not log in, act as it from the bootstrap superuser. */
#define RE_LOGIN_RETRY_MS 300000
/* A slot registered by an earlier launcher and never attached is freed then. */
#define RE_ORPHAN_GRACE_MS 10000
/* Workers looking for the extension at once: bgworker slots are shared. */
#define RE_MAX_PROBES 4
/* Backstop: a hold of a database ends by then even if its holder leaked it. */
#define RE_HOLD_MS 60000
/* Databases whose commit asked for a worker while none ran. */
#define RE_MAX_WANTED 32

bool		re_http_allow_private = false;
int			re_worker_max_in_flight = 256;
bool		re_worker_campaign_steps = true;

typedef enum ReSlotPhase
{
	RE_SLOT_FREE = 0,
	RE_SLOT_STARTING,			/* assigned and registered by the launcher */
	RE_SLOT_RUNNING				/* its worker attached */
} ReSlotPhase;

/* What a worker's exit tells the launcher (kept in its freed slot). */
typedef enum ReExitReport
{
	RE_EXIT_NONE = 0,			/* nothing (or already read) */
	RE_EXIT_STOPPED,			/* start it again after the restart delay */
	RE_EXIT_NO_EXTENSION,
	RE_EXIT_RECONNECT,			/* start it again at once as report_owner */
	RE_EXIT_LOGIN_FAILED		/* connecting as connect_as failed */
} ReExitReport;

typedef struct ReWorkerSlot
{
	ReSlotPhase phase;
	uint32		generation;		/* bumped at each assignment */
	Oid			dboid;
	Oid			connect_as;		/* InvalidOid: the bootstrap superuser */
	bool		may_reconnect;	/* may exit to be started as the owner */
	bool		probing;		/* the extension is not confirmed yet */
	bool		woken;			/* a commit asked for this database meanwhile */
	pid_t		pid;
	Latch	   *latch;
	TimestampTz registered_at;
	ReExitReport report;
	Oid			report_owner;
	char		state[32];
	TimestampTz started_at;
	TimestampTz last_activity;
	int			in_flight;
	uint64		requests;
	uint64		sent;
	uint64		retried;
	uint64		dead;
} ReWorkerSlot;

/* A database held idle by a statement of one backend. */
typedef struct ReHold
{
	Oid			dboid;
	TimestampTz until;
} ReHold;

typedef struct ReShared
{
	slock_t		mutex;
	Latch	   *launcher_latch;
	bool		rescan_all;		/* wanted[] overflowed */
	int			nwanted;
	Oid			wanted[RE_MAX_WANTED];
	ReWorkerSlot slots[RE_MAX_DATABASES];
	int			nholds;
	ReHold		holds[FLEXIBLE_ARRAY_MEMBER];	/* [RE_MY_PROC_INDEX] */
} ReShared;

/* What the launcher knows of a database (its hash table, keyed by oid). */
typedef struct ReDatabase
{
	Oid			dboid;
	uint32		scan;			/* the last scan of pg_database listing it */
	bool		has_extension;	/* a worker confirmed it */
	TimestampTz no_extension_at;
	Oid			owner;			/* the extension's owner, once reported */
	TimestampTz login_failed_at;
	TimestampTz started_at;
	TimestampTz next_start_at;
	int			quick_exits;
} ReDatabase;

static ReShared *shared = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static ProcessUtility_hook_type prev_process_utility = NULL;
static bool wake_pending = false;
static bool holding = false;	/* this backend holds a database idle */

/* The worker's own slot, and what its exit will report */
static ReWorkerSlot *my_slot = NULL;
static uint32 my_generation = 0;
static bool my_connected = false;
static Oid	my_connect_as = InvalidOid;
static ReExitReport my_exit_report = RE_EXIT_NONE;
static Oid	my_report_owner = InvalidOid;

static Size
shared_size(void)
{
	return add_size(offsetof(ReShared, holds), mul_size(MaxBackends, sizeof(ReHold)));
}

static void
shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(shared_size()));
}

static void
shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("revenue_engine", shared_size(), &found);
	if (!found)
	{
		memset(shared, 0, shared_size());
		SpinLockInit(&shared->mutex);
		shared->nholds = MaxBackends;
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

/* Whether a statement holds dboid idle; the caller holds the mutex. */
static bool
database_held(Oid dboid, TimestampTz now)
{
	int			i;

	for (i = 0; i < shared->nholds; i++)
		if (shared->holds[i].dboid == dboid && now < shared->holds[i].until)
			return true;
	return false;
}

/* Waking workers at commit */

void
re_worker_wake_at_commit(void)
{
	wake_pending = true;
}

/*
 * Set the latch of dboid's worker.  Without one, and if ask_launcher, ask
 * the launcher for it (CREATE EXTENSION, or the worker is restarting); a
 * worker still looking for the extension is told that a commit came, so
 * that "no extension" is not believed when CREATE EXTENSION raced it.
 */
static void
wake_database_worker(Oid dboid, bool ask_launcher)
{
	Latch	   *latch = NULL;
	Latch	   *launcher = NULL;
	bool		found = false;
	int			i;

	if (shared == NULL)
		return;
	SpinLockAcquire(&shared->mutex);
	for (i = 0; i < RE_MAX_DATABASES; i++)
	{
		ReWorkerSlot *s = &shared->slots[i];

		if (s->dboid != dboid)
			continue;
		if (s->phase == RE_SLOT_FREE)
		{
			/* an exit report not read yet: it may say "no extension" */
			if (s->report != RE_EXIT_NONE)
				s->woken = true;
			continue;
		}
		found = true;
		s->woken = true;
		latch = s->latch;
	}
	if (!found && ask_launcher)
	{
		for (i = 0; i < shared->nwanted; i++)
			if (shared->wanted[i] == dboid)
				break;
		if (i == shared->nwanted)
		{
			if (shared->nwanted < RE_MAX_WANTED)
				shared->wanted[shared->nwanted++] = dboid;
			else
				shared->rescan_all = true;
		}
		launcher = shared->launcher_latch;
	}
	SpinLockRelease(&shared->mutex);
	if (latch)
		SetLatch(latch);
	if (launcher)
		SetLatch(launcher);
}

/* The end of this backend's hold on a database: the launcher may start its worker. */
static void
release_hold(void)
{
	Latch	   *launcher;
	int			idx = RE_MY_PROC_INDEX;

	if (!holding)
		return;
	holding = false;
	SpinLockAcquire(&shared->mutex);
	if (idx >= 0 && idx < shared->nholds)
		shared->holds[idx].dboid = InvalidOid;
	launcher = shared->launcher_latch;
	SpinLockRelease(&shared->mutex);
	if (launcher)
		SetLatch(launcher);
}

static void
xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (wake_pending)
				wake_database_worker(MyDatabaseId, true);
			wake_pending = false;
			release_hold();
			break;
		case XACT_EVENT_PREPARE:
			/* not visible before COMMIT PREPARED, which wakes the worker */
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			wake_pending = false;
			release_hold();
			break;
		default:
			break;
	}
}

/*
 * Hold dboid idle until this transaction ends and stop its worker.  The
 * hold and the look for a worker are one step under the mutex, as are a
 * starting worker's attach and its look for holds: either the worker sees
 * the hold and exits, or it is seen here and stopped.
 */
static void
stop_database_worker(Oid dboid)
{
	pid_t		pid = 0;
	int			i;
	int			waited;
	int			idx = RE_MY_PROC_INDEX;

	if (shared == NULL || idx < 0 || idx >= shared->nholds)
		return;
	SpinLockAcquire(&shared->mutex);
	shared->holds[idx].dboid = dboid;
	shared->holds[idx].until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), RE_HOLD_MS);
	for (i = 0; i < RE_MAX_DATABASES; i++)
	{
		ReWorkerSlot *s = &shared->slots[i];

		if (s->phase == RE_SLOT_RUNNING && s->dboid == dboid)
			pid = s->pid;
	}
	SpinLockRelease(&shared->mutex);
	holding = true;
	if (pid == 0)
		return;

	kill(pid, SIGTERM);
	for (waited = 0; waited < 5000; waited += 10)
	{
		bool		gone = true;

		SpinLockAcquire(&shared->mutex);
		for (i = 0; i < RE_MAX_DATABASES; i++)
			if (shared->slots[i].phase == RE_SLOT_RUNNING &&
				shared->slots[i].dboid == dboid && shared->slots[i].pid == pid)
				gone = false;
		SpinLockRelease(&shared->mutex);
		if (gone)
			return;
		pg_usleep(10000L);
		CHECK_FOR_INTERRUPTS();
	}
}

/* A database's datistemplate and dattablespace; false when it is gone. */
static bool
database_info(Oid dboid, bool *istemplate, Oid *tablespace)
{
	HeapTuple	tup = SearchSysCache1(DATABASEOID, ObjectIdGetDatum(dboid));
	Form_pg_database db;

	if (!HeapTupleIsValid(tup))
		return false;
	db = (Form_pg_database) GETSTRUCT(tup);
	*istemplate = db->datistemplate;
	*tablespace = db->dattablespace;
	ReleaseSysCache(tup);
	return true;
}

static DefElem *
find_option(List *options, const char *name)
{
	ListCell   *lc;

	foreach(lc, options)
	{
		DefElem    *def = lfirst_node(DefElem, lc);

		if (strcmp(def->defname, name) == 0)
			return def;
	}
	return NULL;
}

/*
 * The database a statement needs idle (other backends, our worker too, make
 * it fail), when the statement's own permission checks will pass for the
 * current user; else InvalidOid.  The checks are the ones dbcommands.c
 * makes before it looks for other backends, in the same order, so that no
 * role without the rights to run the statement can stop a worker with it.
 * A check that fails later (the new name is taken ...) ends the hold
 * through the statement's error.
 */
static Oid
database_needing_idle(Node *stmt)
{
	Oid			userid = GetUserId();
	Oid			dboid = InvalidOid;
	bool		istemplate;
	Oid			curspc;

	if (IsA(stmt, DropdbStmt))
	{
		dboid = get_database_oid(((DropdbStmt *) stmt)->dbname, true);
		if (!OidIsValid(dboid) || !re_database_ownercheck(dboid, userid) ||
			!database_info(dboid, &istemplate, &curspc) || istemplate ||
			dboid == MyDatabaseId)
			return InvalidOid;
		return dboid;
	}
	if (IsA(stmt, RenameStmt) && ((RenameStmt *) stmt)->renameType == OBJECT_DATABASE)
	{
		RenameStmt *r = (RenameStmt *) stmt;

		dboid = get_database_oid(r->subname, true);
		if (!OidIsValid(dboid) || OidIsValid(get_database_oid(r->newname, true)) ||
			dboid == MyDatabaseId || !re_database_ownercheck(dboid, userid) ||
			!have_createdb_privilege())
			return InvalidOid;
		return dboid;
	}
	if (IsA(stmt, AlterDatabaseStmt))
	{
		AlterDatabaseStmt *a = (AlterDatabaseStmt *) stmt;
		DefElem    *spc = find_option(a->options, "tablespace");
		Oid			spcoid;

		/* CONNECTION LIMIT, ALLOW_CONNECTIONS, IS_TEMPLATE: nothing to stop */
		if (spc == NULL || list_length(a->options) != 1 || spc->arg == NULL)
			return InvalidOid;
		dboid = get_database_oid(a->dbname, true);
		if (!OidIsValid(dboid) || !re_database_ownercheck(dboid, userid) ||
			dboid == MyDatabaseId)
			return InvalidOid;
		spcoid = get_tablespace_oid(defGetString(spc), true);
		if (!OidIsValid(spcoid) ||
			re_tablespace_aclcheck(spcoid, userid, ACL_CREATE) != ACLCHECK_OK ||
			spcoid == GLOBALTABLESPACE_OID ||
			!database_info(dboid, &istemplate, &curspc) || curspc == spcoid)
			return InvalidOid;
		return dboid;
	}
	if (IsA(stmt, CreatedbStmt))
	{
		CreatedbStmt *c = (CreatedbStmt *) stmt;
		DefElem    *tmpl = find_option(c->options, "template");
		DefElem    *owner = find_option(c->options, "owner");

		/* the default template, template1, has no worker */
		if (tmpl == NULL || tmpl->arg == NULL)
			return InvalidOid;
		if (owner != NULL && owner->arg != NULL)
		{
			Oid			ownerid = get_role_oid(defGetString(owner), true);

			if (!OidIsValid(ownerid) || !is_member_of_role(userid, ownerid))
				return InvalidOid;
		}
		if (!have_createdb_privilege())
			return InvalidOid;
		dboid = get_database_oid(defGetString(tmpl), true);
		if (!OidIsValid(dboid) || !database_info(dboid, &istemplate, &curspc) ||
			(!istemplate && !re_database_ownercheck(dboid, userid)))
			return InvalidOid;
		return dboid;
	}
	return InvalidOid;
}

static void
call_process_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
					 ProcessUtilityContext context, ParamListInfo params,
					 QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	if (prev_process_utility)
		prev_process_utility(pstmt, queryString, readOnlyTree, context, params,
							 queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
								queryEnv, dest, qc);
}

static void
process_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
				ProcessUtilityContext context, ParamListInfo params,
				QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *stmt = pstmt->utilityStmt;
	Oid			idle_db = database_needing_idle(stmt);

	if (!OidIsValid(idle_db))
	{
		call_process_utility(pstmt, queryString, readOnlyTree, context, params,
							 queryEnv, dest, qc);
		/*
		 * A prepared transaction's enqueues (or CREATE EXTENSION) become
		 * visible now.  The launcher is asked only where the extension is:
		 * two-phase commits elsewhere start no process looking for it.
		 */
		if (IsA(stmt, TransactionStmt) &&
			((TransactionStmt *) stmt)->kind == TRANS_STMT_COMMIT_PREPARED)
			wake_database_worker(MyDatabaseId,
								 OidIsValid(get_extension_oid("revenue_engine", true)));
		/* a worker waiting for the update (wait_for_update) resumes at commit */
		if (IsA(stmt, AlterExtensionStmt) &&
			strcmp(((AlterExtensionStmt *) stmt)->extname, "revenue_engine") == 0)
			re_worker_wake_at_commit();
		return;
	}

	stop_database_worker(idle_db);
	PG_TRY();
	{
		call_process_utility(pstmt, queryString, readOnlyTree, context, params,
							 queryEnv, dest, qc);
	}
	PG_CATCH();
	{
		/* the statement failed: its database may have its worker back at once */
		release_hold();
		PG_RE_THROW();
	}
	PG_END_TRY();
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

	DefineCustomBoolVariable("revenue_engine.worker_campaign_steps",
							 "Let the delivery worker run due campaign steps and blast follow-ups.",
							 "Off (tests): revenue_engine.run_campaign_steps() runs them by hand.",
							 &re_worker_campaign_steps,
							 true,
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

/*
 * The workers this launcher registered whose process the postmaster has not
 * reaped yet: they count against max_worker_processes (a probe's slot is
 * free before its process is gone), so probes are counted here.
 */
typedef struct ReRegistered
{
	BackgroundWorkerHandle *handle;
	int			slotno;
	uint32		generation;
} ReRegistered;

static ReRegistered registered[2 * RE_MAX_DATABASES];
static int	nregistered = 0;
static HTAB *databases = NULL;

static bool
start_worker(Oid dboid, int slotno, uint32 generation, BackgroundWorkerHandle **handle)
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
	memcpy(worker.bgw_extra, &generation, sizeof(generation));
	worker.bgw_notify_pid = MyProcPid;
	return RegisterDynamicBackgroundWorker(&worker, handle);
}

static void
launcher_detach(int code, Datum arg)
{
	SpinLockAcquire(&shared->mutex);
	if (shared->launcher_latch == MyLatch)
		shared->launcher_latch = NULL;
	SpinLockRelease(&shared->mutex);
}

static ReDatabase *
database_entry(Oid dboid)
{
	bool		found;
	ReDatabase *db = hash_search(databases, &dboid, HASH_ENTER, &found);

	if (!found)
	{
		memset(db, 0, sizeof(ReDatabase));
		db->dboid = dboid;
	}
	return db;
}

/* What the shared slots tell the launcher, read in one step */
typedef struct ReLauncherView
{
	int			nreports;
	ReWorkerSlot reports[RE_MAX_DATABASES];
	int			nwanted;
	Oid			wanted[RE_MAX_WANTED];
	bool		rescan_all;
	int			nheld;
	Oid		   *held;			/* [nholds] */
	Oid			active[RE_MAX_DATABASES];	/* InvalidOid: the slot is free */
	int			nprobing;		/* our processes not (yet) serving a database */
	TimestampTz orphan_due;		/* the earliest orphan to free, or 0 */
} ReLauncherView;

/*
 * Read reports, wake requests, holds and slots, and free the slots whose
 * worker is gone without freeing them: a registered worker that stopped
 * before it attached (ours: its handle says so; an earlier launcher's: after
 * a grace period).
 */
static void
launcher_read_shared(ReLauncherView *v, TimestampTz now)
{
	ReRegistered stopped[2 * RE_MAX_DATABASES];
	int			nstopped = 0;
	int			i,
				k;

	for (i = 0; i < nregistered;)
	{
		pid_t		pid;

		switch (GetBackgroundWorkerPid(registered[i].handle, &pid))
		{
			case BGWH_STOPPED:
				stopped[nstopped++] = registered[i];
				pfree(registered[i].handle);
				registered[i] = registered[--nregistered];
				continue;
			case BGWH_POSTMASTER_DIED:
				proc_exit(1);
				break;
			default:
				break;
		}
		i++;
	}

	v->nreports = 0;
	v->nheld = 0;
	v->nprobing = 0;
	v->orphan_due = 0;
	SpinLockAcquire(&shared->mutex);
	/* gone without freeing its slot: stopped before it attached */
	for (k = 0; k < nstopped; k++)
	{
		ReWorkerSlot *s = &shared->slots[stopped[k].slotno];

		if (s->phase != RE_SLOT_FREE && s->generation == stopped[k].generation)
		{
			s->phase = RE_SLOT_FREE;
			s->pid = 0;
			s->latch = NULL;
			if (s->report == RE_EXIT_NONE)
				s->report = RE_EXIT_STOPPED;
		}
	}
	/* a process of ours still counts as a probe until it confirms the extension */
	for (k = 0; k < nregistered; k++)
	{
		ReWorkerSlot *s = &shared->slots[registered[k].slotno];

		if (s->phase == RE_SLOT_FREE || s->generation != registered[k].generation ||
			s->probing)
			v->nprobing++;
	}
	for (i = 0; i < RE_MAX_DATABASES; i++)
	{
		ReWorkerSlot *s = &shared->slots[i];

		/* registered by an earlier launcher and never attached */
		if (s->phase == RE_SLOT_STARTING)
		{
			bool		ours = false;

			for (k = 0; k < nregistered; k++)
				if (registered[k].slotno == i && registered[k].generation == s->generation)
					ours = true;
			if (!ours)
			{
				TimestampTz due = TimestampTzPlusMilliseconds(s->registered_at, RE_ORPHAN_GRACE_MS);

				if (now >= due)
				{
					s->phase = RE_SLOT_FREE;
					s->report = RE_EXIT_STOPPED;
				}
				else if (v->orphan_due == 0 || due < v->orphan_due)
					v->orphan_due = due;
			}
		}
		if (s->phase == RE_SLOT_FREE && s->report != RE_EXIT_NONE)
		{
			v->reports[v->nreports++] = *s;
			s->report = RE_EXIT_NONE;
			s->woken = false;
		}
		v->active[i] = s->phase == RE_SLOT_FREE ? InvalidOid : s->dboid;
	}
	v->nwanted = shared->nwanted;
	memcpy(v->wanted, shared->wanted, sizeof(Oid) * shared->nwanted);
	shared->nwanted = 0;
	v->rescan_all = shared->rescan_all;
	shared->rescan_all = false;
	for (i = 0; i < shared->nholds; i++)
		if (OidIsValid(shared->holds[i].dboid) && now < shared->holds[i].until)
			v->held[v->nheld++] = shared->holds[i].dboid;
	SpinLockRelease(&shared->mutex);
}

/* Learn from the workers' exit reports and the wake requests. */
static void
launcher_apply(ReLauncherView *v, TimestampTz now)
{
	int			i;

	for (i = 0; i < v->nreports; i++)
	{
		ReWorkerSlot *r = &v->reports[i];
		ReDatabase *db = database_entry(r->dboid);

		switch (r->report)
		{
			case RE_EXIT_NO_EXTENSION:
				db->has_extension = false;
				/* a commit came while it looked: CREATE EXTENSION may have raced it */
				if (!r->woken)
					db->no_extension_at = now;
				break;
			case RE_EXIT_RECONNECT:
				db->owner = r->report_owner;
				db->has_extension = true;
				db->next_start_at = 0;
				break;
			case RE_EXIT_LOGIN_FAILED:
				db->login_failed_at = now;
				db->next_start_at = TimestampTzPlusMilliseconds(now, RE_RESTART_DELAY_MS);
				break;
			default:
				{
					int			delay = RE_RESTART_DELAY_MS;
					int			k;

					if (now < TimestampTzPlusMilliseconds(db->started_at, RE_QUICK_EXIT_MS))
						db->quick_exits++;
					else
						db->quick_exits = 0;
					for (k = 0; k < db->quick_exits && delay < RE_RESTART_MAX_DELAY_MS; k++)
						delay *= 2;
					delay = Min(delay, RE_RESTART_MAX_DELAY_MS);
					db->next_start_at = TimestampTzPlusMilliseconds(now, delay);
				}
				break;
		}
	}
	for (i = 0; i < v->nwanted; i++)
		database_entry(v->wanted[i])->no_extension_at = 0;
	if (v->rescan_all)
	{
		HASH_SEQ_STATUS seq;
		ReDatabase *db;

		hash_seq_init(&seq, databases);
		while ((db = hash_seq_search(&seq)) != NULL)
			db->no_extension_at = 0;
	}
}

/* Every database that accepts connections, however many. */
static Oid *
list_databases(int *ndbs)
{
	int			cap = 256;
	Oid		   *dbs = palloc(sizeof(Oid) * cap);
	MemoryContext cxt = CurrentMemoryContext;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;

	*ndbs = 0;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);

		if (!db->datallowconn || db->datistemplate)
			continue;
		if (*ndbs == cap)
		{
			cap *= 2;
			dbs = repalloc(dbs, sizeof(Oid) * cap);
		}
		dbs[(*ndbs)++] = db->oid;
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
	return dbs;
}

/*
 * Assign a free slot to db and register its worker.  Returns false when no
 * slot is free.
 */
static bool
launcher_start(ReDatabase *db, bool probing, int nprobing, TimestampTz now,
			   bool *warned_register)
{
	int			slotno = -1;
	uint32		generation = 0;
	bool		as_owner = OidIsValid(db->owner) &&
		(db->login_failed_at == 0 ||
		 now >= TimestampTzPlusMilliseconds(db->login_failed_at, RE_LOGIN_RETRY_MS));
	MemoryContext oldcxt;
	BackgroundWorkerHandle *handle = NULL;
	bool		started;
	int			i;

	SpinLockAcquire(&shared->mutex);
	for (i = 0; i < RE_MAX_DATABASES && slotno < 0; i++)
	{
		ReWorkerSlot *s = &shared->slots[i];

		/* a report not read yet keeps its slot until the next round */
		if (s->phase == RE_SLOT_FREE && s->report == RE_EXIT_NONE)
		{
			generation = s->generation + 1;
			memset(s, 0, sizeof(ReWorkerSlot));
			s->phase = RE_SLOT_STARTING;
			s->generation = generation;
			s->dboid = db->dboid;
			s->connect_as = as_owner ? db->owner : InvalidOid;
			s->may_reconnect = as_owner || db->login_failed_at == 0;
			s->probing = probing;
			s->registered_at = now;
			strlcpy(s->state, "starting", sizeof(s->state));
			slotno = i;
		}
	}
	SpinLockRelease(&shared->mutex);
	if (slotno < 0)
		return false;

	db->started_at = now;
	/* handles outlive the round: TopMemoryContext */
	oldcxt = MemoryContextSwitchTo(TopMemoryContext);
	started = nregistered < lengthof(registered) &&
		start_worker(db->dboid, slotno, generation, &handle);
	MemoryContextSwitchTo(oldcxt);
	if (started)
	{
		registered[nregistered].handle = handle;
		registered[nregistered].slotno = slotno;
		registered[nregistered].generation = generation;
		nregistered++;
		*warned_register = false;
		return true;
	}
	/* a probe waits for ours to end; a known database's worker is worth a warning */
	if (!*warned_register && (!probing || nprobing == 0))
	{
		ereport(WARNING,
				(errmsg("revenue_engine: could not start a delivery worker for database %u", db->dboid),
				 errhint("Raise max_worker_processes: the launcher and one worker per database need one each.")));
		*warned_register = true;
	}
	SpinLockAcquire(&shared->mutex);
	shared->slots[slotno].phase = RE_SLOT_FREE;
	SpinLockRelease(&shared->mutex);
	/* try again at the next scan, not at once */
	db->next_start_at = TimestampTzPlusMilliseconds(now, RE_LAUNCHER_NAPTIME_MS);
	return true;
}

void
re_launcher_main(Datum arg)
{
	HASHCTL		ctl;
	MemoryContext round_cxt;
	ReLauncherView *view;
	uint32		scan = 0;
	bool		warned_full = false;
	bool		warned_register = false;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("revenue_engine launcher");

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(ReDatabase);
	databases = hash_create("revenue_engine databases", 64, &ctl, HASH_ELEM | HASH_BLOBS);
	round_cxt = AllocSetContextCreate(TopMemoryContext, "revenue_engine launcher round",
									  ALLOCSET_DEFAULT_SIZES);
	view = MemoryContextAllocZero(TopMemoryContext, sizeof(ReLauncherView));
	view->held = MemoryContextAlloc(TopMemoryContext, sizeof(Oid) * Max(shared->nholds, 1));

	/*
	 * Workers of an earlier launcher keep running and free their slots when
	 * they exit; slots it registered that never attach are freed after the
	 * grace period.  Nothing else to adopt.
	 */
	SpinLockAcquire(&shared->mutex);
	shared->launcher_latch = MyLatch;
	SpinLockRelease(&shared->mutex);
	before_shmem_exit(launcher_detach, (Datum) 0);

	for (;;)
	{
		TimestampTz now;
		TimestampTz wake_at;
		Oid		   *dbs;
		int			ndbs;
		int			nprobing = 0;
		int			i,
					j;
		HASH_SEQ_STATUS seq;
		ReDatabase *db;
		long		timeout;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		ResetLatch(MyLatch);
		MemoryContextReset(round_cxt);
		MemoryContextSwitchTo(round_cxt);

		now = GetCurrentTimestamp();
		launcher_read_shared(view, now);
		launcher_apply(view, now);
		dbs = list_databases(&ndbs);
		scan++;

		wake_at = TimestampTzPlusMilliseconds(now, RE_LAUNCHER_NAPTIME_MS);
		if (view->orphan_due != 0 && view->orphan_due < wake_at)
			wake_at = view->orphan_due;
		nprobing = view->nprobing;

		for (j = 0; j < ndbs; j++)
		{
			bool		skip = false;
			bool		probing;

			db = database_entry(dbs[j]);
			db->scan = scan;
			for (i = 0; i < RE_MAX_DATABASES && !skip; i++)
				if (view->active[i] == dbs[j])
					skip = true;
			for (i = 0; i < view->nheld && !skip; i++)
				if (view->held[i] == dbs[j])
					skip = true;
			if (skip)
				continue;
			if (db->no_extension_at != 0 &&
				now < TimestampTzPlusMilliseconds(db->no_extension_at, RE_NO_EXTENSION_RECHECK_MS))
				continue;
			if (now < db->next_start_at)
			{
				if (db->next_start_at < wake_at)
					wake_at = db->next_start_at;
				continue;
			}
			/* a database known to have the extension does not wait for probes */
			probing = !db->has_extension;
			if (probing && nprobing >= RE_MAX_PROBES)
				continue;		/* a probe's exit wakes us */
			if (!launcher_start(db, probing, nprobing, now, &warned_register))
			{
				if (!warned_full)
					ereport(WARNING,
							(errmsg("revenue_engine: more than %d databases with a delivery worker, database %u waits for a free slot",
									RE_MAX_DATABASES, dbs[j])));
				warned_full = true;
				break;
			}
			if (probing)
				nprobing++;
		}

		/* forget dropped databases */
		hash_seq_init(&seq, databases);
		while ((db = hash_seq_search(&seq)) != NULL)
			if (db->scan != scan)
				(void) hash_search(databases, &db->dboid, HASH_REMOVE, NULL);

		pgstat_report_activity(STATE_IDLE, NULL);
		now = GetCurrentTimestamp();
		timeout = wake_at <= now ? 1 : Min((wake_at - now) / 1000 + 1, RE_LAUNCHER_NAPTIME_MS);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 timeout, PG_WAIT_EXTENSION);
	}
}

/* A database's worker */

/*
 * Exit callback: free the slot and leave the launcher the reason.  An exit
 * before the connection was made as connect_as is a failed login (a role
 * that may not log in, or over its connection limit), unless we were told
 * to stop.
 */
static void
release_slot(int code, Datum arg)
{
	Latch	   *launcher;
	ReExitReport report = my_exit_report;

	if (report == RE_EXIT_NONE)
		report = (!my_connected && OidIsValid(my_connect_as) && !ProcDiePending) ?
			RE_EXIT_LOGIN_FAILED : RE_EXIT_STOPPED;
	SpinLockAcquire(&shared->mutex);
	if (my_slot->phase == RE_SLOT_RUNNING && my_slot->generation == my_generation)
	{
		my_slot->phase = RE_SLOT_FREE;
		my_slot->pid = 0;
		my_slot->latch = NULL;
		my_slot->in_flight = 0;
		my_slot->report = report;
		my_slot->report_owner = my_report_owner;
		strlcpy(my_slot->state, "stopped", sizeof(my_slot->state));
	}
	launcher = shared->launcher_latch;
	SpinLockRelease(&shared->mutex);
	if (launcher)
		SetLatch(launcher);
}

/*
 * Take the slot the launcher assigned, if it is still ours to take (the
 * generation it was registered for, no statement holding the database
 * idle, no other worker for the database); else exit quietly.
 */
static Oid
attach_slot(int slotno, uint32 generation, bool *may_reconnect)
{
	ReWorkerSlot *s;
	TimestampTz now = GetCurrentTimestamp();
	bool		ok = false;
	Oid			dboid = InvalidOid;
	int			i;

	if (slotno < 0 || slotno >= RE_MAX_DATABASES)
		proc_exit(0);
	s = &shared->slots[slotno];
	SpinLockAcquire(&shared->mutex);
	if (s->phase == RE_SLOT_STARTING && s->generation == generation)
	{
		ok = !database_held(s->dboid, now);
		for (i = 0; i < RE_MAX_DATABASES; i++)
			if (i != slotno && shared->slots[i].phase == RE_SLOT_RUNNING &&
				shared->slots[i].dboid == s->dboid)
				ok = false;
		if (ok)
		{
			s->phase = RE_SLOT_RUNNING;
			s->pid = MyProcPid;
			s->latch = MyLatch;
			s->started_at = now;
			dboid = s->dboid;
			my_connect_as = s->connect_as;
			*may_reconnect = s->may_reconnect;
		}
		else
		{
			s->phase = RE_SLOT_FREE;
			s->report = RE_EXIT_STOPPED;
		}
	}
	SpinLockRelease(&shared->mutex);
	if (!ok)
		proc_exit(0);
	my_slot = s;
	my_generation = generation;
	before_shmem_exit(release_slot, (Datum) 0);
	return dboid;
}

/* The owner of extension revenue_engine (InvalidOid: none) and whether it may log in. */
static Oid
extension_owner_lookup(bool *can_login)
{
	Oid			owner = InvalidOid;

	*can_login = false;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	(void) re_extension_row(&owner, NULL);
	if (OidIsValid(owner))
	{
		HeapTuple	role = SearchSysCache1(AUTHOID, ObjectIdGetDatum(owner));

		if (HeapTupleIsValid(role))
		{
			*can_login = ((Form_pg_authid) GETSTRUCT(role))->rolcanlogin;
			ReleaseSysCache(role);
		}
	}
	CommitTransactionCommand();
	return owner;
}

/* The worker found no extension: the launcher looks again when CREATE EXTENSION commits. */
static void
exit_no_extension(void)
{
	my_exit_report = RE_EXIT_NO_EXTENSION;
	proc_exit(0);
}

/*
 * The library serves the SQL objects of its own version only (its
 * statements name that version's tables and columns).  After a package
 * upgrade and a restart, a database still has the previous version's
 * objects until someone runs ALTER EXTENSION revenue_engine UPDATE in it:
 * until then its worker logs once, shows the state "awaiting update" in
 * revenue_engine.workers, claims nothing, changes nothing, and looks again
 * every second and when the ALTER EXTENSION commits (process_utility wakes
 * it).  Events enqueued meanwhile wait in the outbox and are delivered
 * once, after the update.  The same holds for a library older than the
 * installed objects (a package downgrade).  Returns whether it waited.
 */
#define RE_UPDATE_RECHECK_MS 1000

static bool
wait_for_update(void)
{
	bool		waited = false;

	for (;;)
	{
		char	   *installed;

		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		installed = re_installed_version();
		if (installed == NULL)
		{
			CommitTransactionCommand();
			exit_no_extension();
		}
		if (strcmp(installed, RE_EXTVERSION) == 0)
		{
			CommitTransactionCommand();
			break;
		}
		if (!waited)
		{
			ereport(LOG,
					(errmsg("revenue_engine: database \"%s\" has version %s of the extension, the library is version %s: the delivery worker waits for ALTER EXTENSION revenue_engine UPDATE",
							get_database_name(MyDatabaseId), installed, RE_EXTVERSION),
					 errhint("Run ALTER EXTENSION revenue_engine UPDATE in this database; events enqueued meanwhile are delivered after it.")));
			set_state("awaiting update");
			pgstat_report_activity(STATE_IDLE, NULL);
			waited = true;
		}
		CommitTransactionCommand();
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 RE_UPDATE_RECHECK_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
	}
	if (waited)
		elog(LOG, "revenue_engine: extension updated to %s, the delivery worker resumes", RE_EXTVERSION);
	return waited;
}

/*
 * Everything before the loop.  The worker connects to its database as the
 * extension's owner when the launcher knows it, else as the bootstrap
 * superuser; it pins search_path (and the transaction defaults its claims
 * rely on) over any ALTER DATABASE/ROLE SET before its first statement,
 * then checks who owns the extension:
 *  - connected as the owner: done (pg_stat_activity shows the owner);
 *  - another role that may log in: exit, and the launcher starts us again
 *    connected as it (one extra start per database and launcher lifetime);
 *  - an owner that cannot log in (NOLOGIN, or the last connection as it
 *    failed): stay connected as the bootstrap superuser but act as the
 *    owner for good, SetUserIdAndSecContext with SECURITY_LOCAL_USERID_CHANGE
 *    so that no SQL run here can SET ROLE or SET SESSION AUTHORIZATION its
 *    way back to the superuser.
 * Either way every statement of the worker runs with the owner's rights.
 */
static void
worker_startup(Datum arg)
{
	uint32		generation;
	Oid			dboid;
	Oid			owner;
	bool		may_reconnect = false;
	bool		can_login;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	memcpy(&generation, MyBgworkerEntry->bgw_extra, sizeof(generation));
	dboid = attach_slot(DatumGetInt32(arg), generation, &may_reconnect);
	BackgroundWorkerInitializeConnectionByOid(dboid, my_connect_as, 0);
	my_connected = true;

	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("default_transaction_read_only", "off", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("default_transaction_isolation", "read committed", PGC_SUSET, PGC_S_OVERRIDE);
	pgstat_report_appname("revenue_engine worker");

	owner = extension_owner_lookup(&can_login);
	if (!OidIsValid(owner))
		exit_no_extension();
	if (owner != GetSessionUserId())
	{
		if (can_login && (may_reconnect || OidIsValid(my_connect_as)))
		{
			my_exit_report = RE_EXIT_RECONNECT;
			my_report_owner = owner;
			proc_exit(0);
		}
		SetUserIdAndSecContext(owner, SECURITY_LOCAL_USERID_CHANGE);
		StartTransactionCommand();
		elog(LOG, "revenue_engine: delivery worker connected as \"%s\" acts as the extension's owner \"%s\", who cannot log in",
			 GetUserNameFromId(GetSessionUserId(), false), GetUserNameFromId(owner, false));
		CommitTransactionCommand();
	}
	if (!re_delivery_extension_present())
		exit_no_extension();

	SpinLockAcquire(&shared->mutex);
	my_slot->probing = false;
	SpinLockRelease(&shared->mutex);

	/* the extension may be dropped and created again while it waits */
	if (wait_for_update() && !re_delivery_extension_present())
		exit_no_extension();
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
	TimestampTz last_claim_all;
	TimestampTz last_refresh;
	TimestampTz last_maintenance;
	TimestampTz last_sweep;
	TimestampTz stop_at;		/* after SIGTERM: when requests in flight are
								 * given up */
	bool		campaigns_now;	/* campaign steps may be due now (woken, or
								 * the last turn left some) */
	TimestampTz campaigns_due;	/* the next due campaign step (0: unknown) */
	TimestampTz campaigns_last_scan;
	TimestampTz last_followups;
	int			campaign_cursor;	/* round robin over the tenants */
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
	bool		due = (w->next_due != 0 && now >= w->next_due) ||
		(w->token_due != 0 && now >= w->token_due);

	/* every target at least every second: retries fall due anywhere */
	bool		all = w->want_claim || due ||
		now - w->last_claim_all >= RE_CLAIM_ALL_EVERY_MS * 1000L;
	int			room;
	int			claimed = 0;

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
	if (room <= 0)
		return;
	claimed = claim_targets(w, room, all, now);
	if (all)
		w->last_claim_all = now;
	/* after a claim, the next record brings us back */
	w->next_due = 0;
	if (claimed > 0)
		return;
	if (!all)
	{
		/* none where more was expected: every target, a second after the last look */
		w->next_due = TimestampTzPlusMilliseconds(w->last_claim_all, RE_CLAIM_ALL_EVERY_MS);
		return;
	}
	if (!run_unit("looking for the next due row", next_due_unit, &w->next_due, NULL))
		w->next_due = TimestampTzPlusMilliseconds(now, RE_ERROR_BACKOFF_MS);
	else if (w->next_due != 0 && w->next_due <= now && w->nin_flight > 0)
		w->next_due = 0;		/* due rows of targets at their limit: completions
								 * bring the next claim */
}

/*
 * Campaign steps (src/campaigns/runner.c): one more kind of job.  The due
 * tenants are served in turn, each up to its share of the turn's budget,
 * each batch its own unit: a tenant whose batch fails has its enrollments
 * run one by one, and only an enrollment that fails alone is recorded as
 * failed and tried again later.  Sends they queue are claimed in the same
 * loop turn (claim_step runs next).
 */
typedef struct CampaignScanArgs
{
	ReCampaignTenant *tenants;
	int			n;
} CampaignScanArgs;

typedef struct CampaignBatchArgs
{
	const char *tenant;
	int			limit;
	int64		only_id;
	TimestampTz now;
	ReCampaignBatch out;
} CampaignBatchArgs;

typedef struct CampaignFailArgs
{
	const char *tenant;
	int64		id;
	const char *error;
	TimestampTz now;
} CampaignFailArgs;

static void
campaign_scan_unit(void *arg)
{
	CampaignScanArgs *a = arg;

	a->n = re_campaigns_scan(&a->tenants);
}

static void
campaign_batch_unit(void *arg)
{
	CampaignBatchArgs *a = arg;

	re_campaigns_run_batch(a->tenant, a->limit, a->only_id, a->now, &a->out);
}

static void
campaign_fail_unit(void *arg)
{
	CampaignFailArgs *a = arg;

	re_campaigns_record_failure(a->tenant, a->id, a->error, a->now);
}

static void
followups_unit(void *arg)
{
	re_campaigns_blast_followups(*(TimestampTz *) arg);
}

/* What a batch queued: its sends and events are claimed in this turn. */
static void
campaign_batch_done(WorkerLoop *w, ReCampaignBatch *out)
{
	if (out->sends > 0 || out->events > 0)
		w->want_claim = true;
}

/* Run a failed batch's enrollments one by one. */
static void
campaign_one_by_one(WorkerLoop *w, const char *tenant, const int64 *ids, int n,
					TimestampTz now)
{
	int			i;

	for (i = 0; i < n; i++)
	{
		CampaignBatchArgs one;
		char	   *error = NULL;

		memset(&one, 0, sizeof(one));
		one.tenant = tenant;
		one.limit = 1;
		one.only_id = ids[i];
		one.now = now;
		if (run_unit("running a campaign step", campaign_batch_unit, &one, &error))
			campaign_batch_done(w, &one.out);
		else
		{
			CampaignFailArgs f = {tenant, ids[i], error ? error : "unknown error", now};

			(void) run_unit("recording a failed campaign step", campaign_fail_unit, &f, NULL);
		}
	}
}

static void
campaign_step(WorkerLoop *w, TimestampTz now)
{
	CampaignScanArgs s = {NULL, 0};
	TimestampTz next = 0;
	bool		more = false;
	int			budget = RE_CAMPAIGN_BUDGET;
	int			ndue = 0;
	int			i;

	if (!re_worker_campaign_steps)
	{
		w->campaigns_now = false;
		w->campaigns_due = 0;
		w->campaigns_last_scan = now;
		return;
	}
	if (now - w->last_followups >= RE_BLAST_FOLLOWUPS_EVERY_MS * 1000L)
	{
		(void) run_unit("blast follow-ups", followups_unit, &now, NULL);
		w->last_followups = now;
	}
	if (!(w->campaigns_now || (w->campaigns_due != 0 && now >= w->campaigns_due) ||
		  now - w->campaigns_last_scan >= RE_CAMPAIGN_SCAN_EVERY_MS * 1000L))
		return;
	w->campaigns_now = false;
	w->campaigns_last_scan = now;
	w->campaigns_due = 0;
	if (!run_unit("looking for due campaign steps", campaign_scan_unit, &s, NULL))
	{
		w->campaigns_due = TimestampTzPlusMilliseconds(now, RE_ERROR_BACKOFF_MS);
		return;
	}
	for (i = 0; i < s.n; i++)
	{
		if (s.tenants[i].due <= now)
			ndue++;
		else if (next == 0 || s.tenants[i].due < next)
			next = s.tenants[i].due;
	}
	if (ndue > 0)
	{
		int			share = Max(RE_CAMPAIGN_MIN_SHARE, budget / ndue);
		int64	   *ids = palloc(sizeof(int64) * share);

		set_state("campaign steps");
		for (i = 0; i < s.n && budget > 0; i++)
		{
			ReCampaignTenant *t = &s.tenants[(w->campaign_cursor + i) % s.n];
			CampaignBatchArgs a;

			if (t->due > now)
				continue;
			memset(&a, 0, sizeof(a));
			a.tenant = t->tenant;
			a.limit = Min(share, budget);
			a.now = now;
			a.out.ids = ids;
			if (run_unit("running campaign steps", campaign_batch_unit, &a, NULL))
			{
				campaign_batch_done(w, &a.out);
				budget -= Max(a.out.claimed, 1);
				/* a full batch that moved: the tenant may have more */
				if (a.out.claimed == a.limit && a.out.run > 0)
					more = true;
				if (a.out.token_due != 0 && (next == 0 || a.out.token_due < next))
					next = a.out.token_due;
			}
			else
			{
				int64	   *failed = palloc(sizeof(int64) * Max(a.out.nids, 1));
				int			n = a.out.nids;

				memcpy(failed, ids, sizeof(int64) * n);
				campaign_one_by_one(w, t->tenant, failed, n, now);
				budget -= Max(n, 1);
				more = true;
			}
		}
		w->campaign_cursor = s.n > 0 ? (w->campaign_cursor + 1) % s.n : 0;
	}
	if (more)
		w->campaigns_now = true;
	else
		w->campaigns_due = next;
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
	*(bool *) arg = re_delivery_maintenance();
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
		bool		disabled = false;

		set_state("maintenance");
		(void) run_unit("maintenance", maintenance_unit, &disabled, NULL);
		w->last_maintenance = now;
		/* an endpoint the circuit breaker disabled gets no claim from a stale list */
		if (disabled)
			w->last_refresh = 0;
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
		w->campaigns_now = true;	/* an enrolling commit: its steps are due now */
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

	if ((w->want_claim || w->claim_more || w->campaigns_now) && w->stop_at == 0)
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
	/* campaign steps: the next due one, and the periodic look for new ones */
	if (w->stop_at == 0 && re_worker_campaign_steps)
	{
		TimestampTz campaigns = TimestampTzPlusMilliseconds(w->campaigns_last_scan,
															RE_CAMPAIGN_SCAN_EVERY_MS);

		if (w->campaigns_due != 0 && w->campaigns_due < campaigns)
			campaigns = w->campaigns_due;
		timeout = Min(timeout, ms_until(campaigns, now));
	}
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
		{
			campaign_step(w, now);
			if (re_delivery_extension_gone)
				continue;
			now = GetCurrentTimestamp();
			claim_step(w, now);
		}
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
	w.events = re_create_wait_event_set(3);
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
	worker_startup(arg);
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

		/* attached workers of databases with the extension (probes are not workers yet) */
		if (s->phase != RE_SLOT_RUNNING || s->probing)
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
