/*
 * jsonapi.c - JSON:API error documents, bodies and pagination (see
 * jsonapi.h). Per-request only; thread-safe.
 */
#include "jsonapi.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dialect.h"
#include "log.h"
#include "validate.h"

#define JA_ERRORS_MAX_BYTES  (1u << 20)
#define JA_PAGE_SIZE_DEFAULT 20
#define JA_PAGE_SIZE_MAX     100
#define JA_MAX_DEPTH         32

void ja_errors_init(struct ja_errors *e)
{
	sb_init(&e->sb, JA_ERRORS_MAX_BYTES);
	e->count = 0;
	e->omitted = 0;
	e->status = 0;
	e->code[0] = e->detail[0] = '\0';
}

void ja_errors_free(struct ja_errors *e)
{
	sb_free(&e->sb);
	e->count = 0;
}

size_t ja_utf8_decode(const char *s, size_t n, uint32_t *cp)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t len;
	uint32_t v, min;
	if (n == 0)
		return 0;
	if (u[0] < 0x80) {
		*cp = u[0];
		return 1;
	}
	if (u[0] >= 0xc2 && u[0] <= 0xdf) {
		len = 2;
		v = u[0] & 0x1fu;
		min = 0x80;
	} else if (u[0] >= 0xe0 && u[0] <= 0xef) {
		len = 3;
		v = u[0] & 0x0fu;
		min = 0x800;
	} else if (u[0] >= 0xf0 && u[0] <= 0xf4) {
		len = 4;
		v = u[0] & 0x07u;
		min = 0x10000;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((u[i] & 0xc0) != 0x80)
			return 0;
		v = v << 6 | (u[i] & 0x3fu);
	}
	if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
		return 0;
	*cp = v;
	return len;
}

/*
 * Appends s as the body of a JSON string. Bytes that are not well-formed
 * UTF-8 (a client's query key, a truncated echo of its body) become U+FFFD,
 * so an error document is always valid JSON.
 */
br_status ja_append_text(strbuf *sb, const char *s)
{
	size_t len = strlen(s), run = 0;
	for (size_t i = 0; i < len;) {
		uint32_t cp;
		size_t n = ja_utf8_decode(s + i, len - i, &cp);
		if (n) {
			i += n;
			continue;
		}
		br_status st = sb_append_json_escaped(sb, s + run, i - run);
		if (st == BR_OK)
			st = sb_appends(sb, "\xef\xbf\xbd");
		if (st != BR_OK)
			return st;
		run = ++i;
	}
	return sb_append_json_escaped(sb, s + run, len - run);
}

static br_status append_str_field(strbuf *sb, const char *key, const char *val)
{
	br_status st = sb_appendf(sb, ",\"%s\":\"", key);
	if (st == BR_OK)
		st = ja_append_text(sb, val);
	if (st == BR_OK)
		st = sb_appends(sb, "\"");
	return st;
}

/* One error object into sb; detail and pointer may be NULL. */
static br_status build_error(strbuf *sb, unsigned status, const char *code, const char *title,
                             const char *detail, const char *pointer)
{
	br_status st = sb_appendf(sb, "{\"status\":\"%u\",\"code\":\"%s\"", status, code);
	if (st == BR_OK)
		st = append_str_field(sb, "title", title);
	if (st == BR_OK && detail)
		st = append_str_field(sb, "detail", detail);
	if (st == BR_OK && pointer) {
		st = sb_appends(sb, ",\"source\":{\"pointer\":\"");
		if (st == BR_OK)
			st = ja_append_text(sb, pointer);
		if (st == BR_OK)
			st = sb_appends(sb, "\"}");
	}
	if (st == BR_OK)
		st = sb_appends(sb, "}");
	return st;
}

void ja_error_add(struct ja_errors *e, unsigned status, const char *code, const char *title,
                  const char *detail, const char *pointer)
{
	if (e->count >= JA_MAX_ERRORS) {
		e->omitted++;
		return;
	}
	/*
	 * Built apart first: a problem that does not fit what is left of the
	 * document is dropped and the ones before it stay. The first problem is
	 * kept in any case, without its detail and pointer if need be.
	 */
	strbuf one;
	sb_init(&one, e->sb.max);
	br_status st = build_error(&one, status, code, title, detail, pointer);
	if ((st != BR_OK || e->sb.len + one.len + 1 > e->sb.max) && e->count == 0) {
		sb_free(&one);
		st = build_error(&one, status, code, title, NULL, NULL);
	}
	if (st == BR_OK && e->sb.len + one.len + 1 <= e->sb.max) {
		if (e->count)
			st = sb_appends(&e->sb, ",");
		if (st == BR_OK)
			st = sb_append(&e->sb, sb_str(&one), one.len);
		if (st == BR_OK) {
			if (e->count == 0) {
				e->status = status;
				snprintf(e->code, sizeof(e->code), "%s", code);
				snprintf(e->detail, sizeof(e->detail), "%s",
				         detail ? detail : title);
			}
			e->count++;
		} else {
			/* Out of memory: the buffer freed itself (500 when sent). */
			e->omitted++;
			e->count = JA_MAX_ERRORS;
		}
	} else {
		e->omitted++;
	}
	sb_free(&one);
}

void ja_errors_send(struct ja_errors *e, struct http_resp *resp)
{
	resp->status = e->status ? e->status : 500;
	resp->content_type = "application/vnd.api+json";
	sb_reset(&resp->body);
	br_status st = sb_appends(&resp->body, "{\"errors\":[");
	if (st == BR_OK)
		st = sb_append(&resp->body, sb_str(&e->sb), e->sb.len);
	if (st == BR_OK && e->omitted)
		st = sb_appendf(&resp->body,
		                "],\"meta\":{\"errors_total\":%ld,\"errors_omitted\":%ld}}",
		                (long)e->count + e->omitted, e->omitted);
	else if (st == BR_OK)
		st = sb_appends(&resp->body, "]}");
	if (st != BR_OK || e->sb.len == 0)
		http_resp_error(resp, resp->status, "internal_error", "Internal error",
		                "The error document could not be built.");
	ja_errors_free(e);
}

void ja_errors_reply(struct api_req *r, struct ja_errors *e)
{
	if (!r->dialect) {
		ja_errors_send(e, r->resp);
		return;
	}
	r->dialect->fail(r, e->status ? e->status : 500, e->code[0] ? e->code : "internal_error",
	                 e->detail);
	ja_errors_free(e);
}

void ja_fail(struct api_req *r, unsigned status, const char *code, const char *title,
             const char *detail)
{
	if (r->dialect) {
		r->dialect->fail(r, status, code, detail ? detail : title);
		return;
	}
	/* Through ja_errors, so that an echo of client input stays valid UTF-8. */
	struct ja_errors e;
	ja_errors_init(&e);
	ja_error_add(&e, status, code, title, detail, NULL);
	ja_errors_send(&e, r->resp);
}

/* Answers 503 unavailable with a Retry-After of retry_s seconds. */
static void ja_unavailable(struct api_req *r, const char *detail, int retry_s)
{
	ja_fail(r, 503, "unavailable", "Service unavailable", detail);
	if (http_resp_header(r->resp, "Retry-After", "%d", retry_s) != BR_OK)
		LOG_WARN("Retry-After header lost");
}

void ja_db_fail(struct api_req *r, br_status st)
{
	if (st == BR_DB_CONN) {
		LOG_WARN("database unavailable: %s", r->db ? db_errmsg(r->db) : br_strerror(st));
		ja_unavailable(r, "The database is unreachable; nothing was written. Retry later.",
		               JA_RETRY_UNREACHABLE_S);
		return;
	}
	/*
	 * A wait cut short by a bound: no free connection in time (BR_TIMEOUT),
	 * a row lock held past lock_timeout or a deadlock (BR_DB_RETRY), a
	 * statement past statement_timeout. The transaction rolled back; the
	 * same request is likely to succeed shortly, so it is a 503, not a 500.
	 */
	if (st == BR_TIMEOUT || st == BR_DB_RETRY ||
	    (st == BR_DB && r->db && db_failed_busy(r->db))) {
		LOG_WARN("database busy: %s", r->db ? db_errmsg(r->db) : br_strerror(st));
		ja_unavailable(r,
		               "A resource this request needs is busy; nothing was written. "
		               "Retry later.",
		               JA_RETRY_BUSY_S);
		return;
	}
	LOG_ERROR("database error %s: %s", r->db ? db_sqlstate(r->db) : "",
	          r->db ? db_errmsg(r->db) : br_strerror(st));
	ja_fail(r, 500, "internal_error", "Internal error",
	        "The request failed unexpectedly; nothing was written.");
}

PGresult *ja_query(struct api_req *r, const db_stmt *stmt, const char *const *params)
{
	PGresult *res = NULL;
	br_status st = db_run(r->db, stmt, params, &res);
	if (st != BR_OK) {
		ja_db_fail(r, st);
		return NULL;
	}
	return res;
}

static bool media_type_ok(const char *ct)
{
	if (!ct)
		return true; /* no Content-Type at all: read the body as JSON */
	size_t n = strcspn(ct, ";");
	while (n && ct[n - 1] == ' ')
		n--;
	return (n == 16 && strncasecmp(ct, "application/json", 16) == 0) ||
	       (n == 24 && strncasecmp(ct, "application/vnd.api+json", 24) == 0);
}

static int json_depth(const json_t *v, int depth)
{
	if (depth > JA_MAX_DEPTH)
		return depth;
	int max = depth;
	if (json_is_object(v)) {
		const char *k;
		json_t *m;
		json_object_foreach((json_t *)v, k, m)
		{
			int d = json_depth(m, depth + 1);
			if (d > max)
				max = d;
		}
	} else if (json_is_array(v)) {
		size_t i;
		json_t *m;
		json_array_foreach(v, i, m)
		{
			int d = json_depth(m, depth + 1);
			if (d > max)
				max = d;
		}
	}
	return max;
}

json_t *ja_parse_body(struct api_req *r)
{
	if (!media_type_ok(http_req_header(r->http, "Content-Type"))) {
		ja_fail(r, 415, "unsupported_media_type", "Unsupported media type",
		        "Send the body as application/json or application/vnd.api+json.");
		return NULL;
	}
	json_error_t jerr;
	const strbuf *b = &r->http->body;
	json_t *doc = json_loadb(sb_str(b), b->len, JSON_REJECT_DUPLICATES, &jerr);
	if (!doc) {
		char detail[256] = "The body is empty.";
		if (b->len)
			snprintf(detail, sizeof(detail), "%s (line %d, column %d)", jerr.text,
			         jerr.line, jerr.column);
		ja_fail(r, 400, "invalid_json", "Invalid JSON", detail);
		return NULL;
	}
	if (!json_is_object(doc)) {
		json_decref(doc);
		ja_fail(r, 400, "invalid_json", "Invalid JSON", "The body must be a JSON object.");
		return NULL;
	}
	if (json_depth(doc, 0) > JA_MAX_DEPTH) {
		json_decref(doc);
		ja_fail(r, 400, "invalid_json", "Invalid JSON", "The body is nested too deeply.");
		return NULL;
	}
	return doc;
}

void ja_send_data(struct api_req *r, unsigned status, const char *json)
{
	struct http_resp *resp = r->resp;
	resp->status = status;
	resp->content_type = "application/vnd.api+json";
	sb_reset(&resp->body);
	br_status st = sb_appends(&resp->body, "{\"data\":");
	if (st == BR_OK)
		st = sb_appends(&resp->body, json);
	if (st == BR_OK)
		st = sb_appends(&resp->body, "}");
	if (st != BR_OK)
		ja_fail(r, 503, "unavailable", "Service unavailable", "Out of memory.");
}

static bool parse_nonneg(const char *s, long max, long *out)
{
	if (!s || *s < '0' || *s > '9')
		return false;
	errno = 0;
	char *end = NULL;
	long v = strtol(s, &end, 10);
	if (errno || *end || v > max)
		return false;
	*out = v;
	return true;
}

bool ja_parse_page(const char *number, const char *size, struct ja_page *page, struct ja_errors *e)
{
	struct ja_page p = {.number = 0, .size = JA_PAGE_SIZE_DEFAULT};
	bool ok = true;
	if (number && !parse_nonneg(number, 100000000L, &p.number)) {
		ja_error_add(e, 400, "invalid_parameter", "Invalid parameter",
		             "page[number] must be a whole number from 0.", NULL);
		ok = false;
	}
	if (size && (!parse_nonneg(size, JA_PAGE_SIZE_MAX, &p.size) || p.size < 1)) {
		ja_error_add(e, 400, "invalid_parameter", "Invalid parameter",
		             "page[size] must be a whole number from 1 to 100.", NULL);
		ok = false;
	}
	if (ok)
		*page = p;
	return ok;
}

bool ja_page_params(struct api_req *r, struct ja_page *page)
{
	const char *num = http_req_query(r->http, "page[number]");
	const char *size = http_req_query(r->http, "page[size]");
	struct ja_errors e;
	ja_errors_init(&e);
	if (!ja_parse_page(num, size, page, &e)) {
		ja_errors_reply(r, &e);
		return false;
	}
	ja_errors_free(&e);
	return true;
}

bool ja_page_check(struct api_req *r, const struct ja_page *page, long record_count)
{
	long pages = (record_count + page->size - 1) / page->size;
	if (page->number == 0 || page->number < pages)
		return true;
	ja_fail(r, 400, "invalid_page", "Invalid page", "The page is past the last page.");
	return false;
}

br_status ja_append_meta(strbuf *sb, const struct ja_page *page, long record_count)
{
	long pages = (record_count + page->size - 1) / page->size;
	char prev[24] = "null", next[24] = "null";
	if (page->number > 0)
		snprintf(prev, sizeof(prev), "%ld", page->number - 1);
	if (page->number + 1 < pages)
		snprintf(next, sizeof(next), "%ld", page->number + 1);
	return sb_appendf(sb,
	                  "\"meta\":{\"current_page\":%ld,\"previous_page\":%s,\"next_page\":%s,"
	                  "\"record_count\":%ld,\"page_count\":%ld,\"items_per_page\":%ld}",
	                  page->number, prev, next, record_count, pages, page->size);
}

void ja_send_page(struct api_req *r, unsigned status, const char *array, const struct ja_page *page,
                  long record_count)
{
	strbuf *b = &r->resp->body;
	sb_reset(b);
	br_status st = sb_appends(b, "{\"data\":");
	if (st == BR_OK)
		st = sb_appends(b, array);
	if (st == BR_OK)
		st = sb_appends(b, ",");
	if (st == BR_OK)
		st = ja_append_meta(b, page, record_count);
	if (st == BR_OK)
		st = sb_appends(b, "}");
	if (st != BR_OK) {
		ja_fail(r, 503, "unavailable", "Service unavailable", "Out of memory.");
		return;
	}
	r->resp->status = status;
	r->resp->content_type = "application/vnd.api+json";
}

struct param_check {
	const char *const *allowed;
	struct ja_errors *e;
};

bool ja_check_param(const char *const *allowed, const char *key, struct ja_errors *e)
{
	for (const char *const *a = allowed; *a; a++) {
		if (strcmp(*a, key) == 0)
			return true;
	}
	char detail[160];
	snprintf(detail, sizeof(detail), "Unknown query parameter %.100s.", key);
	ja_error_add(e, 400, "invalid_parameter", "Invalid parameter", detail, NULL);
	return false;
}

static bool check_one(void *ctx, const char *key, const char *value)
{
	(void)value;
	struct param_check *pc = ctx;
	ja_check_param(pc->allowed, key, pc->e);
	return true; /* every unknown parameter is reported, not just the first */
}

bool ja_check_params(struct api_req *r, const char *const *allowed)
{
	struct ja_errors e;
	ja_errors_init(&e);
	struct param_check pc = {allowed, &e};
	http_req_query_each(r->http, check_one, &pc);
	if (e.count) {
		ja_errors_reply(r, &e);
		return false;
	}
	ja_errors_free(&e);
	return true;
}

void ja_pointer(char *out, size_t cap, const char *base, const char *key)
{
	int n = snprintf(out, cap, "%s/", base);
	size_t o = n < 0 ? 0 : (size_t)n;
	if (o >= cap)
		return;
	for (const char *k = key; *k && o + 3 < cap; k++) {
		if (*k == '~' || *k == '/') {
			out[o++] = '~';
			out[o++] = *k == '~' ? '0' : '1';
		} else {
			out[o++] = *k;
		}
	}
	out[o] = '\0';
}

char *ja_patch_attributes(struct api_req *r, const char *type,
                          bool (*check)(const json_t *attrs, struct ja_errors *e))
{
	struct ja_errors e;
	char *text = NULL;
	ja_errors_init(&e);
	json_t *doc = ja_parse_body(r);
	if (!doc)
		goto out;
	const json_t *attrs = val_data_attributes(doc, type, &e);
	if (attrs)
		check(attrs, &e);
	if (e.count) {
		ja_errors_send(&e, r->resp);
		goto out;
	}
	text = json_dumps(attrs, JSON_COMPACT);
	if (!text)
		ja_fail(r, 503, "unavailable", "Service unavailable", "Out of memory.");
out:
	ja_errors_free(&e);
	json_decref(doc);
	return text;
}
