/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  The launcher and the per-database delivery workers: shared memory,
 *	  waking a worker at commit, and stopping one before DROP DATABASE.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RE_WORKER_H
#define RE_WORKER_H

#include "postgres.h"

/* Settings */
extern bool re_http_allow_private;
extern int	re_worker_max_in_flight;
extern bool re_worker_campaign_steps;

/* Called from _PG_init. */
extern void re_worker_init(void);

/* Wake this database's worker (or the launcher) when the transaction commits. */
extern void re_worker_wake_at_commit(void);

/* Background worker entry points (bgw_function_name). */
extern PGDLLEXPORT void re_launcher_main(Datum arg);
extern PGDLLEXPORT void re_worker_main(Datum arg);

#endif							/* RE_WORKER_H */
