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

#define RE_KEYED_MAX_KEYS 4
#define RE_KEYED_MAX_COLS 8

/*
 * A table of schema revenue_engine updated by primary key.  The caller fills
 * relname, the primary key it expects (keynames/keytypes, in the key's order:
 * the Datums it passes) and colnames/coltypes (the columns it reads or
 * writes); the rest is looked up on first use, again when the table's
 * primary key index changed and after re_keyed_forget().  A table whose
 * primary key is not the one expected is never touched this way.
 */
typedef struct ReKeyedRel
{
	const char *relname;
	int			nkeys;
	const char *keynames[RE_KEYED_MAX_KEYS];
	Oid			keytypes[RE_KEYED_MAX_KEYS];
	int			ncols;
	const char *colnames[RE_KEYED_MAX_COLS];
	Oid			coltypes[RE_KEYED_MAX_COLS];

	/* looked up */
	bool		looked_up;
	bool		usable;			/* false: always take the statement path */
	Oid			relid;
	Oid			indexid;
	RegProcedure eqproc[RE_KEYED_MAX_KEYS];
	Oid			collation[RE_KEYED_MAX_KEYS];
	AttrNumber	keyattnos[RE_KEYED_MAX_KEYS];
	AttrNumber	attnos[RE_KEYED_MAX_COLS];
	int16		keylen[RE_KEYED_MAX_KEYS];
	bool		keybyval[RE_KEYED_MAX_KEYS];

	/*
	 * A Citus table (keyed_update.c): its shards' hash ranges and, for the
	 * shards placed on this node, their relations; the first key column is
	 * the distribution column.
	 */
	bool		citus;
	int			nshards;
	int32	   *shard_min;
	int32	   *shard_max;
	Oid		   *shard_relid;	/* InvalidOid: not on this node */
	int			natts;			/* the table's, which a shard must have */
	Oid			cur_indexid;	/* the primary key of the relation opened */

	/* where this transaction last wrote each row (keyed_update.c) */
	struct HTAB *rows;
	LocalTransactionId rows_lxid;
} ReKeyedRel;

/*
 * Computes the new row from the old one.  values/nulls are indexed like the
 * table's columns (attno - 1); change them in place, never to NULL in a NOT
 * NULL column.  It is called again with a newer version when a concurrent
 * writer committed one first, so it must derive everything it sets, in the
 * row and in arg, from the row it is given.
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
