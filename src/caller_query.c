/*-------------------------------------------------------------------------
 *
 * caller_query.c
 *	  The caller's half of a function that takes a query from the caller
 *	  (create_blast's recipients, backfill_usage's history): the query runs
 *	  with the caller's identity and search_path, and its rows leave here as
 *	  plain arrays of built-in types for the owner's half.
 *
 * Why: code running as the extension's owner must never evaluate what the
 * caller can create (its query, its types, their casts and output functions,
 * its temporary relations).  So everything that touches the caller's objects
 * happens here, before the owner scope is entered: each value of a type that
 * is not wanted as such is turned into text by its type's output function
 * while still the caller, and the owner's half receives only text[], uuid[],
 * date[], int8[] ... that pg_catalog's own functions read.
 *
 * Call these outside any owner scope: they run as whoever is the current
 * user.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "revenue_engine.h"

/* Rows fetched from the caller's query at a time. */
#define FETCH_ROWS 10000

static Portal
open_caller_query(const char *sql)
{
	Portal		portal;

	portal = SPI_cursor_open_with_args(NULL, sql, 0, NULL, NULL, NULL, false, 0);
	if (portal == NULL)
		elog(ERROR, "SPI_cursor_open failed for \"%s\": %s",
			 sql, SPI_result_code_string(SPI_result));
	return portal;
}

int
re_caller_query_width(const char *sql)
{
	Portal		portal;
	int			width;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	portal = open_caller_query(sql);
	width = portal->tupDesc ? portal->tupDesc->natts : 0;
	SPI_cursor_close(portal);
	SPI_finish();
	return width;
}

int
re_caller_query_arrays(const char *sql, int min_cols, int max_cols,
					   const Oid *types, Datum *arrays, int *nrows)
{
	MemoryContext outer = CurrentMemoryContext;
	MemoryContext batch;
	ArrayBuildState *states[RE_CALLER_QUERY_MAX_COLS];
	FmgrInfo	out[RE_CALLER_QUERY_MAX_COLS];
	bool		to_text[RE_CALLER_QUERY_MAX_COLS];
	Portal		portal;
	TupleDesc	desc;
	int			width;
	int			i;

	Assert(max_cols <= RE_CALLER_QUERY_MAX_COLS);
	*nrows = 0;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	portal = open_caller_query(sql);
	desc = portal->tupDesc;
	width = desc ? desc->natts : 0;
	if (width < min_cols || width > max_cols)
	{
		SPI_cursor_close(portal);
		SPI_finish();
		return width;
	}

	for (i = 0; i < width; i++)
	{
		Oid			coltype = TupleDescAttr(desc, i)->atttypid;

		to_text[i] = false;
		if (coltype != types[i])
		{
			Oid			outfn;
			bool		varlena;

			/* only text is made from another type, by the caller's output function */
			if (types[i] != TEXTOID)
				elog(ERROR, "column %d of the caller's query is of type %s, not %s",
					 i + 1, format_type_be(coltype), format_type_be(types[i]));
			getTypeOutputInfo(coltype, &outfn, &varlena);
			fmgr_info(outfn, &out[i]);
			to_text[i] = true;
		}
		states[i] = initArrayResult(types[i], outer, true);
	}

	batch = AllocSetContextCreate(CurrentMemoryContext, "caller query batch",
								  ALLOCSET_DEFAULT_SIZES);
	for (;;)
	{
		uint64		r;

		SPI_cursor_fetch(portal, true, FETCH_ROWS);
		if (SPI_processed == 0)
			break;
		for (r = 0; r < SPI_processed; r++)
		{
			HeapTuple	tup = SPI_tuptable->vals[r];
			MemoryContext old = MemoryContextSwitchTo(batch);

			for (i = 0; i < width; i++)
			{
				bool		isnull;
				Datum		value = SPI_getbinval(tup, desc, i + 1, &isnull);

				if (!isnull && to_text[i])
					value = CStringGetTextDatum(OutputFunctionCall(&out[i], value));
				/* copied into the build state's own context, freed once the array is made */
				accumArrayResult(states[i], value, isnull, types[i], outer);
			}
			MemoryContextSwitchTo(old);
			MemoryContextReset(batch);
		}
		if (*nrows > INT_MAX - (int) SPI_processed)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("the query returns more than %d rows", INT_MAX)));
		*nrows += (int) SPI_processed;
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	SPI_finish();

	for (i = 0; i < width; i++)
		arrays[i] = makeArrayResult(states[i], outer);
	return width;
}
