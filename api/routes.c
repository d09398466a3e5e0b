/*
 * routes.c - the API's router: operational endpoints first, then /v1 routes
 * from one table. For /v1 it borrows a database connection for the whole
 * request, authenticates, checks the :id segment is a UUID (anything else is
 * 404, never a database error), and answers 405 with Allow for a known path
 * with another method. Stateless; thread-safe.
 */
#include <stdio.h>
#include <string.h>

#include "app.h"
#include "auth.h"
#include "jsonapi.h"
#include "log.h"

typedef void (*route_fn)(struct api_req *r);

/* A path pattern: literal segments and ":id" (a UUID). */
struct route {
	const char *pattern;
	const char *method;
	route_fn fn;
};

static const struct route routes[] = {
	{"/v1/sessions", "POST", route_sessions_create},
	{"/v1/sessions/:id", "GET", route_sessions_get},
	{"/v1/sessions/:id/people", "GET", route_people_list},
	{"/v1/sessions/:id/people", "POST", route_people_create},
	{"/v1/sessions/:id/people/bulk", "POST", route_bulk_create},
	{"/v1/jobs", "GET", route_jobs_list},
	{"/v1/jobs/:id", "GET", route_jobs_get},
	{"/v1/jobs/:id", "PUT", route_jobs_update},
	{"/v1/jobs/:id", "DELETE", route_jobs_delete},
	{"/v1/jobs/:id/tasks", "GET", route_jobs_tasks},
	{"/v1/webhooks", "GET", route_webhooks_list},
	{"/v1/webhooks", "POST", route_webhooks_create},
	{"/v1/webhooks/:id", "DELETE", route_webhooks_delete},
	{"/v1/webhooks/:id/deliveries", "GET", route_webhooks_deliveries},
};

#define NROUTES (sizeof(routes) / sizeof(routes[0]))

/*
 * Matches path against pattern; the :id segment is copied to id (empty when
 * the pattern has none). *bad_id is set when only the id failed to be a UUID.
 */
static bool match(const char *pattern, const char *path, char *id, bool *bad_id)
{
	const char *p = pattern, *s = path;
	id[0] = '\0';
	while (*p && *s) {
		if (strncmp(p, ":id", 3) == 0) {
			size_t n = strcspn(s, "/");
			if (n == API_UUID_LEN) {
				memcpy(id, s, n);
				id[n] = '\0';
			}
			if (!id[0] || !ja_is_uuid(id)) {
				*bad_id = true;
				id[0] = '\0';
			}
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

static void dispatch(struct api_req *r)
{
	char allow[64] = "";
	char id[API_UUID_LEN + 1];
	bool bad_id = false;
	const struct route *found = NULL;
	for (size_t i = 0; i < NROUTES; i++) {
		bool bad = false;
		if (!match(routes[i].pattern, r->http->path, id, &bad))
			continue;
		r->http->route = routes[i].pattern;
		bad_id = bad_id || bad;
		size_t used = strlen(allow);
		snprintf(allow + used, sizeof(allow) - used, "%s%s", used ? ", " : "",
			 routes[i].method);
		if (strcmp(routes[i].method, r->http->method) == 0) {
			found = &routes[i];
			memcpy(r->id, id, sizeof(r->id));
		}
	}
	if (!allow[0] || bad_id) {
		ja_fail(r, 404, "not_found", "Not found", "No such resource.");
		return;
	}
	if (!found) {
		ops_method_not_allowed(r->resp, allow);
		return;
	}
	found->fn(r);
}

void api_handle(void *ctx, struct http_req *req, struct http_resp *resp)
{
	struct api_app *app = ctx;
	if (ops_handle(app->ops, req, resp))
		return;
	struct api_req r = {.app = app, .http = req, .resp = resp};
	if (strncmp(req->path, "/v1/", 4) != 0) {
		ja_fail(&r, 404, "not_found", "Not found", "No such resource.");
		return;
	}
	br_status st = db_pool_get(app->db, API_DB_WAIT_MS, &r.db);
	if (st != BR_OK) {
		ja_db_fail(&r, st);
		return;
	}
	if (auth_request(&r))
		dispatch(&r);
	db_pool_put(app->db, r.db);
}
