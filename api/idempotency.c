/*
 * idempotency.c - Idempotency-Key records around a route (see
 * idempotency.h).
 *
 * Every statement runs on the request's borrowed connection in autocommit:
 * the in-flight row must be visible to other API processes before the
 * route runs, and the route commits its own work. The one thing that is
 * not atomic is "route committed" then "response stored": an API that dies
 * between the two leaves an in-flight row that a retry takes over after
 * IDEM_STALE_S, and that retry runs the route again. Everything else (two
 * concurrent first requests, expiry, takeover) is decided by single
 * statements on the primary key.
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
#include "jsonapi.h"
#include "log.h"

#define IDEM_HASH_PARAM_LEN (2 + 2 * CR_SHA256_LEN + 1)
#define IDEM_CLAIM_ATTEMPTS 3
#define IDEM_PURGE_EVERY_S  60
#define IDEM_STR_(x)        #x
#define IDEM_STR(x)         IDEM_STR_(x)
#define IDEM_STALE_PARAM    IDEM_STR(IDEM_STALE_S) /* as a statement parameter */

/*
 * Takes the key: a new row, or an existing one that counts as absent
 * (expired) or abandoned (in flight for too long). Returns the claim's
 * created_at, which identifies this claim from then on; no row when the
 * key is taken.
 */
static const db_stmt stmt_claim = {
    "idem_claim",
    "INSERT INTO idempotency_keys AS k (organization_id, key, request_hash)"
    " VALUES ($1, $2, $3::bytea)"
    " ON CONFLICT (organization_id, key) DO UPDATE"
    " SET request_hash = EXCLUDED.request_hash, response_status = NULL,"
    "     response_body = NULL, response_location = NULL, created_at = now()"
    " WHERE k.created_at < now() - interval '24 hours'"
    "    OR (k.response_status IS NULL"
    "        AND k.created_at < now() - make_interval(secs => $4::int))"
    " RETURNING created_at",
    4};
static const db_stmt stmt_lookup = {
    "idem_lookup",
    "SELECT request_hash = $3::bytea, response_status, response_body, response_location"
    " FROM idempotency_keys WHERE organization_id = $1 AND key = $2",
    3};
static const db_stmt stmt_store = {
    "idem_store",
    "UPDATE idempotency_keys"
    " SET response_status = $4::int, response_body = $5, response_location = $6"
    " WHERE organization_id = $1 AND key = $2 AND created_at = $3::timestamptz"
    "   AND response_status IS NULL",
    6};
static const db_stmt stmt_release = {
    "idem_release",
    "DELETE FROM idempotency_keys"
    " WHERE organization_id = $1 AND key = $2 AND created_at = $3::timestamptz"
    "   AND response_status IS NULL",
    3};
static const db_stmt stmt_purge = {
    "idem_purge",
    "DELETE FROM idempotency_keys WHERE (organization_id, key) IN"
    " (SELECT organization_id, key FROM idempotency_keys"
    "  WHERE created_at < now() - interval '24 hours' ORDER BY created_at LIMIT 1000)",
    0};

static long long last_purge_s; /* atomic; CLOCK_MONOTONIC seconds */

enum claim_outcome {
	CLAIM_OWNED,
	CLAIM_ANSWERED
};

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
	http_resp_json(
	    r->resp, 400,
	    "{\"errors\":[{\"status\":\"400\",\"code\":\"invalid_parameter\","
	    "\"title\":\"Invalid parameter\",\"detail\":\"Idempotency-Key must be 1 to "
	    "255 printable ASCII characters.\",\"source\":{\"header\":\"Idempotency-Key\"}}]}");
	r->resp->content_type = "application/vnd.api+json";
}

/* SHA-256(method NUL path NUL SHA-256(body)) as a bytea parameter. */
static br_status fingerprint(struct api_req *r, char out[IDEM_HASH_PARAM_LEN])
{
	unsigned char body_digest[CR_SHA256_LEN], fp[CR_SHA256_LEN];
	const strbuf *body = &r->http->body;
	cr_sha256(sb_str(body), body->len, body_digest);
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
	resp->content_type = "application/vnd.api+json";
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
 * Decides what this request is to the key. CLAIM_OWNED: the route may run,
 * claimed_at identifies the claim. CLAIM_ANSWERED: the response is set
 * (replay, 409 or 422). Database failures are returned with nothing set.
 */
static br_status claim(struct api_req *r, const char *key, const char *hash, char claimed_at[64],
                       enum claim_outcome *out)
{
	const char *cparams[] = {r->org_id, key, hash, IDEM_STALE_PARAM};
	const char *lparams[] = {r->org_id, key, hash};
	for (int attempt = 0; attempt < IDEM_CLAIM_ATTEMPTS; attempt++) {
		PGresult *res = NULL;
		br_status st = db_run(r->db, &stmt_claim, cparams, &res);
		if (st != BR_OK)
			return st;
		if (PQntuples(res) == 1) {
			snprintf(claimed_at, 64, "%s", PQgetvalue(res, 0, 0));
			PQclear(res);
			*out = CLAIM_OWNED;
			return BR_OK;
		}
		PQclear(res);
		res = NULL;
		st = db_run(r->db, &stmt_lookup, lparams, &res);
		if (st != BR_OK)
			return st;
		if (PQntuples(res) == 0) {
			/* Released (5xx) or purged since the claim: try to take it again. */
			PQclear(res);
			continue;
		}
		if (strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
			ja_fail(r, 422, "idempotency_key_reused", "Idempotency key reused",
			        "This Idempotency-Key was used in the last 24 hours with another "
			        "request (method, path or body). Use a new key for a new request.");
		} else if (PQgetisnull(res, 0, 1)) {
			ja_fail(r, 409, "idempotency_key_in_use", "Idempotency key in use",
			        "A request with this Idempotency-Key is still being processed. "
			        "Retry it later to get its response.");
			if (http_resp_header(r->resp, "Retry-After", "1") != BR_OK)
				LOG_WARN("Retry-After header lost");
		} else {
			replay(r, res);
		}
		PQclear(res);
		*out = CLAIM_ANSWERED;
		return BR_OK;
	}
	ja_fail(r, 409, "idempotency_key_in_use", "Idempotency key in use",
	        "Requests with this Idempotency-Key are contending. Retry it later.");
	*out = CLAIM_ANSWERED;
	return BR_OK;
}

static const char *resp_header(const struct http_resp *resp, const char *name)
{
	for (int i = 0; i < resp->nheaders; i++) {
		if (strcasecmp(resp->headers[i].name, name) == 0)
			return resp->headers[i].value;
	}
	return NULL;
}

/* Stores a final (< 500) response, or forgets the key after a 5xx. */
static void finish(struct api_req *r, const char *key, const char *claimed_at)
{
	struct http_resp *resp = r->resp;
	if (resp->status >= 500) {
		/* The failure may have been the connection itself: reconnect once. */
		const char *params[] = {r->org_id, key, claimed_at};
		br_status st = db_ensure(r->db);
		if (st == BR_OK)
			st = db_run(r->db, &stmt_release, params, NULL);
		if (st != BR_OK)
			LOG_WARN("idempotency key not released after a %u: retries get 409 for "
			         "up to %d s",
			         resp->status, IDEM_STALE_S);
		return;
	}
	char status[16];
	snprintf(status, sizeof(status), "%u", resp->status);
	const char *params[] = {
	    r->org_id, key, claimed_at, status, sb_str(&resp->body), resp_header(resp, "Location")};
	br_status st = db_run(r->db, &stmt_store, params, NULL);
	if (st != BR_OK)
		LOG_ERROR("idempotent response not stored (%s): a retry after %d s runs again",
		          db_errmsg(r->db), IDEM_STALE_S);
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
	char hash[IDEM_HASH_PARAM_LEN], claimed_at[64];
	if (fingerprint(r, hash) != BR_OK) {
		ja_fail(r, 503, "unavailable", "Service unavailable", "Out of memory.");
		return;
	}
	maybe_purge(r);
	enum claim_outcome outcome;
	br_status st = claim(r, key, hash, claimed_at, &outcome);
	if (st != BR_OK) {
		ja_db_fail(r, st);
		return;
	}
	if (outcome == CLAIM_ANSWERED)
		return;
	fn(r);
	finish(r, key, claimed_at);
}
