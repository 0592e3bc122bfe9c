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
