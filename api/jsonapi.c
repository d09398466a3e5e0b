/*
 * jsonapi.c - JSON:API error documents, bodies and pagination (see
 * jsonapi.h). Per-request only; thread-safe.
 */
#include "jsonapi.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"

#define JA_ERRORS_MAX_BYTES (1u << 20)
#define JA_PAGE_SIZE_DEFAULT 20
#define JA_PAGE_SIZE_MAX 100
#define JA_MAX_DEPTH 32

void ja_errors_init(struct ja_errors *e)
{
	sb_init(&e->sb, JA_ERRORS_MAX_BYTES);
	e->count = 0;
	e->status = 0;
}

void ja_errors_free(struct ja_errors *e)
{
	sb_free(&e->sb);
	e->count = 0;
}

static br_status append_str_field(strbuf *sb, const char *key, const char *val)
{
	br_status st = sb_appendf(sb, ",\"%s\":\"", key);
	if (st == BR_OK)
		st = sb_append_json_escaped(sb, val, strlen(val));
	if (st == BR_OK)
		st = sb_appends(sb, "\"");
	return st;
}

void ja_error_add(struct ja_errors *e, unsigned status, const char *code, const char *title,
		  const char *detail, const char *pointer)
{
	if (e->count >= JA_MAX_ERRORS)
		return;
	if (e->count == 0)
		e->status = status;
	br_status st = sb_appendf(&e->sb, "%s{\"status\":\"%u\",\"code\":\"%s\"",
				  e->count ? "," : "", status, code);
	if (st == BR_OK)
		st = append_str_field(&e->sb, "title", title);
	if (st == BR_OK && detail)
		st = append_str_field(&e->sb, "detail", detail);
	if (st == BR_OK && pointer) {
		st = sb_appends(&e->sb, ",\"source\":{\"pointer\":\"");
		if (st == BR_OK)
			st = sb_append_json_escaped(&e->sb, pointer, strlen(pointer));
		if (st == BR_OK)
			st = sb_appends(&e->sb, "\"}");
	}
	if (st == BR_OK)
		st = sb_appends(&e->sb, "}");
	if (st != BR_OK) {
		/* The buffer freed itself: keep what matters, that it failed. */
		e->count = JA_MAX_ERRORS;
		return;
	}
	e->count++;
}

void ja_errors_send(struct ja_errors *e, struct http_resp *resp)
{
	resp->status = e->status ? e->status : 500;
	resp->content_type = "application/vnd.api+json";
	sb_reset(&resp->body);
	br_status st = sb_appends(&resp->body, "{\"errors\":[");
	if (st == BR_OK)
		st = sb_append(&resp->body, sb_str(&e->sb), e->sb.len);
	if (st == BR_OK)
		st = sb_appends(&resp->body, "]}");
	if (st != BR_OK || e->sb.len == 0)
		http_resp_error(resp, resp->status, "internal_error", "Internal error",
				"The error document could not be built.");
	ja_errors_free(e);
}

void ja_fail(struct api_req *r, unsigned status, const char *code, const char *title,
	     const char *detail)
{
	http_resp_error(r->resp, status, code, title, detail);
}

void ja_db_fail(struct api_req *r, br_status st)
{
	if (st == BR_DB_CONN || st == BR_TIMEOUT) {
		LOG_WARN("database unavailable: %s", r->db ? db_errmsg(r->db) : br_strerror(st));
		ja_fail(r, 503, "unavailable", "Service unavailable",
			"The database is unreachable; nothing was written. Retry later.");
		return;
	}
	LOG_ERROR("database error %s: %s", r->db ? db_sqlstate(r->db) : "",
		  r->db ? db_errmsg(r->db) : br_strerror(st));
	ja_fail(r, 500, "internal_error", "Internal error",
		"The request failed unexpectedly; nothing was written.");
}

static bool media_type_ok(const char *ct)
{
	if (!ct)
		return true; /* lenient: curl -d without -H still works */
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
		char detail[256];
		snprintf(detail, sizeof(detail), "%s (line %d, column %d)",
			 b->len ? jerr.text : "The body is empty", jerr.line, jerr.column);
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

bool ja_page_params(struct api_req *r, struct ja_page *page)
{
	const char *num = http_req_query(r->http, "page[number]");
	const char *size = http_req_query(r->http, "page[size]");
	struct ja_errors e;
	ja_errors_init(&e);
	page->number = 0;
	page->size = JA_PAGE_SIZE_DEFAULT;
	if (num && !parse_nonneg(num, 100000000L, &page->number))
		ja_error_add(&e, 400, "invalid_parameter", "Invalid parameter",
			     "page[number] must be a whole number from 0.", NULL);
	if (size && (!parse_nonneg(size, JA_PAGE_SIZE_MAX, &page->size) || page->size < 1))
		ja_error_add(&e, 400, "invalid_parameter", "Invalid parameter",
			     "page[size] must be a whole number from 1 to 100.", NULL);
	if (e.count) {
		ja_errors_send(&e, r->resp);
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

void ja_send_page(struct api_req *r, unsigned status, const char *array,
		  const struct ja_page *page, long record_count)
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

static bool check_one(void *ctx, const char *key, const char *value)
{
	(void)value;
	struct param_check *pc = ctx;
	for (const char *const *a = pc->allowed; *a; a++) {
		if (strcmp(*a, key) == 0)
			return true;
	}
	char detail[160];
	snprintf(detail, sizeof(detail), "Unknown query parameter %.100s.", key);
	ja_error_add(pc->e, 400, "invalid_parameter", "Invalid parameter", detail, NULL);
	return true;
}

bool ja_check_params(struct api_req *r, const char *const *allowed)
{
	struct ja_errors e;
	ja_errors_init(&e);
	struct param_check pc = {allowed, &e};
	http_req_query_each(r->http, check_one, &pc);
	if (e.count) {
		ja_errors_send(&e, r->resp);
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

bool ja_is_uuid(const char *s)
{
	for (int i = 0; i < API_UUID_LEN; i++) {
		char c = s[i];
		bool dash = i == 8 || i == 13 || i == 18 || i == 23;
		if (dash ? c != '-'
			 : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
			     (c >= 'A' && c <= 'F')))
			return false;
	}
	return s[API_UUID_LEN] == '\0';
}
