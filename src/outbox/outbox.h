/*-------------------------------------------------------------------------
 *
 * outbox.h
 *	  Writing events into revenue_engine.webhook_events in the caller's
 *	  transaction.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RE_OUTBOX_H
#define RE_OUTBOX_H

#include "postgres.h"

#include "utils/jsonb.h"
#include "utils/uuid.h"

/* A random (version 4) uuid for an event id. */
extern void re_new_event_id(pg_uuid_t *id);

/*
 * The "user" object for user_id from revenue_engine.user_payload_function,
 * or NULL when no function is set.  Runs with the caller's privileges: call
 * it outside an owner scope.
 */
extern Jsonb *re_build_user_payload(const pg_uuid_t *user_id);

/*
 * Insert one pending event.  The caller is connected to SPI and inside an
 * owner scope; event_id is the id to use (see re_new_event_id).
 */
extern void re_outbox_enqueue(const char *tenant, const pg_uuid_t *user_id,
							  const char *event_type, Jsonb *event_data,
							  Jsonb *user_data, const pg_uuid_t *event_id);

#endif							/* RE_OUTBOX_H */
