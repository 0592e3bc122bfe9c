/*-------------------------------------------------------------------------
 *
 * backfill.c
 *	  revenue_engine.backfill_usage: the caller's half.  The history query
 *	  runs here as the caller, its columns cast to uuid, text, date and
 *	  bigint by the caller; with emit_events, the events' user objects are
 *	  built here too, as the caller.  The owner's half,
 *	  revenue_engine.backfill_apply, receives plain arrays only.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/uuid.h"

#include "revenue_engine.h"
#include "outbox/outbox.h"

PG_FUNCTION_INFO_V1(re_backfill_usage);

#define NAPPLY 7

static int
uuid_order(const void *a, const void *b)
{
	return memcmp(a, b, UUID_LEN);
}

/*
 * The user object of each distinct user of the history, built by the
 * caller's payload function as the caller: into *users and *payloads, or
 * both NULL when no payload function is set.
 */
static void
build_payloads(ArrayType *user_ids, Datum *users, Datum *payloads)
{
	Datum	   *ids;
	bool	   *nulls;
	int			n;
	int			ndistinct = 0;
	pg_uuid_t  *sorted;
	Datum	   *out_users;
	Datum	   *out_payloads;
	bool	   *out_nulls;
	int			dims[1];
	int			lbs[1] = {1};
	int			i;

	*users = (Datum) 0;
	*payloads = (Datum) 0;
	if (re_user_payload_function == NULL || re_user_payload_function[0] == '\0')
		return;

	deconstruct_array(user_ids, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR, &ids, &nulls, &n);
	sorted = palloc(sizeof(pg_uuid_t) * Max(n, 1));
	for (i = 0; i < n; i++)
		if (!nulls[i])
			sorted[ndistinct++] = *DatumGetUUIDP(ids[i]);
	qsort(sorted, ndistinct, sizeof(pg_uuid_t), uuid_order);

	out_users = palloc(sizeof(Datum) * Max(ndistinct, 1));
	out_payloads = palloc(sizeof(Datum) * Max(ndistinct, 1));
	out_nulls = palloc(sizeof(bool) * Max(ndistinct, 1));
	n = 0;
	for (i = 0; i < ndistinct; i++)
	{
		Jsonb	   *payload;

		if (i > 0 && uuid_order(&sorted[i - 1], &sorted[i]) == 0)
			continue;
		payload = re_build_user_payload(&sorted[i]);
		out_users[n] = UUIDPGetDatum(&sorted[i]);
		out_payloads[n] = payload ? JsonbPGetDatum(payload) : (Datum) 0;
		out_nulls[n] = payload == NULL;
		n++;
	}
	dims[0] = n;
	*users = PointerGetDatum(construct_md_array(out_users, NULL, 1, dims, lbs, UUIDOID,
												UUID_LEN, false, TYPALIGN_CHAR));
	*payloads = PointerGetDatum(construct_md_array(out_payloads, out_nulls, 1, dims, lbs,
												   JSONBOID, -1, false, TYPALIGN_INT));
}

/* SQL: revenue_engine.backfill_usage(query text, emit_events boolean) → jsonb */
Datum
re_backfill_usage(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr apply_plan = NULL;
	static const Oid column_types[4] = {UUIDOID, TEXTOID, DATEOID, INT8OID};
	char	   *query;
	bool		emit_events;
	int			width;
	int			nrows;
	Datum		values[NAPPLY];
	char		nulls[NAPPLY] = {' ', ' ', ' ', ' ', ' ', 'n', 'n'};
	bool		isnull;
	Datum		result;
	ReOwnerScope scope = {0};
	int			ret;

	re_require_arg(fcinfo, 0, "query");
	re_require_arg(fcinfo, 1, "emit_events");
	query = text_to_cstring(PG_GETARG_TEXT_PP(0));
	emit_events = PG_GETARG_BOOL(1);

	/* as the caller: the query, the casts of its columns, the user objects */
	width = re_caller_query_width(psprintf("SELECT * FROM (%s) AS q(user_id, usage_type, usage_date, count)",
										   query));
	if (width != 4)
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("backfill query returns %d columns, expected 4", width),
				 errhint("Return (user_id uuid, usage_type text, usage_date date, count bigint) rows.")));
	re_caller_query_arrays(psprintf("SELECT q.user_id::pg_catalog.uuid, q.usage_type::pg_catalog.text,"
									"       q.usage_date::pg_catalog.date, q.count::pg_catalog.int8"
									"  FROM (%s) AS q(user_id, usage_type, usage_date, count)",
									query),
						   4, 4, column_types, values, &nrows);
	values[4] = BoolGetDatum(emit_events);
	if (emit_events)
	{
		build_payloads(DatumGetArrayTypeP(values[0]), &values[5], &values[6]);
		if (values[5] != (Datum) 0)
			nulls[5] = nulls[6] = ' ';
	}

	re_connect_as_owner(&scope);
	if (apply_plan == NULL)
	{
		Oid			types[NAPPLY] = {UUIDARRAYOID, TEXTARRAYOID, DATEARRAYOID, INT8ARRAYOID,
		BOOLOID, UUIDARRAYOID, JSONBARRAYOID};

		apply_plan = re_prepare_saved("SELECT revenue_engine.backfill_apply($1, $2, $3, $4, $5, $6, $7)",
									  NAPPLY, types);
	}
	ret = SPI_execute_plan(apply_plan, values, nulls, false, 1);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "backfill_apply failed: %s", SPI_result_code_string(ret));
	result = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	/* into the caller's context, before SPI_finish frees the tuple */
	result = SPI_datumTransfer(result, false, -1);
	re_disconnect_as_owner(&scope);

	PG_RETURN_DATUM(result);
}
