/*-------------------------------------------------------------------------
 *
 * template.c
 *	  campaigns (see src/campaigns/schema.sql for the module's parts).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"
