/*
 * routes.c - the API's router: operational endpoints first, then /v1 routes
 * from one table. For /v1 it borrows a database connection for the whole
 * request (a GET of one resource excepted, below), authenticates, checks the
 * :id segment is a UUID (anything else is 404, never a database error), and
 * answers 405 with Allow for a known path with another method. A GET of one
 * resource authenticates in the same statement that reads it (struct
 * api_read), and the GETs that arrive together share that statement
 * (readbatch.h): at most one round trip per request, and under load a
 * fraction of one.
 *
 * The router also applies what routes must not each reimplement: unknown
 * query parameters of a /v1 route that is not a GET (400), the rate
 * limit (every authenticated /v1 request takes a token from its
 * organization's bucket and its response carries RateLimit-*; see
 * ratelimit.h) and, for routes flagged ROUTE_IDEMPOTENT, the
 * Idempotency-Key (idempotency.h).
 *
 * Process-wide state: the rate limiter, created on first use from the
 * configuration and kept for the life of the process (its table is
 * internally synchronised). Otherwise stateless; thread-safe.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "app.h"
#include "auth.h"
#include "compat/bulk_registrations.h"
#include "compat/workshops.h"
#include "compat/zoom.h"
#include "console.h"
#include "dialect.h"
#include "idempotency.h"
#include "jobs.h"
#include "jsonapi.h"
#include "log.h"
#include "ratelimit.h"
#include "readbatch.h"
#include "uuid.h"

typedef void (*route_fn)(struct api_req *r);

/* The route honours Idempotency-Key. */
#define ROUTE_IDEMPOTENT 1u

/* A path pattern: literal segments and ":id" (a UUID). */
struct route {
	const char *pattern;
	const char *method;
	route_fn fn;                 /* or NULL and: */
	const struct api_read *read; /* a GET served by one statement (app.h) */
	unsigned flags;
	/*
	 * The query parameters a /v1 route of another method than GET takes
	 * (NULL: none), checked here before the route runs (and before its
	 * Idempotency-Key). A GET's handler checks its own, with its filters
	 * and pages; the compatible APIs keep their own rules.
	 */
	const char *const *params;
};

static const char *const person_keys[] = {"email", "external_id", NULL};

static const struct route routes[] = {
    {"/v1/sessions", "GET", route_sessions_list, NULL, 0, NULL},
    {"/v1/sessions", "POST", route_sessions_create, NULL, 0, NULL},
    {"/v1/sessions/:id", "GET", NULL, &route_sessions_read, 0, NULL},
    {"/v1/sessions/:id", "PATCH", route_sessions_patch, NULL, 0, NULL},
    {"/v1/sessions/:id", "DELETE", route_sessions_delete, NULL, 0, NULL},
    {"/v1/sessions/:id/people", "GET", route_people_list, NULL, 0, NULL},
    {"/v1/sessions/:id/people", "POST", route_people_create, NULL, ROUTE_IDEMPOTENT, NULL},
    {"/v1/sessions/:id/people", "DELETE", route_people_delete, NULL, 0, person_keys},
    {"/v1/sessions/:id/people/:id", "GET", route_people_read, NULL, 0, NULL},
    {"/v1/sessions/:id/people/:id", "PATCH", route_people_patch, NULL, 0, NULL},
    {"/v1/sessions/:id/people/:id", "DELETE", route_people_delete, NULL, 0, NULL},
    {"/v1/sessions/:id/people/bulk", "POST", route_bulk_create, NULL, ROUTE_IDEMPOTENT, NULL},
    {"/v1/jobs", "GET", route_jobs_list, NULL, 0, NULL},
    {"/v1/jobs/:id", "GET", NULL, &route_jobs_read, 0, NULL},
    {"/v1/jobs/:id", "PUT", route_jobs_update, NULL, 0, NULL},
    {"/v1/jobs/:id", "DELETE", route_jobs_delete, NULL, 0, NULL},
    {"/v1/jobs/:id/tasks", "GET", route_jobs_tasks, NULL, 0, NULL},
    {"/v1/webhooks", "GET", route_webhooks_list, NULL, 0, NULL},
    {"/v1/webhooks", "POST", route_webhooks_create, NULL, 0, NULL},
    {"/v1/webhooks/:id", "DELETE", route_webhooks_delete, NULL, 0, NULL},
    {"/v1/webhooks/:id/deliveries", "GET", route_webhooks_deliveries, NULL, 0, NULL},
    {"/v1/webhooks/:id/deliveries/:id/retry", "POST", route_webhooks_delivery_retry, NULL, 0, NULL},
    /* Compatible APIs (api/compat/, docs/compat/). */
    {"/api/v1/bulk-registrations", "GET", brs_list, NULL, 0, NULL},
    {"/api/v1/bulk-registrations", "POST", brs_create, NULL, ROUTE_IDEMPOTENT, NULL},
    {"/api/v1/bulk-registrations/:id", "GET", brs_read, NULL, 0, NULL},
    {"/api/v1/bulk-registrations/:id", "PUT", brs_update, NULL, 0, NULL},
    {"/api/v1/bulk-registrations/:id", "DELETE", brs_delete, NULL, 0, NULL},
    {"/api/v1/workshops/:id/registrations", "POST", compat_workshop_register, NULL,
     ROUTE_IDEMPOTENT, NULL},
    {"/v2/webinars/:id/batch_registrants", "POST", zoom_route_batch_registrants, NULL,
     ROUTE_IDEMPOTENT, NULL},
};

#define NROUTES (sizeof(routes) / sizeof(routes[0]))

/* The compatible APIs (api/compat/), by path prefix; /v1/ is the native API. */
static const struct api_dialect *const dialects[] = {&compat_brs_dialect, &compat_workshop_dialect,
                                                     &compat_zoom_dialect, NULL};

/*
 * Matches path against pattern; its :id segments, which must be UUIDs, are
 * copied to ids[0] and ids[1] (empty when the pattern has fewer). A path
 * whose segment in the place of an :id is no UUID does not match, so it is
 * a 404, never a database error, and a literal segment (people/bulk) is
 * never taken for an id.
 */
static bool match(const char *pattern, const char *path, char ids[2][UUID_LEN + 1])
{
	const char *p = pattern, *s = path;
	int n_ids = 0;
	ids[0][0] = ids[1][0] = '\0';
	while (*p && *s) {
		if (strncmp(p, ":id", 3) == 0) {
			size_t n = strcspn(s, "/");
			if (n != UUID_LEN || n_ids == 2 || !uuid_valid(s, n, UUID_ANY_CASE))
				return false;
			memcpy(ids[n_ids], s, n);
			ids[n_ids++][n] = '\0';
			s += n;
			p += 3;
			continue;
		}
		if (*p != *s)
			return false;
		p++;
		s++;
	}
	/* A single trailing slash is tolerated. */
	return *p == '\0' && (*s == '\0' || (s[0] == '/' && s[1] == '\0'));
}

/*
 * Takes a token from the API token's bucket (README.md, Configuration: per token) and
 * adds the RateLimit-* headers (IETF
 * draft-ietf-httpapi-ratelimit-headers: Limit = burst, Remaining = whole
 * tokens left, Reset = seconds until the bucket is full again). Over the
 * limit it answers 429 with Retry-After = seconds until the next token and
 * returns false. A limiter that cannot allocate lets the request through.
 */
static bool rate_allows(struct api_req *r)
{
	const struct br_config *cfg = r->app->cfg;
	if (!cfg->rate_limit_enabled)
		return true;
	ratelimit *rl = r->app->rl;
	struct rl_result res;
	if (!rl || rl_take(rl, r->token_id, rl_now_ns(), &res) != BR_OK) {
		LOG_WARN("rate limiter out of memory: request not limited");
		return true;
	}
	struct http_resp *resp = r->resp;
	br_status st = http_resp_header(resp, "RateLimit-Limit", "%ld", res.limit);
	if (st == BR_OK)
		st = http_resp_header(resp, "RateLimit-Remaining", "%ld", res.remaining);
	if (st == BR_OK)
		st = http_resp_header(resp, "RateLimit-Reset", "%ld", res.reset_s);
	if (st == BR_OK && !res.allowed)
		st = http_resp_header(resp, "Retry-After", "%ld", res.retry_after);
	if (st != BR_OK)
		LOG_WARN("rate limit headers lost: %s", br_strerror(st));
	if (res.allowed)
		return true;
	char detail[160];
	snprintf(detail, sizeof(detail), "Too many requests with this token; retry after %ld s.",
	         res.retry_after);
	ja_fail(r, 429, "rate_limited", "Too many requests", detail);
	return false;
}

/*
 * Finds the request's route among those whose path matches; allow collects
 * their methods.
 */
static const struct route *route_find(struct api_req *r, char *allow, size_t cap)
{
	char ids[2][UUID_LEN + 1];
	const struct route *found = NULL;
	for (size_t i = 0; i < NROUTES; i++) {
		if (!match(routes[i].pattern, r->http->path, ids))
			continue;
		r->http->route = routes[i].pattern;
		size_t used = strlen(allow);
		snprintf(allow + used, cap - used, "%s%s", used ? ", " : "", routes[i].method);
		/* HEAD is GET without the body (libmicrohttpd drops it). */
		bool head =
		    strcmp(r->http->method, "HEAD") == 0 && strcmp(routes[i].method, "GET") == 0;
		if (head || strcmp(routes[i].method, r->http->method) == 0) {
			found = &routes[i];
			memcpy(r->id, ids[0], sizeof(r->id));
			memcpy(r->sub, ids[1], sizeof(r->sub));
		}
	}
	return found;
}

/*
 * Serves a GET of one resource with its api_read statement, which also
 * authenticates, batched with the other reads that arrive meanwhile
 * (readbatch.h): 401, 429, 400 (no query parameter is accepted) and 404
 * come in the same order as on every other route. It needs no connection
 * of its own: the batch's leader borrows one.
 */
static void read_one(struct api_req *r, const struct api_read *rd)
{
	static const char *const none[] = {NULL};
	char digest[AUTH_DIGEST_LEN];
	if (!auth_digest(r, digest))
		return;
	struct rb_row row;
	br_status st = rb_read(r->app->reads, &rd->stmt, AUTH_DIGEST_HEX(digest), r->id, &row);
	if (st != BR_OK) {
		ja_db_fail(r, st);
		return;
	}
	bool known = row.authenticated;
	if (auth_accept(r, known ? row.org_id : NULL, known ? row.token_id : NULL) &&
	    rate_allows(r) && ja_check_params(r, none)) {
		if (!row.resource)
			ja_fail(r, 404, "not_found", "Not found", rd->missing);
		else
			ja_send_data(r, 200, row.resource);
	}
	free(row.resource);
}

/* After authentication: the rate limit, then the route or why there is none. */
static void route(struct api_req *r, const struct route *found, const char *allow)
{
	/* After matching, so a 429 is counted under its route's label. */
	if (!rate_allows(r))
		return;
	if (!allow[0]) {
		ja_fail(r, 404, "not_found", "Not found", "No such resource.");
		return;
	}
	if (!found) {
		if (r->dialect && http_resp_header(r->resp, "Allow", "%s", allow) == BR_OK)
			ja_fail(r, 405, "method_not_allowed", "Method not allowed",
			        "This resource does not support that method.");
		else
			ops_method_not_allowed(r->resp, allow);
		return;
	}
	static const char *const none[] = {NULL};
	if (!r->dialect && strcmp(found->method, "GET") != 0 &&
	    !ja_check_params(r, found->params ? found->params : none))
		return;
	/* No route decodes a body: a compressed one would be read as garbage (RFC 7694). */
	const char *coding = http_req_header(r->http, "Content-Encoding");
	if (coding && strcasecmp(coding, "identity") != 0) {
		if (http_resp_header(r->resp, "Accept-Encoding", "identity") != BR_OK)
			LOG_WARN("Accept-Encoding header lost");
		ja_fail(r, 415, "unsupported_media_type", "Unsupported media type",
		        "Send the body without Content-Encoding: it is not decoded.");
		return;
	}
	if (found->flags & ROUTE_IDEMPOTENT)
		idem_run(r, found->fn);
	else
		found->fn(r);
}

static void dispatch(struct api_req *r)
{
	char allow[64] = "";
	const struct route *found = route_find(r, allow, sizeof(allow));
	if (found && found->read) {
		read_one(r, found->read);
		return;
	}
	br_status st = db_pool_get(r->app->db, API_DB_WAIT_MS, &r->db);
	if (st != BR_OK) {
		ja_db_fail(r, st);
		return;
	}
	if (auth_request(r))
		route(r, found, allow);
	db_pool_put(r->app->db, r->db);
	r->db = NULL;
	jobs_publish_deferred(r);
}

void api_metrics_zero(void)
{
	static const unsigned codes[] = {200, 400, 401, 404, 429, 503};
	for (size_t i = 0; i < NROUTES; i++) {
		/* A pattern has several rows (one a method): once is enough. */
		if (i > 0 && strcmp(routes[i - 1].pattern, routes[i].pattern) == 0)
			continue;
		for (size_t c = 0; c < sizeof(codes) / sizeof(codes[0]); c++)
			http_metrics_zero(routes[i].pattern, codes[c]);
	}
	http_metrics_zero("unmatched", 404);
	static const unsigned console_codes[] = {200, 303, 401, 403, 404};
	for (size_t c = 0; c < sizeof(console_codes) / sizeof(console_codes[0]); c++)
		http_metrics_zero("/console", console_codes[c]);
	http_metrics_zero("body_limit", 413);
}

/* The compatible API whose prefix path has, or NULL. */
static const struct api_dialect *dialect_of(const char *path)
{
	for (const struct api_dialect *const *d = dialects; *d; d++) {
		if (strncmp(path, (*d)->prefix, strlen((*d)->prefix)) == 0)
			return *d;
	}
	return NULL;
}

void api_http_error(void *ctx, struct http_req *req, struct http_resp *resp, unsigned status,
                    const char *code, const char *title, const char *detail)
{
	struct api_req r = {
	    .app = ctx, .http = req, .resp = resp, .dialect = dialect_of(req->path)};
	if (r.dialect)
		r.dialect->fail(&r, status, code, detail);
	else
		http_resp_error(resp, status, code, title, detail);
}

void api_handle(void *ctx, struct http_req *req, struct http_resp *resp)
{
	struct api_app *app = ctx;
	if (ops_handle(app->ops, req, resp))
		return;
	struct api_req r = {
	    .app = app, .http = req, .resp = resp, .dialect = dialect_of(req->path)};
	if (console_handle(&r))
		return;
	bool known = r.dialect || strncmp(req->path, "/v1/", 4) == 0;
	if (!known) {
		ja_fail(&r, 404, "not_found", "Not found", "No such resource.");
		return;
	}
	dispatch(&r);
}
