/*-------------------------------------------------------------------------
 *
 * blasts.h
 *	  Recipient statuses of blasts: their ranking, and the funnel counters.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RE_BLASTS_H
#define RE_BLASTS_H

#include "utils/jsonb.h"

/*
 * Counter rows per blast.  A recipient is counted in row id % slots, so
 * concurrent updates of different recipients of one blast rarely queue on
 * one row.  Fixed: changing it would need existing counters redistributed.
 */
#define RE_FUNNEL_SLOTS 16

/* Statuses in rank order; failed stands outside the ranking. */
typedef enum ReStatus
{
	RE_ST_PENDING = 0,
	RE_ST_SENT,
	RE_ST_DELIVERED,
	RE_ST_READ,
	RE_ST_REPLIED,
	RE_ST_CLOSED,
	RE_ST_FAILED,
	RE_ST_UNKNOWN
} ReStatus;

/* Stages sent .. closed each have a timestamp column. */
#define RE_NSTAGES 5

extern const char *const re_status_names[];

/* revenue_engine.reply_window, in minutes */
extern int	re_reply_window_min;

/* The module's settings (parked statuses' retention and caps), from _PG_init */
extern void re_status_init(void);

/* The status of a name, RE_ST_UNKNOWN if none. */
extern ReStatus re_status_from_name(const char *name);

/*
 * A status found by polling (the worker, in its transaction, SPI connected):
 * applied to the recipient of message_id with source polling.
 */
extern void re_status_polled(const char *tenant, const char *message_id,
							 const char *status, Jsonb *raw);

/*
 * The worker's sweep: apply parked statuses whose message id has landed.
 * re_status_sweep_wanted: a landing in this process left some to it.
 */
extern void re_status_sweep(void);
extern bool re_status_sweep_wanted;

#endif							/* RE_BLASTS_H */
