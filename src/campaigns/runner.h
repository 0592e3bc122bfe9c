/*-------------------------------------------------------------------------
 *
 * runner.h
 *	  The worker's job kind "campaign steps": which tenants have due
 *	  enrollments, and running a batch of one tenant's due steps in one
 *	  short transaction (claim with SKIP LOCKED, consent, send window,
 *	  frequency cap, rate limit, render, queue the send, move on).
 *
 * The worker calls these through run_unit (each opens and commits its own
 * transaction; an ERROR aborts only that unit); nothing here calls back into
 * the worker.  revenue_engine.run_campaign_steps() runs the same code in the
 * calling session's transaction.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RE_CAMPAIGNS_RUNNER_H
#define RE_CAMPAIGNS_RUNNER_H

#include "postgres.h"

#include "datatype/timestamp.h"

/* A tenant with active enrollments scheduled, and its earliest due time. */
typedef struct ReCampaignTenant
{
	char		tenant[64];
	TimestampTz due;
} ReCampaignTenant;

/* What one batch did. */
typedef struct ReCampaignBatch
{
	int			claimed;		/* enrollments claimed (locked) */
	int			run;			/* of them, moved on (a step run, deferred ...) */
	int			steps;			/* steps run */
	int			sends;			/* sends queued */
	int			events;			/* outbox events queued (notify steps) */
	int			held;			/* not run: out of tokens (due again at its
								 * turn), or its consent row busy (due now) */
	TimestampTz token_due;		/* held for tokens: when the next one comes */
	int			nids;			/* the claimed enrollments (for one-by-one retry) */
	int64	   *ids;			/* allocated by the caller, room for the limit */
} ReCampaignBatch;

/*
 * The tenants with scheduled enrollments of active campaigns (one index probe
 * per tenant), in tenant order, into *tenants (palloc'd in the caller's
 * context); returns their count.  Runs its own transaction.
 */
extern int	re_campaigns_scan(ReCampaignTenant **tenants);

/*
 * Claim up to limit due enrollments of tenant (only_id > 0: just that one)
 * and run their steps at now, in one transaction.
 */
extern void re_campaigns_run_batch(const char *tenant, int limit, int64 only_id,
								   TimestampTz now, ReCampaignBatch *out);

/* An enrollment whose step raised error: history 'failed', retried later. */
extern void re_campaigns_record_failure(const char *tenant, int64 enrollment_id,
										const char *error, TimestampTz now);

/* revenue_engine.campaign_blast_followups(now), when it exists. */
extern void re_campaigns_blast_followups(TimestampTz now);

/* An enrollment whose step failed is tried again after this. */
#define RE_CAMPAIGN_RETRY_INTERVAL "5 minutes"

#endif							/* RE_CAMPAIGNS_RUNNER_H */
