/*-------------------------------------------------------------------------
 *
 * template.c
 *	  Campaign templates: the variable syntax, checked when a version is
 *	  created (template_variables), and rendering for a contact
 *	  (render_for_send), which the runner calls once per send.
 *
 * The grammar (README "Templates"):
 *
 *	 template := { text | variable }
 *	 variable := "{{" [ws] name [ws] [ "|" default ] "}}"
 *	 name	  := segment { "." segment }			at most 128 bytes
 *	 segment  := [A-Za-z_][A-Za-z0-9_]*
 *	 default  := any characters but "{", "}" and "|"; white space around it
 *				 is dropped; it may be empty
 *
 * In text, "{{" always opens a variable and "}}" never stands alone; single
 * braces are text.  Anything else is an error 22023 naming the fragment, at
 * create time, so that a stored template always renders without a trace of
 * its syntax.  A value is never read as template syntax, and a value that
 * contains "{{" or "}}" counts as missing: no "{{" ever reaches a recipient.
 *
 * Rendering, per send: two saved plans (the template version, the contact
 * with its user's profile), run in the owner scope; a version's parse is
 * kept per backend, keyed by tenant, template id and version and checked
 * against the columns it was parsed from, so a version is parsed once per
 * backend (versions are never updated by the extension; one changed by
 * hand is parsed anew).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "storage/proc.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

#include "revenue_engine.h"
#include "compat.h"
#include "campaigns/template.h"

PG_FUNCTION_INFO_V1(re_template_variables);
PG_FUNCTION_INFO_V1(re_render_for_send_sql);

#define RE_MAX_VAR_NAME 128
/* fallbacks followed at most, besides loop detection */
#define RE_MAX_FALLBACKS 8
/* parsed versions kept per backend (the cache is emptied when full) */
#define RE_TEMPLATE_CACHE_MAX 1024

/* ---------------------------------------------------------------------------
 * Parsing
 * ---------------------------------------------------------------------------
 */

typedef struct TplVar
{
	char	   *name;			/* as written, without white space */
	int			nparts;
	char	  **parts;			/* name split at "." */
	char	   *deflt;			/* NULL: no default, the variable is required */
} TplVar;

typedef struct TplPiece
{
	char	   *text;			/* literal text (NUL-terminated), or NULL */
	TplVar		var;			/* when text is NULL */
} TplPiece;

typedef struct Tpl
{
	int			n;
	TplPiece   *pieces;
} Tpl;

static bool
is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static void
bad_variable(const char *where, const char *start, const char *end, const char *why)
{
	int			len = end - start;
	char	   *frag;

	if (len > 60)
		frag = psprintf("%s...", pnstrdup(start, pg_mbcliplen(start, len, 60)));
	else
		frag = pnstrdup(start, len);
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid template variable \"%s\" in %s: %s", frag, where, why),
			 errhint("Write a variable as {{name}} or {{name|default}}; a name is letters, digits and \"_\", "
					 "its parts joined by \".\", such as first_name or attributes.plan.")));
}

static void
add_piece(Tpl *t, int *cap, TplPiece *piece)
{
	if (t->n == *cap)
	{
		*cap *= 2;
		t->pieces = repalloc(t->pieces, sizeof(TplPiece) * *cap);
	}
	t->pieces[t->n++] = *piece;
}

static char *
trimmed(const char *from, const char *to)
{
	while (from < to && is_ws(*from))
		from++;
	while (to > from && is_ws(to[-1]))
		to--;
	return pnstrdup(from, to - from);
}

/* The variable between start ("{{") and close ("}}"), bar the "|" or NULL. */
static void
parse_var(TplVar *v, const char *where, const char *start, const char *bar, const char *close)
{
	const char *end = close + 2;
	char	   *name = trimmed(start + 2, bar ? bar : close);
	const char *p;
	int			seglen = 0;
	int			i;

	if (*name == '\0')
		bad_variable(where, start, end, "the name is empty");
	if (strlen(name) > RE_MAX_VAR_NAME)
		bad_variable(where, start, end, "the name is longer than " CppAsString2(RE_MAX_VAR_NAME) " bytes");
	v->nparts = 1;
	for (p = name; *p; p++)
	{
		char		c = *p;

		if (c == '.')
		{
			if (seglen == 0)
				bad_variable(where, start, end, "a part of the name is empty");
			v->nparts++;
			seglen = 0;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
			  (c >= '0' && c <= '9')))
			bad_variable(where, start, end,
						 psprintf("the name has the character \"%s\"; use letters, digits, \"_\" and \".\"",
								  pnstrdup(p, pg_mblen(p))));
		if (seglen == 0 && c >= '0' && c <= '9')
			bad_variable(where, start, end, "a part of the name starts with a digit");
		seglen++;
	}
	if (seglen == 0)
		bad_variable(where, start, end, "a part of the name is empty");

	v->name = name;
	v->parts = palloc(sizeof(char *) * v->nparts);
	v->parts[0] = pstrdup(name);
	for (i = 1, p = v->parts[0]; *p; p++)
	{
		if (*p == '.')
		{
			*(char *) p = '\0';
			v->parts[i++] = (char *) p + 1;
		}
	}
	if (v->nparts == 1 &&
		(strcmp(name, "attributes") == 0 || strcmp(name, "context") == 0))
		bad_variable(where, start, end,
					 psprintf("%s is an object; name one of its keys, such as %s.plan", name, name));
	v->deflt = bar ? trimmed(bar + 1, close) : NULL;
}

/* Parse src (where names it in errors: "body", "cta_url" ...). */
static Tpl *
tpl_parse(const char *src, const char *where)
{
	Tpl		   *t = palloc0(sizeof(Tpl));
	int			cap = 8;
	const char *p = src;
	const char *lit = src;
	TplPiece	piece;

	t->pieces = palloc(sizeof(TplPiece) * cap);
	while (*p)
	{
		const char *q;
		const char *bar = NULL;

		if (p[0] == '}' && p[1] == '}')
			bad_variable(where, Max(src, p - 20), p + 2, "\"}}\" without \"{{\"");
		if (p[0] != '{' || p[1] != '{')
		{
			p++;
			continue;
		}
		if (p > lit)
		{
			piece.text = pnstrdup(lit, p - lit);
			add_piece(t, &cap, &piece);
		}
		for (q = p + 2;; q++)
		{
			if (*q == '\0')
				bad_variable(where, p, q, "\"{{\" is not closed by \"}}\"");
			if (*q == '}')
			{
				if (q[1] == '}')
					break;
				bad_variable(where, p, q + 1, "a single \"}\" inside a variable");
			}
			if (*q == '{')
				bad_variable(where, p, q + 1, "braces are nested");
			if (*q == '|')
			{
				if (bar)
					bad_variable(where, p, q + 1, "more than one \"|\"");
				bar = q;
			}
		}
		piece.text = NULL;
		parse_var(&piece.var, where, p, bar, q);
		add_piece(t, &cap, &piece);
		p = q + 2;
		lit = p;
	}
	if (p > lit)
	{
		piece.text = pnstrdup(lit, p - lit);
		add_piece(t, &cap, &piece);
	}
	return t;
}

/* ---------------------------------------------------------------------------
 * Checking a version (create_template)
 * ---------------------------------------------------------------------------
 */

typedef struct VarSet
{
	List	   *variables;		/* char *, in order of appearance */
	List	   *required;
} VarSet;

static bool
list_has_str(List *l, const char *s)
{
	ListCell   *lc;

	foreach(lc, l)
	{
		if (strcmp((char *) lfirst(lc), s) == 0)
			return true;
	}
	return false;
}

static void
collect(VarSet *set, Tpl *t)
{
	int			i;

	for (i = 0; i < t->n; i++)
	{
		TplVar	   *v = &t->pieces[i].var;

		if (t->pieces[i].text != NULL)
			continue;
		if (!list_has_str(set->variables, v->name))
			set->variables = lappend(set->variables, v->name);
		if (v->deflt == NULL && !list_has_str(set->required, v->name))
			set->required = lappend(set->required, v->name);
	}
}

static Datum
text_array(List *l)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(list_length(l), 1));
	ListCell   *lc;
	int			n = 0;

	foreach(lc, l)
		elems[n++] = CStringGetTextDatum((char *) lfirst(lc));
	return PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));
}

static bool
get_key(JsonbContainer *c, const char *key, JsonbValue *out)
{
	return getKeyJsonValueFromContainer(c, key, strlen(key), out) != NULL;
}

static char *
jbv_cstring(JsonbValue *v)
{
	return pnstrdup(v->val.string.val, v->val.string.len);
}

static void
bad_whatsapp(const char *why)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("whatsapp form is not valid: %s", why),
			 errhint("Pass {\"name\": \"<approved template>\", \"language\": \"en_US\", "
					 "\"params\": [\"{{first_name|there}}\", ...]}.")));
}

/* Check the WhatsApp form and collect its params' variables. */
static void
check_whatsapp(Jsonb *wa, VarSet *set)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	int			depth = 0;

	if (!JB_ROOT_IS_OBJECT(wa) || JB_ROOT_IS_SCALAR(wa))
		bad_whatsapp("it is not a JSON object");
	it = JsonbIteratorInit(&wa->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *key;

		if (tok == WJB_BEGIN_OBJECT)
		{
			depth++;
			continue;
		}
		if (tok != WJB_KEY || depth != 1)
			continue;
		key = jbv_cstring(&v);
		if (strcmp(key, "name") != 0 && strcmp(key, "language") != 0 && strcmp(key, "params") != 0)
			bad_whatsapp(psprintf("unknown key \"%s\" (keys: name, language, params)", key));
	}

	if (!get_key(&wa->root, "name", &v) || v.type != jbvString || v.val.string.len == 0)
		bad_whatsapp("\"name\" must be a non-empty string");
	if (v.val.string.len > 512 || strstr(jbv_cstring(&v), "{{") || strstr(jbv_cstring(&v), "}}"))
		bad_whatsapp(psprintf("\"name\" \"%s\" is not a template name", jbv_cstring(&v)));
	if (!get_key(&wa->root, "language", &v) || v.type != jbvString)
		bad_whatsapp("\"language\" must be a string such as \"en_US\"");
	{
		char	   *lang = jbv_cstring(&v);
		int			i,
					n = strlen(lang);
		bool		ok = n >= 2 && n <= 15;

		for (i = 0; ok && i < n; i++)
			ok = (lang[i] >= 'a' && lang[i] <= 'z') || (lang[i] >= 'A' && lang[i] <= 'Z') ||
				((lang[i] == '_' || lang[i] == '-') && i >= 2);
		if (!ok)
			bad_whatsapp(psprintf("\"language\" \"%s\" is not a language code such as \"en_US\"", lang));
	}
	if (get_key(&wa->root, "params", &v))
	{
		JsonbIterator *pit;
		JsonbValue	e;
		int			i = 0;

		if (v.type != jbvBinary || !JsonContainerIsArray(v.val.binary.data))
			bad_whatsapp("\"params\" must be an array of strings");
		pit = JsonbIteratorInit(v.val.binary.data);
		while ((tok = JsonbIteratorNext(&pit, &e, true)) != WJB_DONE)
		{
			if (tok != WJB_ELEM)
				continue;
			if (e.type != jbvString)
				bad_whatsapp(psprintf("params[%d] is not a string", i));
			collect(set, tpl_parse(jbv_cstring(&e), psprintf("whatsapp params[%d]", i)));
			i++;
		}
	}
}

static void
check_cta_url(const char *url, VarSet *set)
{
	const char *host;
	Tpl		   *t;
	int			i;

	if (pg_strncasecmp(url, "https://", 8) == 0)
		host = url + 8;
	else if (pg_strncasecmp(url, "http://", 7) == 0)
		host = url + 7;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cta_url \"%s\" does not start with https:// or http://", url),
				 errhint("Variables may follow the host, such as https://example.com/offer?ref={{external_ref}}.")));
	if (*host == '\0' || *host == '/' || *host == '{')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cta_url \"%s\" has no literal host", url),
				 errhint("Variables may follow the host, such as https://example.com/offer?ref={{external_ref}}.")));
	t = tpl_parse(url, "cta_url");
	/* white space only inside variables (values are URL-encoded) */
	for (i = 0; i < t->n; i++)
	{
		if (t->pieces[i].text && strpbrk(t->pieces[i].text, " \t\r\n") != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("cta_url \"%s\" contains white space", url),
					 errhint("Encode a space in a URL as %%20.")));
	}
	collect(set, t);
}

/*
 * SQL: revenue_engine.template_variables(body, cta_url, whatsapp, OUT
 * variables text[], OUT required text[]): 22023 for bad syntax; the
 * variables used, and those without a default.
 */
Datum
re_template_variables(PG_FUNCTION_ARGS)
{
	VarSet		set = {NIL, NIL};
	char	   *body;
	TupleDesc	tupdesc;
	Datum		result[2];
	bool		nulls[2] = {false, false};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "template_variables must return a record");
	re_require_arg(fcinfo, 0, "body");
	body = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (*body == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("template body must not be empty")));
	collect(&set, tpl_parse(body, "body"));
	if (!PG_ARGISNULL(1))
		check_cta_url(text_to_cstring(PG_GETARG_TEXT_PP(1)), &set);
	if (!PG_ARGISNULL(2))
		check_whatsapp(PG_GETARG_JSONB_P(2), &set);

	result[0] = text_array(set.variables);
	result[1] = text_array(set.required);
	tupdesc = BlessTupleDesc(tupdesc);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, result, nulls)));
}

/* ---------------------------------------------------------------------------
 * The parse cache: versions by (tenant, template id, version), with the
 * source they were parsed from
 * ---------------------------------------------------------------------------
 */

typedef struct VersionKey
{
	char		tenant[RE_MAX_NAME_LEN + 1];
	int64		template_id;
	int32		version;
} VersionKey;

typedef struct ParsedVersion
{
	VersionKey	key;
	MemoryContext cxt;			/* holds the parse and source */
	char	   *source;			/* the columns parsed (see version_source) */
	int			source_len;
	Tpl		   *body;
	Tpl		   *cta_url;		/* NULL: none */
	bool		has_whatsapp;
	char	   *wa_name;
	char	   *wa_language;
	int			wa_nparams;
	Tpl		  **wa_params;
	char	   *fallback;		/* NULL: none */
} ParsedVersion;

static HTAB *version_cache = NULL;
static MemoryContext version_cxt = NULL;

static void
cache_reset(void)
{
	HASHCTL		ctl;

	if (version_cxt == NULL)
		version_cxt = AllocSetContextCreate(CacheMemoryContext, "revenue_engine templates",
											ALLOCSET_DEFAULT_SIZES);
	else
		MemoryContextReset(version_cxt);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(VersionKey);
	ctl.entrysize = sizeof(ParsedVersion);
	ctl.hcxt = version_cxt;
	version_cache = hash_create("revenue_engine templates", 64, &ctl,
								HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

/*
 * The columns a version is parsed from (body, cta_url, whatsapp, fallback),
 * as bytes: a version changed by hand no longer matches its cached parse.
 * (Compared rather than the row's xmin: cheap for a message's few hundred
 * bytes, and exact whatever wrote the row.)
 */
static void
version_source(HeapTuple row, TupleDesc desc, StringInfo out)
{
	int			col;

	for (col = 4; col <= 7; col++)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(row, desc, col, &isnull);
		int32		len = -1;

		if (!isnull)
		{
			struct varlena *v = PG_DETOAST_DATUM_PACKED(d);

			len = VARSIZE_ANY_EXHDR(v);
			appendBinaryStringInfo(out, (char *) &len, sizeof(len));
			appendBinaryStringInfo(out, VARDATA_ANY(v), len);
		}
		else
			appendBinaryStringInfo(out, (char *) &len, sizeof(len));
	}
}

/*
 * The parse of a version row (columns as in template_plan), from the cache
 * or parsed into it.  A parse error (a row written by hand) leaves no entry
 * and no memory behind.
 */
static ParsedVersion *
parsed_version(const char *tenant, HeapTuple row, TupleDesc desc)
{
	VersionKey	key;
	ParsedVersion *pv;
	bool		found;
	bool		isnull;
	StringInfoData source;
	MemoryContext old;
	MemoryContext cxt;
	ParsedVersion tmp;

	if (version_cache == NULL || hash_get_num_entries(version_cache) >= RE_TEMPLATE_CACHE_MAX)
		cache_reset();
	memset(&key, 0, sizeof(key));
	strlcpy(key.tenant, tenant, sizeof(key.tenant));
	key.template_id = DatumGetInt64(SPI_getbinval(row, desc, 1, &isnull));
	key.version = DatumGetInt32(SPI_getbinval(row, desc, 3, &isnull));
	initStringInfo(&source);
	version_source(row, desc, &source);

	pv = hash_search(version_cache, &key, HASH_FIND, NULL);
	if (pv != NULL && pv->source_len == source.len &&
		memcmp(pv->source, source.data, source.len) == 0)
		return pv;

	/* parse into a context of its own; on error it is deleted */
	memset(&tmp, 0, sizeof(tmp));
	cxt = AllocSetContextCreate(version_cxt, "revenue_engine template version",
								ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		Datum		d;

		tmp.body = tpl_parse(TextDatumGetCString(SPI_getbinval(row, desc, 4, &isnull)), "body");
		d = SPI_getbinval(row, desc, 5, &isnull);
		if (!isnull)
			tmp.cta_url = tpl_parse(TextDatumGetCString(d), "cta_url");
		d = SPI_getbinval(row, desc, 6, &isnull);
		if (!isnull)
		{
			Jsonb	   *wa = DatumGetJsonbP(d);
			JsonbValue	v;

			tmp.has_whatsapp = true;
			tmp.wa_name = get_key(&wa->root, "name", &v) && v.type == jbvString ? jbv_cstring(&v) : "";
			tmp.wa_language = get_key(&wa->root, "language", &v) && v.type == jbvString ? jbv_cstring(&v) : "";
			if (get_key(&wa->root, "params", &v) && v.type == jbvBinary &&
				JsonContainerIsArray(v.val.binary.data))
			{
				JsonbIterator *it = JsonbIteratorInit(v.val.binary.data);
				JsonbValue	e;
				JsonbIteratorToken tok;
				int			n = JsonContainerSize(v.val.binary.data);

				tmp.wa_params = palloc(sizeof(Tpl *) * Max(n, 1));
				while ((tok = JsonbIteratorNext(&it, &e, true)) != WJB_DONE)
				{
					if (tok != WJB_ELEM)
						continue;
					tmp.wa_params[tmp.wa_nparams] =
						tpl_parse(e.type == jbvString ? jbv_cstring(&e) : "",
								  psprintf("whatsapp params[%d]", tmp.wa_nparams));
					tmp.wa_nparams++;
				}
			}
		}
		d = SPI_getbinval(row, desc, 7, &isnull);
		if (!isnull)
			tmp.fallback = TextDatumGetCString(d);
		tmp.source = palloc(Max(source.len, 1));
		memcpy(tmp.source, source.data, source.len);
		tmp.source_len = source.len;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(old);
		MemoryContextDelete(cxt);
		PG_RE_THROW();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);

	pv = hash_search(version_cache, &key, HASH_ENTER, &found);
	if (found)
		MemoryContextDelete(pv->cxt);	/* the parse of the version's old source */
	tmp.key = key;
	tmp.cxt = cxt;
	*pv = tmp;
	return pv;
}

/* ---------------------------------------------------------------------------
 * Rendering
 * ---------------------------------------------------------------------------
 */

/* The contact and context a send renders with. */
typedef struct RenderCtx
{
	char	   *name;
	char	   *phone;
	char	   *email;
	char	   *external_ref;
	char	   *timezone;
	Jsonb	   *attributes;
	Jsonb	   *context;
	TimestampTz since;			/* tenure_days counts from here */
	bool		tenure_done;
	char	   *tenure;
} RenderCtx;

/* A value usable in a message: not blank, no template syntax; else NULL. */
static char *
usable(char *s)
{
	const char *p;

	if (s == NULL)
		return NULL;
	for (p = s; *p && is_ws(*p); p++)
		;
	if (*p == '\0' || strstr(s, "{{") != NULL || strstr(s, "}}") != NULL)
		return NULL;
	return s;
}

/* The scalar at path parts[0..n-1] in object j, as text; NULL when missing. */
static char *
json_path(Jsonb *j, char **parts, int n)
{
	JsonbContainer *c;
	JsonbValue	v;
	int			i;

	if (j == NULL || n == 0 || !JB_ROOT_IS_OBJECT(j) || JB_ROOT_IS_SCALAR(j))
		return NULL;
	c = &j->root;
	for (i = 0; i < n; i++)
	{
		if (!JsonContainerIsObject(c) || !get_key(c, parts[i], &v))
			return NULL;
		if (i < n - 1)
		{
			if (v.type != jbvBinary)
				return NULL;
			c = v.val.binary.data;
		}
	}
	switch (v.type)
	{
		case jbvString:
			return usable(jbv_cstring(&v));
		case jbvNumeric:
			return DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v.val.numeric)));
		case jbvBool:
			return pstrdup(v.val.boolean ? "true" : "false");
		default:
			return NULL;		/* null, objects and arrays are not values */
	}
}

static char *
first_word(const char *name)
{
	const char *end = name;

	if (name == NULL)
		return NULL;
	while (*end && !is_ws(*end))
		end++;
	return pnstrdup(name, end - name);
}

/* Local calendar days from ctx->since to now in the contact's zone (UTC without one). */
static char *
tenure_days(RenderCtx *ctx)
{
	pg_tz	   *tz;
	struct pg_tm tm;
	fsec_t		fsec;
	int			tzoff;
	int			from,
				to;

	if (ctx->tenure_done)
		return ctx->tenure;
	tz = re_lookup_timezone(ctx->timezone ? ctx->timezone : "UTC");
	if (timestamp2tm(ctx->since, &tzoff, &tm, &fsec, NULL, tz) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp out of range")));
	from = date2j(tm.tm_year, tm.tm_mon, tm.tm_mday);
	if (timestamp2tm(re_clock_now(), &tzoff, &tm, &fsec, NULL, tz) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp out of range")));
	to = date2j(tm.tm_year, tm.tm_mon, tm.tm_mday);
	ctx->tenure = psprintf("%d", Max(to - from, 0));
	ctx->tenure_done = true;
	return ctx->tenure;
}

/* Where milestone_value is looked for in the context, in this order. */
static char *const milestone_paths[][2] = {
	{"milestone_value", NULL},
	{"event_data", "milestone_value"},
	{"milestone", NULL},
	{"event_data", "milestone"},
	{"streak_milestone", NULL},
	{"event_data", "streak_milestone"},
};

/* A variable's value for this contact and context, or NULL when missing. */
static char *
value_of(RenderCtx *ctx, const TplVar *v)
{
	char	   *r;

	if (v->nparts == 1)
	{
		const char *n = v->parts[0];
		int			i;

		if (strcmp(n, "first_name") == 0)
			return usable(first_word(ctx->name));
		if (strcmp(n, "name") == 0)
			return usable(ctx->name);
		if (strcmp(n, "phone") == 0)
			return usable(ctx->phone);
		if (strcmp(n, "email") == 0)
			return usable(ctx->email);
		if (strcmp(n, "external_ref") == 0)
			return usable(ctx->external_ref);
		if (strcmp(n, "timezone") == 0)
			return usable(ctx->timezone);
		if (strcmp(n, "tenure_days") == 0)
			return tenure_days(ctx);
		if (strcmp(n, "milestone_value") == 0)
		{
			for (i = 0; i < lengthof(milestone_paths); i++)
			{
				r = json_path(ctx->context, (char **) milestone_paths[i],
							  milestone_paths[i][1] ? 2 : 1);
				if (r != NULL)
					return r;
			}
			return NULL;
		}
	}
	if (v->nparts > 1 && strcmp(v->parts[0], "attributes") == 0)
		return json_path(ctx->attributes, v->parts + 1, v->nparts - 1);
	if (v->nparts > 1 && strcmp(v->parts[0], "context") == 0)
		return json_path(ctx->context, v->parts + 1, v->nparts - 1);
	r = json_path(ctx->context, v->parts, v->nparts);
	return r ? r : json_path(ctx->attributes, v->parts, v->nparts);
}

static void
append_url_encoded(StringInfo out, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	const unsigned char *p;

	for (p = (const unsigned char *) s; *p; p++)
	{
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			(*p >= '0' && *p <= '9') || *p == '-' || *p == '.' || *p == '_' || *p == '~')
			appendStringInfoChar(out, (char) *p);
		else
		{
			appendStringInfoChar(out, '%');
			appendStringInfoChar(out, hex[*p >> 4]);
			appendStringInfoChar(out, hex[*p & 15]);
		}
	}
}

/* Render t; required variables without a value are added to *missing. */
static char *
render(RenderCtx *ctx, const Tpl *t, bool url, List **missing)
{
	StringInfoData out;
	int			i;

	initStringInfo(&out);
	for (i = 0; i < t->n; i++)
	{
		const TplPiece *piece = &t->pieces[i];
		char	   *value;

		if (piece->text != NULL)
		{
			appendStringInfoString(&out, piece->text);
			continue;
		}
		value = value_of(ctx, &piece->var);
		if (value == NULL)
			value = piece->var.deflt;
		if (value == NULL)
		{
			if (!list_has_str(*missing, piece->var.name))
				*missing = lappend(*missing, pstrdup(piece->var.name));
			continue;
		}
		if (url)
			append_url_encoded(&out, value);
		else
			appendStringInfoString(&out, value);
	}
	return out.data;
}

/* One version rendered in a form. */
typedef struct Rendered
{
	char	   *text;			/* form text */
	char	   *cta_url;
	Jsonb	   *whatsapp;		/* form whatsapp_template */
	List	   *missing;
	char	   *problem;		/* why it cannot be sent, or NULL */
} Rendered;

static void
render_version(RenderCtx *ctx, ParsedVersion *pv, const char *name, bool whatsapp, Rendered *r)
{
	memset(r, 0, sizeof(*r));
	if (whatsapp)
	{
		JsonbParseState *st;
		JsonbValue	v;
		int			i;

		if (!pv->has_whatsapp)
		{
			r->problem = psprintf("template \"%s\" version %d has no WhatsApp form",
								  name, pv->key.version);
			return;
		}
		re_jb_begin(&st);
		re_jb_str(&st, "name", pv->wa_name);
		re_jb_str(&st, "language", pv->wa_language);
		re_jb_key(&st, "params");
		pushJsonbValue(&st, WJB_BEGIN_ARRAY, NULL);
		for (i = 0; i < pv->wa_nparams; i++)
		{
			char	   *s = render(ctx, pv->wa_params[i], false, &r->missing);

			v.type = jbvString;
			v.val.string.val = s;
			v.val.string.len = strlen(s);
			pushJsonbValue(&st, WJB_ELEM, &v);
		}
		pushJsonbValue(&st, WJB_END_ARRAY, NULL);
		r->whatsapp = re_jb_end(&st);
	}
	else
		r->text = render(ctx, pv->body, false, &r->missing);
	if (pv->cta_url)
		r->cta_url = render(ctx, pv->cta_url, true, &r->missing);

	if (r->missing != NIL)
	{
		StringInfoData s;
		ListCell   *lc;

		initStringInfo(&s);
		appendStringInfoString(&s, list_length(r->missing) == 1 ? "missing variable " : "missing variables ");
		foreach(lc, r->missing)
		{
			if (lc != list_head(r->missing))
				appendStringInfoString(&s, ", ");
			appendStringInfoString(&s, (char *) lfirst(lc));
		}
		r->problem = s.data;
	}
}

static SPIPlanPtr template_plan = NULL;
static SPIPlanPtr contact_plan = NULL;

static void
prepare_plans(void)
{
	Oid			ttypes[3] = {TEXTOID, TEXTOID, INT4OID};
	Oid			ctypes[2] = {TEXTOID, INT8OID};

	if (template_plan == NULL)
		template_plan = re_prepare_saved(
			"SELECT t.id, t.name, v.version, v.body, v.cta_url, v.whatsapp, v.fallback"
			"  FROM revenue_engine.templates t"
			"  JOIN revenue_engine.template_versions v"
			"    ON v.tenant_id = t.tenant_id AND v.template_id = t.id"
			" WHERE t.tenant_id = $1 AND v.tenant_id = $1 AND t.name = $2"
			"   AND v.version = coalesce($3, t.latest_version)", 3, ttypes);
	if (contact_plan == NULL)
		contact_plan = re_prepare_saved(
			"SELECT c.name, c.phone, c.email, c.external_ref, c.timezone, c.attributes,"
			"       coalesce(p.created_at, c.created_at)"
			"  FROM revenue_engine.contacts c"
			"  LEFT JOIN revenue_engine.user_profiles p"
			"    ON p.tenant_id = c.tenant_id AND p.user_id = c.user_id"
			" WHERE c.tenant_id = $1 AND c.id = $2", 2, ctypes);
}

/* The version's row (template_plan's columns) or NULL. */
static HeapTuple
fetch_version(const char *tenant, const char *name, int32 version, TupleDesc *desc)
{
	Datum		values[3];
	char		nulls[3] = {' ', ' ', version > 0 ? ' ' : 'n'};
	int			ret;

	values[0] = CStringGetTextDatum(tenant);
	values[1] = CStringGetTextDatum(name);
	values[2] = Int32GetDatum(version);
	ret = SPI_execute_plan(template_plan, values, nulls, true, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "template look-up failed: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		return NULL;
	*desc = SPI_tuptable->tupdesc;
	return SPI_tuptable->vals[0];
}

static char *
text_col(HeapTuple row, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(row, desc, col, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

static void
load_contact(RenderCtx *ctx, const char *tenant, int64 contact_id)
{
	Datum		values[2];
	HeapTuple	row;
	TupleDesc	desc;
	bool		isnull;
	int			ret;

	values[0] = CStringGetTextDatum(tenant);
	values[1] = Int64GetDatum(contact_id);
	ret = SPI_execute_plan(contact_plan, values, NULL, true, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "contact look-up failed: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("contact " INT64_FORMAT " does not exist", contact_id)));
	row = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	ctx->name = text_col(row, desc, 1);
	ctx->phone = text_col(row, desc, 2);
	ctx->email = text_col(row, desc, 3);
	ctx->external_ref = text_col(row, desc, 4);
	ctx->timezone = text_col(row, desc, 5);
	ctx->attributes = DatumGetJsonbP(SPI_getbinval(row, desc, 6, &isnull));
	ctx->since = DatumGetTimestampTz(SPI_getbinval(row, desc, 7, &isnull));
}

static void
push_ref(JsonbParseState **st, const char *name, int32 version, int64 id)
{
	re_jb_str(st, "template", name);
	re_jb_int(st, "version", version);
	re_jb_int(st, "template_id", id);
}

static void
push_str_or_null(JsonbParseState **st, const char *key, const char *value)
{
	if (value)
		re_jb_str(st, key, value);
	else
		re_jb_null(st, key);
}

/*
 * The runner's per-batch look-ups: (tenant, name, requested version) -> the
 * version found (or none), so that a batch of sends of one template reads
 * its row once.  Valid only between re_render_batch_begin() and
 * re_render_batch_end() in one transaction (the local transaction id is
 * checked), and used only by re_render_contact(): render_template() and
 * render_for_send() always read the row.
 */
typedef struct BatchLookup
{
	char		tenant[RE_MAX_NAME_LEN + 1];
	char	   *name;
	int32		version;		/* requested; 0: the latest */
	bool		exists;
	VersionKey	key;			/* the version found */
} BatchLookup;

#define RE_BATCH_LOOKUPS 32

static MemoryContext batch_cxt = NULL;
static BatchLookup batch_lookups[RE_BATCH_LOOKUPS];
static int	batch_nlookups = 0;
static bool batch_active = false;
static LocalTransactionId batch_lxid = InvalidLocalTransactionId;

void
re_render_batch_begin(void)
{
	if (batch_cxt == NULL)
		batch_cxt = AllocSetContextCreate(TopMemoryContext, "revenue_engine template look-ups",
										  ALLOCSET_SMALL_SIZES);
	else
		MemoryContextReset(batch_cxt);
	batch_nlookups = 0;
	batch_active = true;
	batch_lxid = RE_MY_LXID;
}

void
re_render_batch_end(void)
{
	batch_active = false;
	batch_nlookups = 0;
	if (batch_cxt != NULL)
		MemoryContextReset(batch_cxt);
}

/*
 * The parsed version of template name (version; 0: the latest), or NULL when
 * it does not exist.  use_batch: through the batch's look-ups.
 */
static ParsedVersion *
lookup_version(const char *tenant, const char *name, int32 version, bool use_batch)
{
	HeapTuple	row;
	TupleDesc	desc;
	ParsedVersion *pv;
	BatchLookup *l = NULL;
	int			i;

	use_batch = use_batch && batch_active && batch_lxid == RE_MY_LXID;
	if (use_batch)
	{
		for (i = 0; i < batch_nlookups; i++)
		{
			l = &batch_lookups[i];
			if (l->version == version && strcmp(l->name, name) == 0 &&
				strcmp(l->tenant, tenant) == 0)
			{
				if (!l->exists)
					return NULL;
				pv = version_cache ? hash_search(version_cache, &l->key, HASH_FIND, NULL) : NULL;
				if (pv != NULL)
					return pv;
				break;			/* the parse cache was emptied: read it again */
			}
		}
		if (i == batch_nlookups)
			l = NULL;
	}
	row = fetch_version(tenant, name, version, &desc);
	pv = row ? parsed_version(tenant, row, desc) : NULL;
	if (use_batch && l == NULL && batch_nlookups < RE_BATCH_LOOKUPS)
	{
		l = &batch_lookups[batch_nlookups++];
		strlcpy(l->tenant, tenant, sizeof(l->tenant));
		l->name = MemoryContextStrdup(batch_cxt, name);
		l->version = version;
	}
	if (use_batch && l != NULL)
	{
		l->exists = (pv != NULL);
		if (pv)
			l->key = pv->key;
	}
	return pv;
}

/* What a render came to: the template or a fallback, or skipped. */
typedef struct Outcome
{
	bool		sent;
	const char *name;			/* the version rendered (sent) */
	int32		version;
	int64		template_id;
	int32		req_version;	/* the version asked for */
	int64		req_id;
	Rendered	r;				/* the one rendered */
	Rendered	first;			/* the template's own */
	char	   *reason;			/* NULL unless the template's own failed */
} Outcome;

static void
render_outcome(const char *tenant, const char *template_name, int32 version,
			   RenderCtx *ctx, bool whatsapp, bool use_batch, Outcome *o)
{
	ParsedVersion *pv;
	char	   *name;
	Rendered	r,
				first;
	List	   *visited;
	StringInfoData reason;
	int			hops;
	ListCell   *lc;

	pv = lookup_version(tenant, template_name, version, use_batch);
	if (pv == NULL)
	{
		if (version > 0 && lookup_version(tenant, template_name, 0, use_batch) != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("template \"%s\" has no version %d", template_name, version)));
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("template \"%s\" does not exist", template_name),
				 errhint("Create it with revenue_engine.create_template().")));
	}
	name = pstrdup(template_name);
	o->req_id = pv->key.template_id;
	o->req_version = pv->key.version;

	/* the template, else its fallbacks in turn */
	render_version(ctx, pv, name, whatsapp, &first);
	r = first;
	visited = list_make1(name);
	initStringInfo(&reason);
	if (first.problem)
		appendStringInfoString(&reason, first.problem);
	for (hops = 0; r.problem != NULL; hops++)
	{
		/* copied: the next parsed_version may empty the cache */
		char	   *fb = pv->fallback ? pstrdup(pv->fallback) : NULL;

		if (fb == NULL)
			break;
		if (list_has_str(visited, fb) || hops >= RE_MAX_FALLBACKS)
		{
			appendStringInfoString(&reason, "; fallback loop: ");
			foreach(lc, visited)
				appendStringInfo(&reason, "%s -> ", (char *) lfirst(lc));
			appendStringInfoString(&reason, fb);
			break;
		}
		visited = lappend(visited, fb);
		pv = lookup_version(tenant, fb, 0, use_batch);
		if (pv == NULL)
		{
			appendStringInfo(&reason, "; fallback template \"%s\" does not exist", fb);
			break;
		}
		name = fb;
		render_version(ctx, pv, name, whatsapp, &r);
		if (r.problem)
			appendStringInfo(&reason, "; fallback \"%s\": %s", fb, r.problem);
	}
	o->sent = (r.problem == NULL);
	o->name = o->sent ? name : template_name;
	o->version = o->sent ? pv->key.version : o->req_version;
	o->template_id = o->sent ? pv->key.template_id : o->req_id;
	o->r = r;
	o->first = first;
	o->reason = first.problem ? reason.data : NULL;
}

static bool
parse_form(const char *form)
{
	if (strcmp(form, "text") == 0)
		return false;
	if (strcmp(form, "whatsapp_template") == 0)
		return true;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("form \"%s\" is not known", form),
			 errhint("Use text or whatsapp_template.")));
	return false;
}

static void
check_context(Jsonb *context)
{
	if (!JB_ROOT_IS_OBJECT(context) || JB_ROOT_IS_SCALAR(context))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("context must be a JSON object")));
}

Jsonb *
re_render_for_send(const char *tenant, const char *template_name, int32 version,
				   int64 contact_id, Jsonb *context, const char *form)
{
	ReOwnerScope scope = {0};
	RenderCtx	ctx;
	bool		whatsapp;
	Outcome		o;
	JsonbParseState *st;
	Jsonb	   *res;
	Jsonb	   *out;
	ListCell   *lc;

	whatsapp = parse_form(form);
	check_context(context);

	re_connect_as_owner(&scope);
	prepare_plans();

	memset(&ctx, 0, sizeof(ctx));
	load_contact(&ctx, tenant, contact_id);
	ctx.context = context;

	render_outcome(tenant, template_name, version, &ctx, whatsapp, false, &o);

	re_jb_begin(&st);
	push_ref(&st, o.name, o.version, o.template_id);
	re_jb_str(&st, "form", form);
	push_str_or_null(&st, "text", o.sent ? o.r.text : NULL);
	push_str_or_null(&st, "cta_url", o.sent ? o.r.cta_url : NULL);
	re_jb_jsonb(&st, "whatsapp", o.sent ? o.r.whatsapp : NULL);
	re_jb_bool(&st, "fallback_used", o.sent && o.first.problem != NULL);
	re_jb_bool(&st, "skipped", !o.sent);
	push_str_or_null(&st, "reason", o.reason);
	re_jb_key(&st, "missing");
	pushJsonbValue(&st, WJB_BEGIN_ARRAY, NULL);
	foreach(lc, o.first.missing)
	{
		JsonbValue	v;

		v.type = jbvString;
		v.val.string.val = (char *) lfirst(lc);
		v.val.string.len = strlen(v.val.string.val);
		pushJsonbValue(&st, WJB_ELEM, &v);
	}
	pushJsonbValue(&st, WJB_END_ARRAY, NULL);
	re_jb_key(&st, "requested");
	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	push_ref(&st, template_name, o.req_version, o.req_id);
	pushJsonbValue(&st, WJB_END_OBJECT, NULL);
	res = re_jb_end(&st);

	/* out of SPI's memory, which SPI_finish frees */
	out = SPI_palloc(VARSIZE(res));
	memcpy(out, res, VARSIZE(res));
	re_disconnect_as_owner(&scope);
	return out;
}

void
re_render_contact(const char *tenant, const char *template_name, int32 version,
				  const ReRenderContact *contact, Jsonb *context, const char *form,
				  ReRendered *out)
{
	RenderCtx	ctx;
	Outcome		o;
	bool		whatsapp = parse_form(form);

	check_context(context);
	prepare_plans();
	memset(&ctx, 0, sizeof(ctx));
	ctx.name = contact->name;
	ctx.phone = contact->phone;
	ctx.email = contact->email;
	ctx.external_ref = contact->external_ref;
	ctx.timezone = contact->timezone;
	ctx.attributes = contact->attributes;
	ctx.since = contact->since;
	ctx.context = context;

	render_outcome(tenant, template_name, version, &ctx, whatsapp, true, &o);

	memset(out, 0, sizeof(*out));
	out->skipped = !o.sent;
	out->reason = o.reason;
	out->template_name = pstrdup(o.name);
	out->version = o.version;
	out->template_id = o.template_id;
	out->text = o.sent ? o.r.text : NULL;
	out->cta_url = o.sent ? o.r.cta_url : NULL;
	out->whatsapp = o.sent ? o.r.whatsapp : NULL;
	out->fallback_used = o.sent && o.first.problem != NULL;
}

/*
 * SQL: revenue_engine.render_for_send(tenant, template, template_version,
 * contact_id, context, form) → jsonb.  Internal: the runner's per-send call
 * (and render_template's).  template_version NULL: the latest.
 */
Datum
re_render_for_send_sql(PG_FUNCTION_ARGS)
{
	re_require_arg(fcinfo, 0, "tenant");
	re_require_arg(fcinfo, 1, "template");
	re_require_arg(fcinfo, 3, "contact_id");
	re_require_arg(fcinfo, 4, "context");
	re_require_arg(fcinfo, 5, "form");
	if (!PG_ARGISNULL(2) && PG_GETARG_INT32(2) <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("template version must be positive: %d", PG_GETARG_INT32(2))));
	PG_RETURN_JSONB_P(re_render_for_send(text_to_cstring(PG_GETARG_TEXT_PP(0)),
										 text_to_cstring(PG_GETARG_TEXT_PP(1)),
										 PG_ARGISNULL(2) ? 0 : PG_GETARG_INT32(2),
										 PG_GETARG_INT64(3),
										 PG_GETARG_JSONB_P(4),
										 text_to_cstring(PG_GETARG_TEXT_PP(5))));
}
