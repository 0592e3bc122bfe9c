/*-------------------------------------------------------------------------
 *
 * citus.c
 *	  What the rest of the extension needs to know about Citus, without
 *	  linking against it (see src/citus/citus.sql for distribute()).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "revenue_engine.h"

/*
 * Whether this backend runs statements that another Citus node sent it: a
 * shard's part of a query planned on the coordinator, or a call of a
 * distributed function.  Citus names these connections "citus_internal
 * gpid=..." (its CITUS_APPLICATION_NAME_PREFIX; "citus_rebalancer" for
 * shard moves).  A session setting of the client, such as
 * revenue_engine.tenant, does not reach such a backend.
 */
bool
re_citus_remote_backend(void)
{
	return application_name != NULL &&
		(strncmp(application_name, "citus_internal", 14) == 0 ||
		 strncmp(application_name, "citus_rebalancer", 16) == 0);
}

/*
 * Invalidate rel, the table of the extension named relname, for every
 * backend that caches what it holds.  A trigger of a Citus reference table
 * fires on the table's shard of each node (usage_types_102008), and the
 * caches watch the table itself: then both are invalidated.
 */
void
re_invalidate_table(Relation rel, const char *relname)
{
	CacheInvalidateRelcache(rel);
	if (strcmp(RelationGetRelationName(rel), relname) != 0)
	{
		Oid			table = get_relname_relid(relname, RelationGetNamespace(rel));

		if (OidIsValid(table))
			CacheInvalidateRelcacheByRelid(table);
	}
}
