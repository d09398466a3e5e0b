/*
 * idempotency.c - Idempotency-Key records around a route (see
 * idempotency.h).
 *
 * The key's record commits in the same transaction as what the route
 * writes: idem_run opens a transaction on the request's connection, takes
 * the key's transaction-scoped advisory lock without waiting, runs the
 * route inside the transaction, adds the response to the record and
 * commits. So whatever instant the API dies at, either the route's writes
 * and the record are both durable (a retry replays the response) or
 * neither is (a retry runs the route, at once: nothing is left "in
 * flight"). The advisory lock, released by the commit or by the
 * connection's end, is what a concurrent request with the same key finds
 * taken (409); nothing else is ever locked or waited for.
 *
 * Process-wide state: the time of the last purge of expired rows (atomic).
 * Thread-safe.
 */
#include "idempotency.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "crypto.h"
#include "fault.h"
#include "jobs.h"
#include "jsonapi.h"
#include "log.h"

#define IDEM_HASH_PARAM_LEN (2 + 2 * CR_SHA256_LEN + 1)
#define IDEM_PURGE_EVERY_S  60

/*
 * The key's lock: one bigint per (organization, key). Two keys sharing a
 * hash only make one of them wait for the other's commit as a 409, once
 * in 2^64.
 */
static const db_stmt stmt_lock = {
    "idem_lock", "SELECT pg_try_advisory_xact_lock(hashtextextended($1::text || ' ' || $2, 0))", 2};
/*
 * The answer already given to the key, if any. A row without a response
 * was left by an earlier release that recorded keys in flight: its
 * request never finished, so it counts as absent, like an expired one.
 */
static const db_stmt stmt_lookup = {
    "idem_lookup",
    "SELECT request_hash = $3::bytea, response_status, response_body, response_location"
    " FROM idempotency_keys WHERE organization_id = $1 AND key = $2"
    "  AND response_status IS NOT NULL AND created_at >= now() - interval '24 hours'",
    3};
/* Under the key's lock, so the conflict is only ever with an absent (expired) record. */
static const db_stmt stmt_store = {
    "idem_store",
    "INSERT INTO idempotency_keys AS k (organization_id, key, request_hash, response_status,"
    "                                   response_body, response_location)"
    " VALUES ($1, $2, $3::bytea, $4::int, $5, $6)"
    " ON CONFLICT (organization_id, key) DO UPDATE"
    " SET request_hash = EXCLUDED.request_hash, response_status = EXCLUDED.response_status,"
    "     response_body = EXCLUDED.response_body,"
    "     response_location = EXCLUDED.response_location, created_at = now()",
    6};
static const db_stmt stmt_purge = {
    "idem_purge",
    "DELETE FROM idempotency_keys WHERE (organization_id, key) IN"
    " (SELECT organization_id, key FROM idempotency_keys"
    "  WHERE created_at < now() - interval '24 hours' ORDER BY created_at LIMIT 1000)",
    0};

static long long last_purge_s; /* atomic; CLOCK_MONOTONIC seconds */

bool idem_key_valid(const char *key)
{
	size_t n = 0;
	for (const char *p = key; *p; p++, n++) {
		if (*p < 0x20 || *p > 0x7e || n >= IDEM_KEY_MAX)
			return false;
	}
	return n > 0;
}

static void bad_key(struct api_req *r)
{
	if (r->dialect) {
		ja_fail(r, 400, "invalid_parameter", "Invalid parameter",
		        "Idempotency-Key must be 1 to 255 printable ASCII characters.");
		return;
	}
	http_resp_json(
	    r->resp, 400,
	    "{\"errors\":[{\"status\":\"400\",\"code\":\"invalid_parameter\","
	    "\"title\":\"Invalid parameter\",\"detail\":\"Idempotency-Key must be 1 to "
	    "255 printable ASCII characters.\",\"source\":{\"header\":\"Idempotency-Key\"}}]}");
	r->resp->content_type = "application/vnd.api+json";
}

/*
 * SHA-256 of a form's fields, name NUL value-length value each, in order:
 * a form's raw bytes change with its boundary, which a client such as
 * curl draws anew for every request, retries included.
 */
static br_status form_digest(const http_form *f, unsigned char out[CR_SHA256_LEN])
{
	strbuf sb;
	sb_init(&sb, (size_t)1 << 30);
	br_status st = BR_OK;
	for (int i = 0; st == BR_OK && i < http_form_count(f); i++) {
		const char *name = http_form_name(f, i);
		size_t len = 0;
		const char *value = http_form_value(f, i, &len);
		st = sb_append(&sb, name, strlen(name) + 1);
		if (st == BR_OK)
			st = sb_appendf(&sb, "%zu:", len);
		if (st == BR_OK)
			st = sb_append(&sb, value, len);
	}
	if (st == BR_OK)
		cr_sha256(sb_str(&sb), sb.len, out);
	sb_free(&sb);
	return st;
}

/*
 * SHA-256(method NUL path NUL SHA-256(body)) as a bytea parameter; for a
 * form body, of its fields (form_digest).
 */
static br_status fingerprint(struct api_req *r, char out[IDEM_HASH_PARAM_LEN])
{
	unsigned char body_digest[CR_SHA256_LEN], fp[CR_SHA256_LEN];
	const strbuf *body = &r->http->body;
	const http_form *form = http_req_form_fields(r->http);
	if (!form)
		cr_sha256(sb_str(body), body->len, body_digest);
	else if (form_digest(form, body_digest) != BR_OK)
		return BR_NOMEM;
	strbuf sb;
	sb_init(&sb, (size_t)1 << 20);
	br_status st = sb_append(&sb, r->http->method, strlen(r->http->method) + 1);
	if (st == BR_OK)
		st = sb_append(&sb, r->http->path, strlen(r->http->path) + 1);
	if (st == BR_OK)
		st = sb_append(&sb, body_digest, sizeof(body_digest));
	if (st != BR_OK)
		return st;
	cr_sha256(sb.buf, sb.len, fp);
	sb_free(&sb);
	out[0] = '\\';
	out[1] = 'x';
	cr_hex(fp, sizeof(fp), out + 2);
	return BR_OK;
}

/* Deletes a batch of expired rows, at most once a minute per process. */
static void maybe_purge(struct api_req *r)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	long long now = (long long)ts.tv_sec;
	long long last = __atomic_load_n(&last_purge_s, __ATOMIC_RELAXED);
	if (last && now - last < IDEM_PURGE_EVERY_S)
		return;
	if (!__atomic_compare_exchange_n(&last_purge_s, &last, now, false, __ATOMIC_SEQ_CST,
	                                 __ATOMIC_RELAXED))
		return; /* another thread is purging */
	if (db_run(r->db, &stmt_purge, NULL, NULL) != BR_OK)
		LOG_WARN("purging expired idempotency keys failed: %s", db_errmsg(r->db));
}

/* Answers with the stored response of an earlier request. */
static void replay(struct api_req *r, const PGresult *res)
{
	const char *body = db_val(res, 0, 2);
	const char *location = db_val(res, 0, 3);
	struct http_resp *resp = r->resp;
	resp->status = (unsigned)strtoul(PQgetvalue(res, 0, 1), NULL, 10);
	/* A compatible API (dialect.h) answers plain JSON, as its routes did. */
	resp->content_type = r->dialect ? "application/json" : "application/vnd.api+json";
	sb_reset(&resp->body);
	if (body && *body && sb_appends(&resp->body, body) != BR_OK) {
		ja_fail(r, 503, "unavailable", "Service unavailable", "Out of memory.");
		return;
	}
	br_status st = BR_OK;
	if (location)
		st = http_resp_header(resp, "Location", "%s", location);
	if (st == BR_OK)
		st = http_resp_header(resp, "Idempotent-Replayed", "true");
	if (st != BR_OK)
		LOG_WARN("replayed response lost a header: %s", br_strerror(st));
}

/*
 * Inside the request's transaction: takes the key, or answers for it.
 * Returns true when the route may run; false with the response set (409,
 * 422, a replay) or a database failure answered.
 */
static bool take_key(struct api_req *r, const char *key, const char *hash)
{
	PGresult *res = NULL;
	const char *lock_params[] = {r->org_id, key};
	res = ja_query(r, &stmt_lock, lock_params);
	if (!res)
		return false;
	bool locked = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	if (!locked) {
		ja_fail(r, 409, "idempotency_key_in_use", "Idempotency key in use",
		        "A request with this Idempotency-Key is still being processed. "
		        "Retry it later to get its response.");
		if (http_resp_header(r->resp, "Retry-After", "1") != BR_OK)
			LOG_WARN("Retry-After header lost");
		return false;
	}
	const char *params[] = {r->org_id, key, hash};
	res = ja_query(r, &stmt_lookup, params);
	if (!res)
		return false;
	bool absent = PQntuples(res) == 0;
	if (!absent && strcmp(PQgetvalue(res, 0, 0), "t") != 0)
		ja_fail(r, 422, "idempotency_key_reused", "Idempotency key reused",
		        "This Idempotency-Key was used in the last 24 hours with another "
		        "request (method, path or body). Use a new key for a new request.");
	else if (!absent)
		replay(r, res);
	PQclear(res);
	return absent;
}

static const char *resp_header(const struct http_resp *resp, const char *name)
{
	for (int i = 0; i < resp->nheaders; i++) {
		if (strcasecmp(resp->headers[i].name, name) == 0)
			return resp->headers[i].value;
	}
	return NULL;
}

/*
 * After the route: records a final (< 500) response with what the route
 * wrote and commits both; a 5xx rolls everything back. When the record or
 * the commit fails, nothing the client can rely on was written: the
 * answer becomes 503 and any publication the route asked for is dropped
 * (should the commit have happened after all, a retry replays it and the
 * workers' sweeper publishes the job).
 */
static void finish(struct api_req *r, const char *key, const char *hash)
{
	struct http_resp *resp = r->resp;
	if (resp->status >= 500) {
		db_rollback(r->db);
		return;
	}
	char status[16];
	snprintf(status, sizeof(status), "%u", resp->status);
	const char *params[] = {
	    r->org_id, key, hash, status, sb_str(&resp->body), resp_header(resp, "Location")};
	br_status st = db_run(r->db, &stmt_store, params, NULL);
	if (st == BR_OK) {
		FAULT_POINT("api_before_commit");
		st = db_cmd(r->db, "COMMIT");
	}
	if (st == BR_OK) {
		FAULT_POINT("api_after_commit");
		return;
	}
	LOG_ERROR("idempotent request not committed: %s", db_errmsg(r->db));
	db_rollback(r->db);
	jobs_forget_publish(r);
	ja_fail(r, 503, "unavailable", "Service unavailable",
	        "The request could not be committed. Retry it with the same Idempotency-Key: "
	        "should it have committed, the retry gets its response.");
	if (http_resp_header(r->resp, "Retry-After", "1") != BR_OK)
		LOG_WARN("Retry-After header lost");
}

void idem_run(struct api_req *r, void (*fn)(struct api_req *r))
{
	const char *key = http_req_header(r->http, "Idempotency-Key");
	if (!key) {
		fn(r);
		return;
	}
	if (!idem_key_valid(key)) {
		bad_key(r);
		return;
	}
	char hash[IDEM_HASH_PARAM_LEN];
	if (fingerprint(r, hash) != BR_OK) {
		ja_fail(r, 503, "unavailable", "Service unavailable", "Out of memory.");
		return;
	}
	maybe_purge(r);
	br_status st = db_begin(r->db);
	if (st != BR_OK) {
		ja_db_fail(r, st);
		return;
	}
	if (!take_key(r, key, hash)) {
		db_rollback(r->db); /* read nothing but the key's record */
		return;
	}
	fn(r);
	finish(r, key, hash);
}
