/*-------------------------------------------------------------------------
 *
 * delivery.h
 *	  The queue side of delivery: claiming due deliveries (events) and sends
 *	  (messages) in short transactions, and recording outcomes.  Used by the
 *	  worker; knows nothing of HTTP beyond the request it prepares.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RE_DELIVERY_H
#define RE_DELIVERY_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "http/http.h"
#include "lib/ilist.h"
#include "utils/palloc.h"

typedef enum ReJobKind
{
	RE_JOB_EVENT,
	RE_JOB_SEND,
	RE_JOB_POLL					/* GET a channel's status URL for a recipient */
} ReJobKind;

/* An endpoint or a channel, as loaded at the last refresh. */
typedef struct ReTarget
{
	ReJobKind	kind;
	char		tenant[64];
	int64		id;
	bool		seen;			/* present at the last refresh */
	int			group;			/* its shard group on a Citus node (delivery.c) */
	int			max_in_flight;
	int			in_flight;
	int			held;			/* jobs claimed and not yet recorded: it is
								 * freed only without them */
	int			last_claimed;	/* rows the last claim brought */
	int			rate_limit;		/* 0: none */
	double		rate_period_s;
	double		tokens;
	TimestampTz tokens_at;
	bool		may_have_more;	/* the last claim filled its limit */
	TimestampTz claim_after;	/* a failed claim is not retried before */
	int			claim_failures; /* in a row: the back-off doubles */
	struct ReTarget *bucket;	/* polls: the channel's send target, whose
								 * rate limit they share; else NULL */
	MemoryContext cxt;			/* holds the strings below */
	char	   *url;
	char	   *method;
	char	  **headers;		/* "Name: value" */
	int			nheaders;
	char	  **secrets;
	int			nsecrets;
	char	   *body_template;	/* sends: JSON object text */
	char	   *message_id_path;	/* sends: text[] literal or NULL */
	long		timeout_ms;
	long		connect_timeout_ms;
	double	   *retry_s;
	int			nretry;
	bool		at_most_once;	/* channels: delivery at_most_once */
} ReTarget;

/*
 * The targets the worker knows, found by (kind, tenant, id) in a hash table;
 * one that disappeared is freed once no job holds it.
 */
typedef struct ReTargetSet
{
	MemoryContext cxt;
	struct HTAB *by_key;
	ReTarget  **all;
	int			n;
	int			size;
} ReTargetSet;

typedef struct ReBatch
{
	MemoryContext cxt;
	int			remaining;
} ReBatch;

/* One claimed row being delivered. */
typedef struct ReJob
{
	ReJobKind	kind;
	ReTarget   *target;
	ReBatch    *batch;
	char		tenant[64];
	char		event_id[40];	/* events */
	int64		send_id;		/* sends; polls: the recipient */
	char	   *message_id;		/* polls */
	int			attempt;
	TimestampTz started_at;
	const char *hdrs[64];
	char		signature[512];
	char		id_header[80];
	char		ts_header[48];
	char		sig_header[540];
	char		key_header[80];
	char	   *body;
	char	   *record_error;	/* recording its outcome failed: why */
	dlist_node	in_flight_node; /* in the worker's list while on the network */
	ReHttpRequest req;
} ReJob;

/* The outcome of one attempt, to be recorded. */
typedef enum ReOutcome
{
	RE_OUTCOME_SENT,
	RE_OUTCOME_RETRY,
	RE_OUTCOME_DEAD,
	RE_OUTCOME_UNKNOWN			/* sends of at-most-once channels: the request
								 * may have arrived, its answer is lost; never
								 * sent again */
} ReOutcome;

extern void re_delivery_reclaim_all(void);
extern int	re_delivery_reclaim_expired(void);
extern ReTargetSet *re_delivery_target_set(MemoryContext cxt);
extern bool re_delivery_refresh_targets(ReTargetSet *set);

/*
 * Claim due rows of targets of one kind in one statement: up to limits[i]
 * of targets[i], max in all; jobs are allocated in batch->cxt.
 */
extern int	re_delivery_claim(ReJobKind kind, ReTarget **targets, const int *limits,
							  int ntargets, int max, ReJob **jobs, ReBatch *batch);
extern void re_delivery_record(ReJob **jobs, int njobs, int *nsent, int *nretry,
							   int *ndead);
extern TimestampTz re_delivery_next_due(void);
/* Record polls' answers: each status found is applied with source polling. */
extern void re_delivery_record_polls(ReJob **jobs, int njobs);
/* Records the extension's OID; later transactions stop when it changes. */
extern bool re_delivery_extension_present(void);
extern bool re_delivery_extension_gone;
/* Purge, circuit breaker, poll queue; true when it disabled an endpoint. */
extern bool re_delivery_maintenance(void);
extern void re_delivery_sweep_parked(void);

#endif							/* RE_DELIVERY_H */
