/*
 * fuzz_query.c - libFuzzer harness for query parameters: what bulkreg does
 * with them in api/jsonapi.c.
 *
 * The input is a raw query string (what follows "?"). libmicrohttpd splits
 * it before bulkreg sees it; this harness splits it the way libmicrohttpd
 * 0.9.7x does (MHD_parse_arguments_: pairs on '&', key and value on the
 * first '=', no '=' means no value, '+' is a space) and decodes with the
 * library's own MHD_http_unescape. Then it does what the list routes do:
 * ja_check_param for every key against the routes' allowed lists, and
 * ja_parse_page on page[number] and page[size] looked up as
 * MHD_lookup_connection_value does (first match, same length, ASCII case
 * ignored); uuid_valid on filter[session_id]; for a valid page,
 * ja_page_check and ja_append_meta at several record counts.
 *
 * Queries over 2048 bytes are skipped and pairs past the 64th ignored: more
 * of them only repeat the same code, slower.
 *
 * Checks: every error document is a well-formed JSON:API document; a valid
 * page is in range; the pagination meta is JSON with consistent numbers.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <microhttpd.h>

#include "fz_support.h"
#include "jsonapi.h"
#include "uuid.h"

#define FUZZ_MAX_QUERY  2048
#define FUZZ_MAX_PARAMS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct param {
	const char *key; /* decoded, NUL-terminated (may hold an earlier NUL) */
	size_t key_len;
	const char *value; /* NULL for a key without '=' */
};

/* Decodes one key or value in place as libmicrohttpd does; returns its length. */
static size_t unescape(char *s)
{
	for (char *p = s; *p; p++) {
		if (*p == '+')
			*p = ' ';
	}
	return MHD_http_unescape(s);
}

/*
 * MHD_parse_arguments_ of libmicrohttpd 0.9.7x; args is clobbered. The same
 * split, except that '=' is looked for before the next '&' only (libmicrohttpd
 * searches the rest of the string, then ignores a match past the '&').
 */
static size_t split_query(char *args, struct param *out, size_t max)
{
	size_t n = 0;
	while (args && *args && n < max) {
		char *amper = strchr(args, '&');
		size_t len = amper ? (size_t)(amper - args) : strlen(args);
		char *equals = memchr(args, '=', len);
		char *next = NULL;
		if (amper) {
			*amper = '\0';
			next = amper + 1;
		}
		const char *value = NULL; /* "foo" and "foo&...": foo has no value */
		if (equals) {
			*equals = '\0';
			value = equals + 1;
			unescape(equals + 1);
		}
		out[n].key_len = unescape(args);
		out[n].key = args;
		out[n].value = value;
		n++;
		args = next;
	}
	return n;
}

/* MHD_lookup_connection_value: the first key of the same length, case ignored. */
static const char *lookup(const struct param *p, size_t n, const char *key)
{
	size_t len = strlen(key);
	for (size_t i = 0; i < n; i++) {
		if (p[i].key_len == len && strncasecmp(p[i].key, key, len) == 0)
			return p[i].value;
	}
	return NULL;
}

/*
 * ja_check_params of one route: every key goes through ja_check_param. The
 * error document is parsed back when check_doc (once per input is enough:
 * that parse is most of the harness's time).
 */
static bool check_params(const struct param *p, size_t n, const char *const *allowed,
                         bool check_doc)
{
	struct ja_errors e;
	ja_errors_init(&e);
	for (size_t i = 0; i < n; i++) {
		bool known = ja_check_param(allowed, p[i].key, &e);
		bool listed = false;
		for (const char *const *a = allowed; *a; a++)
			listed = listed || strcmp(*a, p[i].key) == 0;
		FZ_CHECK(known == listed);
	}
	if (e.count == 0 || !check_doc) {
		bool ok = e.count == 0;
		ja_errors_free(&e);
		return ok;
	}
	struct http_resp resp;
	fz_resp_init(&resp);
	ja_errors_send(&e, &resp);
	fz_check_error_doc(&resp, 400);
	fz_resp_free(&resp);
	return false;
}

static json_int_t get_int(const json_t *meta, const char *key)
{
	const json_t *v = json_object_get(meta, key);
	FZ_CHECK(json_is_integer(v));
	return json_integer_value(v);
}

static void check_meta(const struct ja_page *page, long count)
{
	struct http_resp resp;
	fz_resp_init(&resp);
	struct api_req r = {.resp = &resp};
	long pages = (count + page->size - 1) / page->size;
	bool in_range = ja_page_check(&r, page, count);
	FZ_CHECK(in_range == (page->number == 0 || page->number < pages));
	if (!in_range)
		fz_check_error_doc(&resp, 400);
	fz_resp_free(&resp);

	strbuf sb;
	sb_init(&sb, 4096);
	FZ_CHECK(sb_appends(&sb, "{") == BR_OK);
	FZ_CHECK(ja_append_meta(&sb, page, count) == BR_OK);
	FZ_CHECK(sb_appends(&sb, "}") == BR_OK);
	json_t *doc = json_loadb(sb_str(&sb), sb.len, 0, NULL);
	FZ_CHECK(doc != NULL);
	const json_t *meta = json_object_get(doc, "meta");
	FZ_CHECK(get_int(meta, "current_page") == page->number);
	FZ_CHECK(get_int(meta, "record_count") == count);
	FZ_CHECK(get_int(meta, "page_count") == pages);
	FZ_CHECK(get_int(meta, "items_per_page") == page->size);
	const json_t *prev = json_object_get(meta, "previous_page");
	const json_t *next = json_object_get(meta, "next_page");
	FZ_CHECK(page->number == 0 ? json_is_null(prev) : json_is_integer(prev));
	FZ_CHECK(page->number + 1 < pages ? json_is_integer(next) : json_is_null(next));
	json_decref(doc);
	sb_free(&sb);
}

static void check_page(const struct param *p, size_t n, uint32_t salt)
{
	const char *number = lookup(p, n, "page[number]");
	const char *size = lookup(p, n, "page[size]");
	struct ja_errors e;
	ja_errors_init(&e);
	struct ja_page page = {-1, -1};
	if (!ja_parse_page(number, size, &page, &e)) {
		FZ_CHECK(page.number == -1 && page.size == -1); /* written only on success */
		struct http_resp resp;
		fz_resp_init(&resp);
		ja_errors_send(&e, &resp);
		fz_check_error_doc(&resp, 400);
		fz_resp_free(&resp);
		return;
	}
	ja_errors_free(&e);
	FZ_CHECK(page.number >= 0 && page.number <= 100000000L);
	FZ_CHECK(page.size >= 1 && page.size <= 100);
	FZ_CHECK(number || page.number == 0);
	FZ_CHECK(size || page.size == 20);
	/* The routes' OFFSET: page.number * page.size must not overflow. */
	long offset = page.number * page.size;
	long counts[] = {0, 1, offset, offset + 1, offset + page.size, (long)(salt % 1000000000u)};
	for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++)
		check_meta(&page, counts[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* The strictest and the most permissive of the routes' lists. */
	static const char *const none[] = {NULL};
	static const char *const jobs[] = {"page[number]", "page[size]", "filter[status]",
	                                   "filter[session_id]", NULL};
	if (size > FUZZ_MAX_QUERY)
		return 0;
	char *q = fz_cstr(data, size);
	struct param *p = calloc(FUZZ_MAX_PARAMS, sizeof(*p));
	FZ_CHECK(p != NULL);
	size_t n = split_query(q, p, FUZZ_MAX_PARAMS);

	check_params(p, n, none, false);
	if (check_params(p, n, jobs, true)) {
		const char *session = lookup(p, n, "filter[session_id]");
		if (session && uuid_valid(session, strlen(session), UUID_ANY_CASE))
			FZ_CHECK(strlen(session) == UUID_LEN);
	}
	uint32_t salt = 2166136261u; /* FNV-1a of the input: an arbitrary record count */
	for (size_t i = 0; i < size; i++)
		salt = (salt ^ data[i]) * 16777619u;
	check_page(p, n, salt);

	free(p);
	free(q);
	return 0;
}
