/*-------------------------------------------------------------------------
 *
 * create_blast.c
 *	  revenue_engine.create_blast: the caller's half.  A recipients query
 *	  runs here as the caller; its columns, made text by their types' output
 *	  functions while still the caller, go as text[] to the owner's half,
 *	  revenue_engine.blast_apply, which checks, writes and queues.
 *
 * blast_apply runs inside the owner scope and reads nothing but its
 * arguments and the extension's tables; nobody else may execute it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"

#include "revenue_engine.h"

PG_FUNCTION_INFO_V1(re_create_blast);

/* create_blast's arguments, in order */
enum
{
	ARG_CHANNEL, ARG_TAG, ARG_RECIPIENTS, ARG_QUERY, ARG_MESSAGE, ARG_TEMPLATE,
	ARG_PAYLOAD, ARG_SCHEDULED_FOR, ARG_FOLLOW_UP_STAGE, ARG_ON_INVALID, NARGS
};

#define NAPPLY 12

/*
 * SQL: revenue_engine.create_blast(channel, tag, recipients jsonb,
 * recipients_query text, message, template, payload, scheduled_for,
 * follow_up_stage, on_invalid) → (blast_id, recipient_count, duplicates,
 * rejected)
 */
Datum
re_create_blast(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr apply_plan = NULL;
	static const Oid text3[3] = {TEXTOID, TEXTOID, TEXTOID};
	Datum		values[NAPPLY];
	char		nulls[NAPPLY];
	Datum		columns[3];
	Datum		result[4];
	bool		result_null[4] = {false, false, false, false};
	TupleDesc	tupdesc;
	ReOwnerScope scope = {0};
	int64		blast_id;
	int			i;
	int			ret;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "create_blast must return a record");
	if (PG_ARGISNULL(ARG_RECIPIENTS) == PG_ARGISNULL(ARG_QUERY))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("give the recipients either as an array or as a query")));

	/* blast_apply(channel, tag, recipients, inputs, names, contact_ids, message ...) */
	memset(nulls, ' ', sizeof(nulls));
	for (i = 0; i < NARGS; i++)
	{
		int			to = i < ARG_QUERY ? i : i + 2;

		if (i == ARG_QUERY)
			continue;
		values[to] = PG_GETARG_DATUM(i);
		if (PG_ARGISNULL(i))
			nulls[to] = 'n';
	}
	nulls[3] = nulls[4] = nulls[5] = 'n';

	if (!PG_ARGISNULL(ARG_QUERY))
	{
		char	   *sql = psprintf("SELECT * FROM (%s) AS q",
								   text_to_cstring(PG_GETARG_TEXT_PP(ARG_QUERY)));
		int			nrows;
		int			width = re_caller_query_arrays(sql, 1, 3, text3, columns, &nrows);

		if (width < 1 || width > 3)
			ereport(ERROR,
					(errcode(ERRCODE_SYNTAX_ERROR),
					 errmsg("recipients query returns %d columns, expected 1 to 3", width),
					 errhint("Return (phone text [, name text [, contact_id text]]) rows.")));
		for (i = 0; i < width; i++)
		{
			values[3 + i] = columns[i];
			nulls[3 + i] = ' ';
		}
		/* a query of phones only: names and contact ids are NULL, not absent */
		for (; i < 3; i++)
		{
			values[3 + i] = PointerGetDatum(construct_empty_array(TEXTOID));
			nulls[3 + i] = ' ';
		}
	}

	re_connect_as_owner(&scope);
	if (apply_plan == NULL)
	{
		Oid			types[NAPPLY] = {TEXTOID, TEXTOID, JSONBOID, TEXTARRAYOID, TEXTARRAYOID,
		TEXTARRAYOID, TEXTOID, JSONBOID, JSONBOID, TIMESTAMPTZOID, INT4OID, TEXTOID};

		apply_plan = re_prepare_saved("SELECT a.blast_id, a.recipient_count, a.duplicates, a.rejected"
									  "  FROM revenue_engine.blast_apply($1, $2, $3, $4, $5, $6,"
									  "       $7, $8, $9, $10, $11, $12) a",
									  NAPPLY, types);
	}
	ret = SPI_execute_plan(apply_plan, values, nulls, false, 1);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "blast_apply failed: %s", SPI_result_code_string(ret));
	/* read out before SPI_finish frees the tuple (int8 is by reference on some platforms) */
	blast_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
										   1, &result_null[0]));
	for (i = 1; i < 4; i++)
		result[i] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
								  i + 1, &result_null[i]);
	re_disconnect_as_owner(&scope);
	result[0] = Int64GetDatum(blast_id);

	tupdesc = BlessTupleDesc(tupdesc);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, result, result_null)));
}
