/*-------------------------------------------------------------------------
 *
 * template.h
 *	  Campaign templates rendered for a contact (template.c): the one
 *	  rendering used by render_template(), render_for_send() and the runner.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RE_CAMPAIGNS_TEMPLATE_H
#define RE_CAMPAIGNS_TEMPLATE_H

#include "postgres.h"

#include "utils/jsonb.h"

/*
 * The message template name (version; <= 0: the latest) renders for contact
 * contact_id of tenant with context (a JSON object), in form "text" or
 * "whatsapp_template": the object described in README "Templates".  Runs its
 * statements in the owner scope (nestable: the runner may call it from its
 * own scope and SPI connection).  Errors: 42704 for an unknown template,
 * version or contact, 22023 for a bad form or context.  The result is
 * allocated in the caller's memory context.
 */
extern Jsonb *re_render_for_send(const char *tenant, const char *template_name,
								 int32 version, int64 contact_id, Jsonb *context,
								 const char *form);

#endif							/* RE_CAMPAIGNS_TEMPLATE_H */
