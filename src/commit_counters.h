/*-------------------------------------------------------------------------
 *
 * commit_counters.h
 *	  Counters kept exact by triggers, summed in memory per transaction and
 *	  written at commit into slot rows (src/commit_counters.c): the blast
 *	  funnel (src/blasts/funnel.c) and the campaign counters
 *	  (src/campaigns/counters.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef RE_COMMIT_COUNTERS_H
#define RE_COMMIT_COUNTERS_H

#include "executor/spi.h"
#include "utils/rel.h"

#define RE_CC_MAX_KEYS		6
#define RE_CC_MAX_COUNTERS	20

/*
 * A counter table in schema revenue_engine: columns tenant_id text, the
 * keys, slot smallint, the counters bigint; its primary key is (tenant_id,
 * keys..., slot).  The description is static; the fields after it are the
 * module's cache.
 */
typedef struct ReCounterTable
{
	const char *relname;		/* e.g. "blast_counters" */
	const char *label;			/* in messages: "funnel counters" */
	const char *missing_column_hint;	/* a counted column is missing */
	int			nkeys;
	const char *const *key_names;
	const Oid  *key_types;		/* INT2OID, INT4OID or INT8OID */
	int			ncounters;
	const char *const *counter_names;
	int			nslots;			/* a writer adds to slot (its process % nslots) */

	/*
	 * The condition under which a missing counter row may be inserted ($1
	 * the tenant, $2 .. the keys), e.g. that its parent row still exists.
	 */
	const char *insert_guard;	/* NULL: none */
	bool		insert_on_shards;	/* Citus: insert missing rows into a shard
									 * (without the guard) */

	/*
	 * The recount: a SELECT of rows (tenant_id, keys..., slot, counters...)
	 * from a scan of the counted tables, and those tables (locked in SHARE
	 * mode first, so that no writer's changes are half in the scan).
	 */
	char	   *(*recount_select) (void);
	int			nsources;
	const char *const *source_names;

	/* cache: the counter relation's attribute numbers and primary key */
	Oid			relid;
	Oid			pkey;
	int			att_tenant;
	int			att_key[RE_CC_MAX_KEYS];
	int			att_slot;
	int			att_counter[RE_CC_MAX_COUNTERS];
	SPIPlanPtr	upsert_plan;
} ReCounterTable;

/*
 * Add delta[] to the counters of (tenant, keys) in counter relation
 * counters (the table, or its Citus shard colocated with the counted row:
 * re_cc_relation).  Written at commit; gone with a subtransaction that
 * aborts.
 */
extern void re_cc_add(ReCounterTable *table, Oid counters, const char *tenant,
					  const int64 *keys, const int64 *delta);

/*
 * Set every counter of the table to zero, and with scan from its recount
 * (the caller is connected to SPI in the owner scope).  Changes of this
 * transaction made before are in the result: they are dropped at commit
 * (unless the subtransaction that reset aborts).
 */
extern void re_cc_reset(ReCounterTable *table, bool scan);

/*
 * The counter relation that a change of source (a counted table, named
 * source_name, or its Citus shard) counts into: the table, or on Citus the
 * shard of the counter table colocated with source's shard on this node.
 */
extern Oid	re_cc_relation(ReCounterTable *table, Relation source, const char *source_name);

/*
 * The attribute number of a column counted from or into, of one of two
 * types (InvalidOid: any type); an error naming it if missing or retyped.
 */
extern int	re_cc_column(ReCounterTable *table, Relation rel, const char *name, Oid type1, Oid type2);

#endif							/* RE_COMMIT_COUNTERS_H */
