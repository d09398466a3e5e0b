/*
 * jsonapi.h - JSON:API documents for the API: error documents with every
 * problem at once, request bodies, pagination and database failures mapped
 * to the contract's codes (never the database's text).
 *
 * All functions work on one request's objects; no shared state.
 */
#ifndef BULKREG_API_JSONAPI_H
#define BULKREG_API_JSONAPI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "app.h"
#include "strbuf.h"

#define JA_MAX_ERRORS 1000

/* A list of problems collected before answering. */
struct ja_errors {
	strbuf sb; /* the "errors" array's members so far */
	int count;
	long omitted;    /* problems dropped (past JA_MAX_ERRORS, or too big) */
	unsigned status; /* of the first problem */
	/* The first problem's code and detail (cut), for a dialect's answer. */
	char code[40];
	char detail[240];
};

void ja_errors_init(struct ja_errors *e);
void ja_errors_free(struct ja_errors *e);

/*
 * Adds one problem. pointer (a JSON pointer into the request, or NULL) goes
 * under source.pointer; strings are copied and escaped, bytes that are not
 * UTF-8 replaced by U+FFFD. Past JA_MAX_ERRORS problems, or when one no
 * longer fits the document's size cap, further problems are dropped (the
 * first is always kept, without detail and pointer if it must) and counted:
 * the document then says how many in meta.errors_total and
 * meta.errors_omitted (docs/openapi.yaml, ErrorDocument).
 */
void ja_error_add(struct ja_errors *e, unsigned status, const char *code, const char *title,
                  const char *detail, const char *pointer);

/* Answers with the collected problems (status of the first); frees e. */
void ja_errors_send(struct ja_errors *e, struct http_resp *resp);

/*
 * Answers r with the collected problems: the JSON:API document, or in the
 * request's dialect (dialect.h) its first problem. Frees e.
 */
void ja_errors_reply(struct api_req *r, struct ja_errors *e);

/* Answers with a single problem (in the request's dialect, if it has one). */
void ja_fail(struct api_req *r, unsigned status, const char *code, const char *title,
             const char *detail);

/* Retry-After of a 503: the database unreachable, or busy past a bound. */
#define JA_RETRY_UNREACHABLE_S 5
#define JA_RETRY_BUSY_S        2

/*
 * Answers for a failed database call: 503 unavailable with Retry-After
 * when the database is unreachable or a wait was cut short by a bound (no
 * free connection in time, lock_timeout, statement_timeout, deadlock), 500
 * internal_error otherwise. The details go to the log.
 */
void ja_db_fail(struct api_req *r, br_status st);

/*
 * Runs stmt on the request's connection. Returns its result (the caller
 * PQclears it), or NULL after answering as ja_db_fail does.
 */
PGresult *ja_query(struct api_req *r, const db_stmt *stmt, const char *const *params);

/*
 * Parses the request body as a JSON object. On failure the response is
 * already set (415 unsupported_media_type, 400 invalid_json) and NULL is
 * returned. The caller owns the result (json_decref).
 */
json_t *ja_parse_body(struct api_req *r);

/*
 * The attributes of a PATCH body, {"data":{"type": type, "attributes":
 * {...}}}, checked by check (which adds its problems to e), as compact JSON
 * text (the caller frees it); NULL after answering 400, 415, 422 or 503.
 */
char *ja_patch_attributes(struct api_req *r, const char *type,
                          bool (*check)(const json_t *attrs, struct ja_errors *e));

/*
 * Appends s as the body of a JSON string; bytes that are not UTF-8 (a
 * client's query key, a truncated echo of its body) become U+FFFD.
 */
br_status ja_append_text(strbuf *sb, const char *s) BR_MUST_USE;

/* Answers status with {"data": <json>} where json is a JSON text. */
void ja_send_data(struct api_req *r, unsigned status, const char *json);

/* Page parameters of a list route, validated (400 invalid_parameter). */
struct ja_page {
	long number;
	long size;
};
bool ja_page_params(struct api_req *r, struct ja_page *page);

/*
 * The pure part of ja_page_params: parses the raw (URL-decoded) values of
 * page[number] and page[size], either NULL when absent (defaults 0 and 20).
 * Each bad value adds a 400 invalid_parameter problem to e. Returns true
 * and writes *page only when both are valid. No request needed: the query
 * fuzzer calls it.
 */
bool ja_parse_page(const char *number, const char *size, struct ja_page *page, struct ja_errors *e);

/*
 * Answers status with {"data": <array>, "meta": <pagination>} where array
 * is a JSON text.
 */
void ja_send_page(struct api_req *r, unsigned status, const char *array, const struct ja_page *page,
                  long record_count);

/*
 * Appends Livestorm's pagination meta object for record_count records.
 * Answers 400 invalid_page and returns false when the page is past the end.
 */
bool ja_page_check(struct api_req *r, const struct ja_page *page, long record_count);
br_status ja_append_meta(strbuf *sb, const struct ja_page *page, long record_count) BR_MUST_USE;

/*
 * Refuses query parameters not in allowed (a NULL-terminated list): 400
 * invalid_parameter naming each. Returns true when all are known.
 */
bool ja_check_params(struct api_req *r, const char *const *allowed);

/*
 * The pure part of ja_check_params for one query parameter: true when key
 * is in allowed, else adds a 400 invalid_parameter problem naming it to e.
 */
bool ja_check_param(const char *const *allowed, const char *key, struct ja_errors *e);

/*
 * Writes base + "/" + key into out as a JSON pointer, escaping "~" and "/"
 * in key (RFC 6901); truncated to cap.
 */
void ja_pointer(char *out, size_t cap, const char *base, const char *key);

/*
 * Decodes the UTF-8 sequence at s (n bytes available) into *cp. Returns its
 * length, or 0 when it is not well-formed (overlong, surrogate, past
 * U+10FFFF, cut short); *cp is written only on success.
 */
size_t ja_utf8_decode(const char *s, size_t n, uint32_t *cp);

#endif
