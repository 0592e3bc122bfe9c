/*-------------------------------------------------------------------------
 *
 * keyed_update.h
 *	  Update one row found by its primary key straight through the heap and
 *	  index access methods, without planning or running a statement.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RE_KEYED_UPDATE_H
#define RE_KEYED_UPDATE_H

#include "access/attnum.h"

#define RE_KEYED_MAX_COLS 8

/*
 * A table of schema revenue_engine updated by primary key.  The caller fills
 * relname and colnames/coltypes (the columns it reads or writes); the rest is
 * looked up on first use and again after re_keyed_forget().
 */
typedef struct ReKeyedRel
{
	const char *relname;
	int			ncols;
	const char *colnames[RE_KEYED_MAX_COLS];
	Oid			coltypes[RE_KEYED_MAX_COLS];

	/* looked up */
	bool		looked_up;
	bool		usable;			/* false: always take the statement path */
	Oid			relid;
	Oid			indexid;
	int			nkeys;
	RegProcedure eqproc[INDEX_MAX_KEYS];
	Oid			collation[INDEX_MAX_KEYS];
	AttrNumber	keyattnos[INDEX_MAX_KEYS];
	AttrNumber	attnos[RE_KEYED_MAX_COLS];
	int16		keylen[INDEX_MAX_KEYS];
	bool		keybyval[INDEX_MAX_KEYS];

	/* where this transaction last wrote each row (keyed_update.c) */
	struct HTAB *rows;
	LocalTransactionId rows_lxid;
} ReKeyedRel;

/*
 * Computes the new row from the old one.  values/nulls are indexed like the
 * table's columns (attno - 1); change them in place.
 */
typedef void (*ReRowModify) (ReKeyedRel *kr, Datum *values, bool *nulls,
							 void *arg);

extern bool re_keyed_update(ReKeyedRel *kr, const Datum *keys,
							ReRowModify modify, void *arg,
							Datum **values, bool **nulls);
extern bool re_keyed_fetch(ReKeyedRel *kr, const Datum *keys, bool *found,
						   Datum **values, bool **nulls);
extern void re_keyed_forget(ReKeyedRel *kr, Oid relid);

/* The value of the i-th column of colnames in a row given to or returned by re_keyed_update. */
#define RE_KEYED_COL(kr, values, i) ((values)[(kr)->attnos[(i)] - 1])
#define RE_KEYED_NULL(kr, nulls, i) ((nulls)[(kr)->attnos[(i)] - 1])

#endif							/* RE_KEYED_UPDATE_H */
