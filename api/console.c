/*
 * console.c - the operator console's front door (see console.h and
 * docs/console.md): whether it is served, who the operator is, the
 * CSRF check of every POST, the actions and their audit lines.
 *
 * Served when BULKREG_CONSOLE is on, or auto with a loopback
 * BULKREG_API_BIND or an active operator token; otherwise /console is the
 * API's ordinary 404. Every request but the login page and the two static
 * assets needs an operator token (operator_tokens, never an
 * organization's): "Authorization: Bearer <token>", or the HttpOnly,
 * SameSite=Strict cookie the login form sets. A POST must carry the CSRF
 * token of the page it came from (derived from the operator token, so it
 * needs no state) and, when the browser says where it came from (Origin,
 * Sec-Fetch-Site), come from this origin.
 *
 * The actions run the SQL functions the API's routes run (retry_failed,
 * cancel_job, webhook_delivery_retry), for the job's or delivery's own
 * organization; a retry's tasks are published like the API's, after the
 * commit (jobs.h). Each action writes one audit line: operator (token
 * prefix and name), action, target, outcome.
 *
 * Stateless; thread-safe.
 */
#include "console.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "crypto.h"
#include "jobs.h"
#include "jsonapi.h"
#include "log.h"
#include "token.h"
#include "uuid.h"

#define CONSOLE_COOKIE       "bulkreg_console"
#define CONSOLE_COOKIE_AGE_S 43200
#define CONSOLE_TOKEN_MAX    256
static const char csrf_label[] = "bulkreg console csrf v1";

static const db_stmt stmt_any_operator = {
    "console_any_operator",
    "SELECT EXISTS (SELECT 1 FROM operator_tokens WHERE revoked_at IS NULL)", 0};
static const db_stmt stmt_operator = {
    "console_operator",
    "SELECT name, prefix FROM operator_tokens WHERE token_hash = $1::bytea AND revoked_at IS NULL",
    1};
/* The API's own functions, for the organization the job or delivery belongs to. */
static const db_stmt stmt_retry = {"console_retry",
                                   "SELECT outcome, task_ids FROM retry_failed("
                                   " (SELECT organization_id FROM jobs WHERE id = $1), $1, NULL)",
                                   1};
static const db_stmt stmt_cancel = {
    "console_cancel",
    "SELECT outcome FROM cancel_job((SELECT organization_id FROM jobs WHERE id = $1), $1)", 1};
static const db_stmt stmt_resend = {
    "console_resend",
    "SELECT r.outcome FROM webhook_deliveries d"
    " JOIN webhook_endpoints e ON e.id = d.endpoint_id,"
    " webhook_delivery_retry(e.organization_id, e.id, d.id) r WHERE d.id = $1",
    1};

/* 127.0.0.0/8 or ::1: only this machine can reach the API. */
static bool bind_is_loopback(const char *bind)
{
	unsigned char a[16];
	if (inet_pton(AF_INET, bind, a) == 1)
		return a[0] == 127;
	return inet_pton(AF_INET6, bind, a) == 1 &&
	       memcmp(a, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\1", 16) == 0;
}

/* BULKREG_CONSOLE, docs/console.md: false means /console is an ordinary 404. */
static bool console_enabled(struct api_req *r)
{
	const struct br_config *cfg = r->app->cfg;
	if (cfg->console != CFG_CONSOLE_AUTO || bind_is_loopback(cfg->api_bind))
		return cfg->console != CFG_CONSOLE_OFF;
	PGresult *res = NULL;
	bool on = db_run(r->db, &stmt_any_operator, NULL, &res) == BR_OK &&
	          strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	return on;
}

/*
 * The operator token the request presents: the bearer token, else the
 * console cookie. Points into the request's headers; *len its length.
 */
static const char *presented_token(struct api_req *r, size_t *len, bool *bearer)
{
	const char *h = http_req_header(r->http, "Authorization");
	*bearer = h != NULL;
	if (h) {
		if (strncasecmp(h, "Bearer ", 7) == 0)
			h += 7;
		*len = strcspn(h, " ");
		return h;
	}
	for (const char *c = http_req_header(r->http, "Cookie"); c && *c;) {
		c += strspn(c, " ;");
		size_t n = strcspn(c, ";");
		if (n > sizeof(CONSOLE_COOKIE) &&
		    strncmp(c, CONSOLE_COOKIE "=", sizeof(CONSOLE_COOKIE)) == 0) {
			*len = n - sizeof(CONSOLE_COOKIE);
			return c + sizeof(CONSOLE_COOKIE);
		}
		c += n;
	}
	*len = 0;
	return NULL;
}

/*
 * Looks the token up among the operators'. BR_OK with c's operator, name
 * and CSRF token filled; BR_NOTFOUND for no such (or a revoked) token;
 * BR_DB... when the database failed.
 */
static br_status authenticate(struct console_req *c, const char *token, size_t len)
{
	if (!token || len == 0 || len > CONSOLE_TOKEN_MAX)
		return BR_NOTFOUND;
	char digest[2 + 2 * CR_SHA256_LEN + 1];
	token_digest_param(token, len, digest);
	const char *params[] = {digest};
	PGresult *res = NULL;
	br_status st = db_run(c->r->db, &stmt_operator, params, &res);
	if (st == BR_OK && PQntuples(res) == 0)
		st = BR_NOTFOUND;
	unsigned char mac[CR_SHA256_LEN];
	if (st == BR_OK)
		st = cr_hmac_sha256(token, len, csrf_label, sizeof(csrf_label) - 1, mac);
	if (st == BR_OK) {
		snprintf(c->operator, sizeof(c->operator), "%s", PQgetvalue(res, 0, 0));
		snprintf(c->prefix, sizeof(c->prefix), "%s", PQgetvalue(res, 0, 1));
		cr_hex(mac, sizeof(mac), c->csrf);
	}
	PQclear(res);
	return st;
}

/*
 * A POST's Origin and Sec-Fetch-Site, when the browser sent them, name this
 * origin ("null", an opaque origin, does not). The pages' Referrer-Policy
 * (same-origin) lets the browser send the real Origin.
 */
static bool same_origin(struct api_req *r)
{
	const char *site = http_req_header(r->http, "Sec-Fetch-Site");
	if (site && strcmp(site, "same-origin") != 0 && strcmp(site, "none") != 0)
		return false;
	const char *origin = http_req_header(r->http, "Origin");
	const char *host = http_req_header(r->http, "Host");
	if (!origin)
		return true;
	const char *rest = strncmp(origin, "http://", 7) == 0    ? origin + 7
	                   : strncmp(origin, "https://", 8) == 0 ? origin + 8
	                                                         : NULL;
	return rest && host && strcmp(rest, host) == 0;
}

static bool csrf_ok(struct console_req *c)
{
	size_t len = 0;
	const char *sent = http_req_form(c->r->http, "csrf", &len);
	return sent && len == CONSOLE_CSRF_LEN && same_origin(c->r) &&
	       cr_equal(sent, c->csrf, CONSOLE_CSRF_LEN);
}

static void redirect(struct api_req *r, const char *location)
{
	html_security_headers(r->resp);
	if (http_resp_header(r->resp, "Location", "%s", location) != BR_OK)
		LOG_WARN("console: Location header lost");
	r->resp->status = 303;
	r->resp->content_type = "text/plain; charset=utf-8";
	sb_reset(&r->resp->body);
}

static void set_cookie(struct api_req *r, const char *token, size_t len, long max_age)
{
	if (http_resp_header(r->resp, "Set-Cookie",
	                     CONSOLE_COOKIE "=%.*s; Path=/console; Max-Age=%ld; HttpOnly; "
	                                    "SameSite=Strict",
	                     (int)len, token, max_age) != BR_OK)
		LOG_WARN("console: Set-Cookie header lost");
}

/* The audit line of an action (docs/console.md, Audit). */
static void audit(const struct console_req *c, const char *action, const char *target,
                  const char *outcome)
{
	const char *fields[] = {"operator", c->prefix, "operator_name", c->operator, "action",
	                        action,     "target",  target,          "outcome",
	                        outcome,    NULL};
	log_fields(CFG_LOG_INFO, "console action", fields);
}

static void login_page(struct api_req *r, unsigned status, const char *error)
{
	struct html h;
	html_init(&h);
	html_page_start(&h, "Log in", HTML_NAV_NONE, NULL, NULL);
	if (error)
		html_f(&h, "<p class=\"error\" role=\"alert\">{}</p>", error);
	html_f(&h,
	       "<form method=\"post\" action=\"/console/login\" class=\"login\">"
	       "<label for=\"token\">Operator token</label>"
	       "<input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"off\" required>"
	       "<button type=\"submit\">Log in</button></form>"
	       "<p>Create a token with <code>bulkreg-admin operator-token create</code>. "
	       "Organization tokens do not open the console.</p>");
	html_page_end(&h);
	html_send(&h, r->resp, status);
	html_free(&h);
	if (status == 401 && http_resp_header(r->resp, "WWW-Authenticate",
	                                      "Bearer realm=\"bulkreg console\"") != BR_OK)
		LOG_WARN("console: WWW-Authenticate header lost");
}

static void login(struct api_req *r)
{
	struct console_req c = {.r = r};
	size_t len = 0;
	const char *token = http_req_form(r->http, "token", &len);
	br_status st = same_origin(r) ? authenticate(&c, token, len) : BR_NOTFOUND;
	if (st == BR_OK) {
		set_cookie(r, token, len, CONSOLE_COOKIE_AGE_S);
		redirect(r, "/console");
		audit(&c, "login", "console", "ok");
	} else if (st == BR_NOTFOUND) {
		login_page(r, 401, "That is not an active operator token.");
		audit(&c, "login", "console", "refused");
	} else {
		login_page(r, 503, "The database is unavailable; try again shortly.");
	}
}

/* Runs an action's statement on target; the outcome is its first column. */
static void act(struct console_req *c, const db_stmt *stmt, const char *action, const char *target,
                const char *back)
{
	const char *params[] = {target};
	PGresult *res = NULL;
	br_status st = db_run(c->r->db, stmt, params, &res);
	const char *outcome = st != BR_OK           ? "database_unavailable"
	                      : PQntuples(res) == 0 ? "not_found"
	                                            : PQgetvalue(res, 0, 0);
	audit(c, action, target, outcome);
	char location[160];
	snprintf(location, sizeof(location), "%s?done=%s", back, outcome);
	if (st != BR_OK)
		console_message(c, 503, "Database unavailable",
		                "The action was not taken; try again.");
	else if (strcmp(outcome, "not_found") == 0)
		console_message(c, 404, "Not found", "No such job or delivery.");
	else
		redirect(c->r, location);
	if (st == BR_OK && strcmp(outcome, "retried") == 0 && stmt == &stmt_retry)
		jobs_defer_publish(c->r, target, PQgetvalue(res, 0, 1));
	PQclear(res);
}

/* The id in path = prefix + id + suffix, into id; false when path is not of that shape. */
static bool path_id(const char *path, const char *prefix, const char *suffix, char id[UUID_LEN + 1])
{
	size_t n = strlen(prefix);
	if (strncmp(path, prefix, n) != 0 || strlen(path) != n + UUID_LEN + strlen(suffix) ||
	    strcmp(path + n + UUID_LEN, suffix) != 0 ||
	    !uuid_valid(path + n, UUID_LEN, UUID_ANY_CASE))
		return false;
	memcpy(id, path + n, UUID_LEN);
	id[UUID_LEN] = '\0';
	return true;
}

static void post(struct console_req *c)
{
	const char *path = c->r->http->path;
	char id[UUID_LEN + 1], back[64];
	if (!csrf_ok(c)) {
		audit(c, "refused", path, "csrf");
		console_message(
		    c, 403, "Refused",
		    "The form did not come from this console page; reload it and try again.");
	} else if (strcmp(path, "/console/logout") == 0) {
		set_cookie(c->r, "", 0, 0);
		redirect(c->r, "/console/login");
		audit(c, "logout", "console", "ok");
	} else if (path_id(path, "/console/jobs/", "/retry", id)) {
		snprintf(back, sizeof(back), "/console/jobs/%s", id);
		act(c, &stmt_retry, "job.retry_failed", id, back);
	} else if (path_id(path, "/console/jobs/", "/cancel", id)) {
		snprintf(back, sizeof(back), "/console/jobs/%s", id);
		act(c, &stmt_cancel, "job.cancel", id, back);
	} else if (path_id(path, "/console/deliveries/", "/retry", id)) {
		act(c, &stmt_resend, "webhook_delivery.retry", id, "/console/webhooks");
	} else {
		console_message(c, 404, "Not found", "No such console action.");
	}
}

static void get(struct console_req *c)
{
	const char *path = c->r->http->path;
	char id[UUID_LEN + 1];
	if (strcmp(path, "/console") == 0 || strcmp(path, "/console/") == 0)
		console_overview(c);
	else if (strcmp(path, "/console/overview.json") == 0)
		console_overview_json(c);
	else if (strcmp(path, "/console/jobs") == 0)
		console_jobs(c);
	else if (path_id(path, "/console/jobs/", "", id))
		console_job(c);
	else if (strcmp(path, "/console/dead") == 0)
		console_dead(c);
	else if (strcmp(path, "/console/webhooks") == 0)
		console_webhooks(c);
	else
		console_message(c, 404, "Not found", "No such console page.");
}

static void asset(struct api_req *r, const char *type, const char *body)
{
	html_security_headers(r->resp);
	r->resp->status = 200;
	r->resp->content_type = type;
	sb_reset(&r->resp->body);
	if (sb_appends(&r->resp->body, body) != BR_OK)
		http_resp_error(r->resp, 503, "unavailable", "Service unavailable",
		                "Out of memory.");
}

/* After the console is known to be on, with r->db borrowed. */
static void serve(struct api_req *r)
{
	const char *path = r->http->path, *method = r->http->method;
	bool is_get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
	bool is_post = strcmp(method, "POST") == 0;
	if (!is_get && !is_post) {
		ops_method_not_allowed(r->resp, "GET, HEAD, POST");
		return;
	}
	if (is_get && strcmp(path, "/console/console.css") == 0) {
		asset(r, "text/css; charset=utf-8", console_css);
		return;
	}
	if (is_get && strcmp(path, "/console/console.js") == 0) {
		asset(r, "text/javascript; charset=utf-8", console_js);
		return;
	}
	if (strcmp(path, "/console/login") == 0) {
		if (is_post)
			login(r);
		else
			login_page(r, 200, NULL);
		return;
	}

	struct console_req c = {.r = r};
	size_t len;
	bool bearer;
	const char *token = presented_token(r, &len, &bearer);
	br_status st = authenticate(&c, token, len);
	if (st == BR_NOTFOUND && is_get && !bearer && strcmp(path, "/console/overview.json") != 0)
		redirect(r, "/console/login");
	else if (st == BR_NOTFOUND)
		login_page(r, 401, "An operator token is required.");
	else if (st != BR_OK)
		login_page(r, 503, "The database is unavailable; try again shortly.");
	else if (is_post)
		post(&c);
	else
		get(&c);
}

bool console_handle(struct api_req *r)
{
	const char *path = r->http->path;
	if (strncmp(path, "/console", 8) != 0 || (path[8] != '\0' && path[8] != '/'))
		return false;
	br_status st = db_pool_get(r->app->db, API_DB_WAIT_MS, &r->db);
	if (st != BR_OK) {
		ja_db_fail(r, st);
		return true;
	}
	bool on = console_enabled(r);
	if (on) {
		r->http->route = "/console";
		serve(r);
	}
	db_pool_put(r->app->db, r->db);
	r->db = NULL;
	jobs_publish_deferred(r);
	return on;
}
