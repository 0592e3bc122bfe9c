/*-------------------------------------------------------------------------
 *
 * masking.c
 *	  What the application role sees of a URL or a JSON template that may
 *	  hold credentials (endpoints_public, channels_public).  URLs are parsed
 *	  with libcurl's URL API, as the worker's requests are; the rules keep
 *	  where a request goes and drop what could authenticate it:
 *
 *	  - scheme, host and port are shown;
 *	  - user and password ("user:pass@") become "***@";
 *	  - each query value becomes "***" ("?token=***&channel=***"), a query
 *		item without "=" becomes "***";
 *	  - a fragment becomes "#***";
 *	  - a path segment is shown only when it is a plain lower-case word (a-z,
 *		"-", "_", ".", at most 32 bytes), a version such as "v2" or "v17.0",
 *		or the "{message_id}" placeholder of a status URL; any other segment
 *		becomes "***", so tokens in paths (Slack's /services/T../B../XXXX,
 *		Discord's /webhooks/<id>/<token>, Telegram's /bot<token>/) are hidden;
 *	  - a URL libcurl cannot parse is shown as "***".
 *
 *	  In a JSON template every string value becomes "***"; keys, numbers,
 *	  booleans and nulls are kept.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "revenue_engine.h"

#define MASK "***"
#define MAX_WORD_LEN 32

/* A path segment shown as is: a plain lower-case word, a version, the placeholder. */
static bool
segment_shown(const char *seg, size_t len)
{
	size_t		i;

	if (len == 0)
		return true;
	if (len == strlen("{message_id}") && strncmp(seg, "{message_id}", len) == 0)
		return true;
	if (len > MAX_WORD_LEN)
		return false;
	if (seg[0] == 'v' && len > 1 && isdigit((unsigned char) seg[1]))
	{
		/* v2, v17.0 */
		for (i = 1; i < len; i++)
			if (!isdigit((unsigned char) seg[i]) &&
				!(seg[i] == '.' && i + 1 < len && isdigit((unsigned char) seg[i + 1])))
				return false;
		return true;
	}
	for (i = 0; i < len; i++)
		if (!((seg[i] >= 'a' && seg[i] <= 'z') || seg[i] == '-' || seg[i] == '_' ||
			  seg[i] == '.'))
			return false;
	return true;
}

static void
append_path(StringInfo out, const char *path)
{
	const char *p = path;

	for (;;)
	{
		const char *end = strchr(p, '/');
		size_t		len = end ? (size_t) (end - p) : strlen(p);

		if (segment_shown(p, len))
			appendBinaryStringInfo(out, p, len);
		else
			appendStringInfoString(out, MASK);
		if (end == NULL)
			break;
		appendStringInfoChar(out, '/');
		p = end + 1;
	}
}

static void
append_query(StringInfo out, const char *query)
{
	const char *p = query;

	appendStringInfoChar(out, '?');
	for (;;)
	{
		const char *end = strchr(p, '&');
		size_t		len = end ? (size_t) (end - p) : strlen(p);
		const char *eq = memchr(p, '=', len);

		if (eq != NULL)
		{
			appendBinaryStringInfo(out, p, eq - p + 1);
			appendStringInfoString(out, MASK);
		}
		else if (len > 0)
			appendStringInfoString(out, MASK);
		if (end == NULL)
			break;
		appendStringInfoChar(out, '&');
		p = end + 1;
	}
}

/* A part of the URL, or NULL when it has none; the copy is palloc'd. */
static char *
url_part(CURLU *u, CURLUPart what)
{
	char	   *v = NULL;
	char	   *copy;

	if (curl_url_get(u, what, &v, 0) != CURLUE_OK || v == NULL)
		return NULL;
	copy = pstrdup(v);
	curl_free(v);
	return copy;
}

static char *
mask_url(const char *url)
{
	CURLU	   *u = curl_url();
	StringInfoData out;
	char	   *scheme,
			   *user,
			   *password,
			   *host,
			   *port,
			   *path,
			   *query,
			   *fragment;

	if (u == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK)
	{
		curl_url_cleanup(u);
		return pstrdup(MASK);
	}
	scheme = url_part(u, CURLUPART_SCHEME);
	user = url_part(u, CURLUPART_USER);
	password = url_part(u, CURLUPART_PASSWORD);
	host = url_part(u, CURLUPART_HOST);
	port = url_part(u, CURLUPART_PORT);
	path = url_part(u, CURLUPART_PATH);
	query = url_part(u, CURLUPART_QUERY);
	fragment = url_part(u, CURLUPART_FRAGMENT);
	curl_url_cleanup(u);

	initStringInfo(&out);
	appendStringInfo(&out, "%s://", scheme ? scheme : MASK);
	if (user != NULL || password != NULL)
		appendStringInfoString(&out, MASK "@");
	appendStringInfoString(&out, host ? host : MASK);
	if (port != NULL)
		appendStringInfo(&out, ":%s", port);
	append_path(&out, path ? path : "/");
	if (query != NULL)
		append_query(&out, query);
	if (fragment != NULL)
		appendStringInfoString(&out, "#" MASK);
	return out.data;
}

/* SQL: revenue_engine.mask_url(url text); NULL stays NULL (no URL) */
PG_FUNCTION_INFO_V1(re_mask_url_sql);
Datum
re_mask_url_sql(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(mask_url(text_to_cstring(PG_GETARG_TEXT_PP(0)))));
}

/* SQL: revenue_engine.mask_json(doc jsonb); NULL stays NULL */
PG_FUNCTION_INFO_V1(re_mask_json);
Datum
re_mask_json(PG_FUNCTION_ARGS)
{
	Jsonb	   *doc;
	JsonbIterator *it;
	JsonbParseState *state = NULL;
	JsonbValue	v;
	JsonbValue *res = NULL;
	JsonbIteratorToken tok;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	doc = PG_GETARG_JSONB_P(0);
	it = JsonbIteratorInit(&doc->root);
	while ((tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		if ((tok == WJB_VALUE || tok == WJB_ELEM) && v.type == jbvString)
		{
			v.val.string.val = MASK;
			v.val.string.len = strlen(MASK);
		}
		res = pushJsonbValue(&state, tok,
							 tok < WJB_BEGIN_ARRAY ||
							 (tok == WJB_BEGIN_ARRAY && v.val.array.rawScalar) ? &v : NULL);
	}
	PG_RETURN_JSONB_P(JsonbValueToJsonb(res));
}
