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

#include "datatype/timestamp.h"
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

/* A contact as the runner read it (the columns render_for_send would read). */
typedef struct ReRenderContact
{
	char	   *name;
	char	   *phone;
	char	   *email;
	char	   *external_ref;
	char	   *timezone;
	Jsonb	   *attributes;
	TimestampTz since;			/* coalesce(user_profiles.created_at, contacts.created_at) */
} ReRenderContact;

/* re_render_contact's result: render_for_send's object as fields. */
typedef struct ReRendered
{
	bool		skipped;
	char	   *reason;			/* NULL unless the template's own render failed */
	char	   *template_name;	/* the one sent (a fallback) or, skipped, asked for */
	int32		version;
	int64		template_id;
	char	   *text;			/* form text */
	char	   *cta_url;
	Jsonb	   *whatsapp;		/* form whatsapp_template */
	bool		fallback_used;
} ReRendered;

/*
 * The runner's render: as re_render_for_send, for a contact already read and
 * in the caller's SPI connection (connected as the owner); allocates in the
 * current memory context.  Between re_render_batch_begin() and
 * re_render_batch_end() (one transaction) a template's row is read once.
 */
extern void re_render_contact(const char *tenant, const char *template_name, int32 version,
							  const ReRenderContact *contact, Jsonb *context,
							  const char *form, ReRendered *out);
extern void re_render_batch_begin(void);
extern void re_render_batch_end(void);

#endif							/* RE_CAMPAIGNS_TEMPLATE_H */
