/*
 * console_pages.c - the operator console's pages (docs/console.md): the
 * jobs of every organization, one job's tasks, dead letters and webhook
 * deliveries (the overview is console_overview.c's). Each page is one or two named statements
 * read on the request's borrowed connection, rendered with console_html.h
 * (which escapes every value). Stateless; thread-safe.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "console.h"
#include "log.h"
#include "uuid.h"

#define CONSOLE_PAGE_ROWS 50
#define CONSOLE_PAGE_MAX  10000

static const db_stmt stmt_jobs = {
    "console_jobs",
    "SELECT j.id, o.name, j.action, j.status, j.total_items, j.total_success, j.total_fail,"
    " j.total_cancelled, j.retry_count, console_time(j.created_at), console_time(j.completed_at)"
    " FROM jobs j JOIN organizations o ON o.id = j.organization_id"
    " WHERE ($1::text IS NULL OR j.status = $1) AND ($2::text IS NULL OR o.name = $2)"
    " ORDER BY j.created_at DESC, j.id DESC OFFSET $3::bigint LIMIT $4::int",
    4};
static const db_stmt stmt_job = {
    "console_job",
    "SELECT j.id, o.name, j.action, j.status, j.total_items, j.total_success, j.total_fail,"
    " j.total_cancelled, j.retry_count, console_time(j.created_at), console_time(j.completed_at),"
    " j.session_id, s.title"
    " FROM jobs j JOIN organizations o ON o.id = j.organization_id"
    " LEFT JOIN sessions s ON s.id = j.session_id WHERE j.id = $1",
    1};
static const db_stmt stmt_tasks = {
    "console_tasks",
    "SELECT t.idx, t.status, coalesce(t.input->>'email', t.input->>'external_id'), t.reference,"
    " t.error_code, t.error_message, console_time(t.completed_at)"
    " FROM tasks t WHERE t.job_id = $1 AND ($2::text IS NULL OR t.status = $2)"
    " ORDER BY t.idx OFFSET $3::bigint LIMIT $4::int",
    4};
static const db_stmt stmt_dead = {
    "console_dead",
    "SELECT j.id, o.name, t.idx, coalesce(t.input->>'email', t.input->>'external_id'),"
    " t.error_message, console_time(t.completed_at)"
    " FROM jobs j JOIN organizations o ON o.id = j.organization_id"
    " JOIN tasks t ON t.job_id = j.id"
    " WHERE j.total_fail > 0 AND t.status = 'failed' AND t.error_code = 'internal_error'"
    " ORDER BY t.completed_at DESC, t.id OFFSET $1::bigint LIMIT $2::int",
    2};
/* $1: failing (failed, or pending after a failed attempt), all, pending, failed, succeeded. */
static const db_stmt stmt_deliveries = {
    "console_deliveries",
    "SELECT d.id, o.name, e.url, ev.type, d.status, d.attempts,"
    " CASE WHEN d.status = 'pending' THEN console_time(d.next_attempt_at) END,"
    " console_time(d.created_at), e.disabled_at IS NOT NULL,"
    " (SELECT coalesce(json_agg(json_build_object('at', console_time(a.attempted_at),"
    "   'http_status', a.http_status, 'duration_ms', a.duration_ms, 'error', a.error)"
    "   ORDER BY a.attempted_at DESC), '[]'::json)"
    "  FROM (SELECT * FROM webhook_attempts x WHERE x.delivery_id = d.id"
    "        ORDER BY x.attempted_at DESC LIMIT 10) a)"
    " FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id"
    " JOIN organizations o ON o.id = e.organization_id"
    " JOIN webhook_events ev ON ev.id = d.event_id"
    " WHERE CASE $1 WHEN 'all' THEN true"
    "  WHEN 'failing' THEN d.status = 'failed' OR (d.status = 'pending' AND d.attempts > 0)"
    "  ELSE d.status = $1 END"
    " ORDER BY d.created_at DESC, d.id DESC OFFSET $2::bigint LIMIT $3::int",
    3};

void console_message(struct console_req *c, unsigned status, const char *title, const char *text)
{
	struct html h;
	html_init(&h);
	html_page_start(&h, title, HTML_NAV_NONE, c->operator, c->csrf);
	html_f(&h, "<p role=\"alert\">{}</p><p><a href=\"/console\">Back to the overview</a></p>",
	       text);
	html_page_end(&h);
	html_send(&h, c->r->resp, status);
	html_free(&h);
}

PGresult *console_query(struct console_req *c, const db_stmt *stmt, const char *const *params)
{
	PGresult *res = NULL;
	br_status st = db_run(c->r->db, stmt, params, &res);
	if (st == BR_OK)
		return res;
	LOG_WARN("console: %s failed: %s", stmt->name, db_errmsg(c->r->db));
	console_message(c, 503, "Database unavailable",
	                "The database did not answer; this page will work again once it does.");
	return NULL;
}

static const char *val(const PGresult *res, int row, int col)
{
	return PQgetisnull(res, row, col) ? NULL : PQgetvalue(res, row, col);
}

/*
 * The page number of ?page= (0 when absent or not a number from 0 to
 * CONSOLE_PAGE_MAX), with the OFFSET and LIMIT parameters of that page: one
 * row more than shown, which says whether a next page exists.
 */
static long page_of(struct console_req *c, char offset[24], char limit[24])
{
	const char *p = http_req_query(c->r->http, "page");
	char *end = NULL;
	long n = p ? strtol(p, &end, 10) : 0;
	if (!p || *end || n < 0 || n > CONSOLE_PAGE_MAX)
		n = 0;
	snprintf(offset, 24, "%ld", n * CONSOLE_PAGE_ROWS);
	snprintf(limit, 24, "%d", CONSOLE_PAGE_ROWS + 1);
	return n;
}

/* s percent-encoded for a query string (cut to what fits out). */
static void url_encode(const char *s, char *out, size_t cap)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;
	for (; *s && o + 4 <= cap; s++) {
		unsigned char ch = (unsigned char)*s;
		if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		    (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == '.') {
			out[o++] = (char)ch;
		} else {
			out[o++] = '%';
			out[o++] = hex[ch >> 4];
			out[o++] = hex[ch & 15];
		}
	}
	out[o] = '\0';
}

/* "Previous" and "Next" links; base is the page's path and query without page=. */
static void pager(struct html *h, const char *base, long page, bool more)
{
	char prev[24], next[24];
	snprintf(prev, sizeof(prev), "%ld", page - 1);
	snprintf(next, sizeof(next), "%ld", page + 1);
	html_f(h, "<nav aria-label=\"Pages\" class=\"pager\">");
	if (page > 0)
		html_f(h, "<a href=\"{}page={}\">Previous page</a> ", base, prev);
	if (more)
		html_f(h, "<a href=\"{}page={}\">Next page</a>", base, next);
	html_f(h, "</nav>");
}

/* A query parameter that must be one of allowed (NULL-terminated), else NULL. */
static const char *one_of(struct console_req *c, const char *key, const char *const *allowed)
{
	const char *v = http_req_query(c->r->http, key);
	for (size_t i = 0; v && allowed[i]; i++) {
		if (strcmp(v, allowed[i]) == 0)
			return allowed[i];
	}
	return NULL;
}

/* <option>s of a filter's select, the chosen one selected. */
static void options(struct html *h, const char *const *values, const char *chosen)
{
	for (size_t i = 0; values[i]; i++)
		html_f(h,
		       chosen && strcmp(values[i], chosen) == 0
		           ? "<option value=\"{}\" selected>{}</option>"
		           : "<option value=\"{}\">{}</option>",
		       values[i], values[i][0] ? values[i] : "any");
}

/* The outcome of an action, as console.c's redirect names it in ?done=. */
static void notice(struct html *h, struct console_req *c)
{
	static const char *const done[][2] = {
	    {"retried", "Done: the failed tasks are queued again."},
	    {"cancelled", "Done: the job is cancelled."},
	    {"job_in_progress", "Not done: the job is still processing."},
	    {"nothing_to_retry", "Not done: the job has no failed task."},
	    {"finished", "Not done: the job had already finished."},
	    {"disabled", "Not done: that webhook is disabled (its receiver answered 410 Gone)."},
	};
	const char *v = http_req_query(c->r->http, "done");
	for (size_t i = 0; v && i < sizeof(done) / sizeof(done[0]); i++) {
		if (strcmp(v, done[i][0]) == 0)
			html_f(h, "<p class=\"notice\" role=\"status\">{}</p>", done[i][1]);
	}
}

/* ---- jobs ---- */

static const char *const job_statuses[] = {"", "processing", "ended", "failed", "cancelled", NULL};

static void job_row(struct html *h, const PGresult *res, int i)
{
	html_f(h,
	       "<tr><td><a href=\"/console/jobs/{}\"><code>{}</code></a></td><td>{}</td><td>{}</td>"
	       "<td><span class=\"st st-{}\">{}</span></td><td class=\"n\">{}</td>"
	       "<td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>"
	       "<td class=\"n\">{}</td><td>{}</td><td>{}</td></tr>\n",
	       val(res, i, 0), val(res, i, 0), val(res, i, 1), val(res, i, 2), val(res, i, 3),
	       val(res, i, 3), val(res, i, 4), val(res, i, 5), val(res, i, 6), val(res, i, 7),
	       val(res, i, 8), val(res, i, 9), val(res, i, 10) ? val(res, i, 10) : "—");
}

void console_jobs(struct console_req *c)
{
	const char *q = http_req_query(c->r->http, "q");
	if (q && *q && uuid_valid(q, strlen(q), UUID_ANY_CASE)) {
		char location[64];
		snprintf(location, sizeof(location), "/console/jobs/%s", q);
		c->r->resp->status = 303;
		if (http_resp_header(c->r->resp, "Location", "%s", location) != BR_OK)
			LOG_WARN("console: Location header lost");
		return;
	}
	const char *status = one_of(c, "status", job_statuses + 1);
	const char *org = http_req_query(c->r->http, "organization");
	if (org && !*org)
		org = NULL;
	char offset[24], limit[24];
	long page = page_of(c, offset, limit);
	const char *params[] = {status, org, offset, limit};
	PGresult *res = console_query(c, &stmt_jobs, params);
	if (!res)
		return;
	struct html h;
	html_init(&h);
	html_page_start(&h, "Jobs", HTML_NAV_JOBS, c->operator, c->csrf);
	html_f(&h,
	       "<form method=\"get\" action=\"/console/jobs\" class=\"filters\" role=\"search\">"
	       "<label for=\"q\">Job id</label><input id=\"q\" name=\"q\" value=\"{}\" size=\"38\">"
	       "<label for=\"status\">Status</label><select id=\"status\" name=\"status\">",
	       q && *q ? q : NULL);
	options(&h, job_statuses, status ? status : "");
	html_f(&h,
	       "</select><label for=\"organization\">Organization</label>"
	       "<input id=\"organization\" name=\"organization\" value=\"{}\">"
	       "<button type=\"submit\">Filter</button></form>",
	       org);
	if (q && *q)
		html_f(&h,
		       "<p class=\"error\" role=\"alert\">Search takes a whole job id (a UUID): "
		       "{}</p>",
		       q);
	int n = PQntuples(res);
	html_f(&h, "<table><caption>Jobs of every organization, newest first</caption><thead><tr>"
	           "<th scope=\"col\">Job</th><th scope=\"col\">Organization</th>"
	           "<th scope=\"col\">Action</th><th scope=\"col\">Status</th>"
	           "<th scope=\"col\">Tasks</th><th scope=\"col\">Succeeded</th>"
	           "<th scope=\"col\">Failed</th><th scope=\"col\">Cancelled</th>"
	           "<th scope=\"col\">Retries</th><th scope=\"col\">Created</th>"
	           "<th scope=\"col\">Completed</th></tr></thead><tbody>\n");
	for (int i = 0; i < n && i < CONSOLE_PAGE_ROWS; i++)
		job_row(&h, res, i);
	if (n == 0)
		html_f(&h, "<tr><td colspan=\"11\">No jobs match.</td></tr>");
	html_f(&h, "</tbody></table>");
	char org_q[3 * 256 + 1], base[1024];
	url_encode(org ? org : "", org_q, sizeof(org_q));
	snprintf(base, sizeof(base), "/console/jobs?status=%s&organization=%s&",
	         status ? status : "", org_q);
	pager(&h, base, page, n > CONSOLE_PAGE_ROWS);
	html_page_end(&h);
	html_send(&h, c->r->resp, 200);
	html_free(&h);
	PQclear(res);
}

static const char *const task_statuses[] = {"", "queued", "succeeded", "failed", "cancelled", NULL};

/* The job's figures, and the actions its state allows. */
static void job_summary(struct html *h, struct console_req *c, const PGresult *job)
{
	const char *id = val(job, 0, 0), *status = val(job, 0, 3);
	html_f(
	    h,
	    "<dl class=\"figures\"><div><dt>Organization</dt><dd>{}</dd></div>"
	    "<div><dt>Session</dt><dd>{} <code>{}</code></dd></div>"
	    "<div><dt>Action</dt><dd>{}</dd></div>"
	    "<div><dt>Status</dt><dd><span class=\"st st-{}\" "
	    "id=\"job-status\">{}</span></dd></div>"
	    "<div><dt>Tasks</dt><dd>{}</dd></div><div><dt>Succeeded</dt><dd>{}</dd></div>"
	    "<div><dt>Failed</dt><dd id=\"job-failed\">{}</dd></div>"
	    "<div><dt>Cancelled</dt><dd>{}</dd></div><div><dt>Retries</dt><dd>{}</dd></div>"
	    "<div><dt>Created</dt><dd>{}</dd></div><div><dt>Completed</dt><dd>{}</dd></div></dl>",
	    val(job, 0, 1), val(job, 0, 12), val(job, 0, 11), val(job, 0, 2), status, status,
	    val(job, 0, 4), val(job, 0, 5), val(job, 0, 6), val(job, 0, 7), val(job, 0, 8),
	    val(job, 0, 9), val(job, 0, 10) ? val(job, 0, 10) : "—");
	char action[96];
	html_f(h, "<section aria-labelledby=\"actions\"><h2 id=\"actions\">Actions</h2>");
	bool any = false;
	if (strcmp(status, "processing") != 0 && strcmp(val(job, 0, 6), "0") != 0) {
		snprintf(action, sizeof(action), "/console/jobs/%s/retry", id);
		html_action(h, action, c->csrf, "Retry failed tasks");
		any = true;
	}
	if (strcmp(status, "processing") == 0) {
		snprintf(action, sizeof(action), "/console/jobs/%s/cancel", id);
		html_action(h, action, c->csrf, "Cancel job");
		any = true;
	}
	if (!any)
		html_f(h, "<p>None: the job has finished and has no failed task.</p>");
	html_f(h, "</section>");
}

static void task_rows(struct html *h, const PGresult *res)
{
	int n = PQntuples(res);
	for (int i = 0; i < n && i < CONSOLE_PAGE_ROWS; i++)
		html_f(
		    h,
		    "<tr><td class=\"n\">{}</td><td><span class=\"st st-{}\">{}</span></td>"
		    "<td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>\n",
		    val(res, i, 0), val(res, i, 1), val(res, i, 1), val(res, i, 2), val(res, i, 3),
		    val(res, i, 4), val(res, i, 5), val(res, i, 6));
	if (n == 0)
		html_f(h, "<tr><td colspan=\"7\">No tasks match.</td></tr>");
}

void console_job(struct console_req *c)
{
	const char *id = c->r->http->path + strlen("/console/jobs/");
	const char *status = one_of(c, "status", task_statuses + 1);
	char offset[24], limit[24];
	long page = page_of(c, offset, limit);
	const char *job_params[] = {id};
	const char *task_params[] = {id, status, offset, limit};
	PGresult *job = console_query(c, &stmt_job, job_params), *tasks = NULL;
	if (!job)
		return;
	if (PQntuples(job) == 0) {
		console_message(c, 404, "Not found", "No job has that id.");
		goto out;
	}
	if (!(tasks = console_query(c, &stmt_tasks, task_params)))
		goto out;
	struct html h;
	html_init(&h);
	char title[64];
	snprintf(title, sizeof(title), "Job %.36s", id);
	html_page_start(&h, title, HTML_NAV_JOBS, c->operator, c->csrf);
	notice(&h, c);
	job_summary(&h, c, job);
	html_f(&h, "<section aria-labelledby=\"tasks\"><h2 id=\"tasks\">Tasks and errors</h2>"
	           "<form method=\"get\" class=\"filters\"><label for=\"status\">Status</label>"
	           "<select id=\"status\" name=\"status\">");
	options(&h, task_statuses, status ? status : "");
	html_f(&h, "</select><button type=\"submit\">Filter</button></form>"
	           "<table><caption>Tasks in request order</caption><thead><tr>"
	           "<th scope=\"col\">Index</th><th scope=\"col\">Status</th>"
	           "<th scope=\"col\">Person</th><th scope=\"col\">Reference</th>"
	           "<th scope=\"col\">Error</th><th scope=\"col\">Message</th>"
	           "<th scope=\"col\">Finished</th></tr></thead><tbody>\n");
	task_rows(&h, tasks);
	html_f(&h, "</tbody></table>");
	char base[128];
	snprintf(base, sizeof(base), "/console/jobs/%s?status=%s&", id, status ? status : "");
	pager(&h, base, page, PQntuples(tasks) > CONSOLE_PAGE_ROWS);
	html_f(&h, "</section>");
	html_page_end(&h);
	html_send(&h, c->r->resp, 200);
	html_free(&h);
out:
	PQclear(job);
	PQclear(tasks);
}

/* ---- dead letters ---- */

void console_dead(struct console_req *c)
{
	char offset[24], limit[24];
	long page = page_of(c, offset, limit);
	const char *params[] = {offset, limit};
	PGresult *res = console_query(c, &stmt_dead, params);
	if (!res)
		return;
	struct html h;
	html_init(&h);
	html_page_start(&h, "Dead letters", HTML_NAV_DEAD, c->operator, c->csrf);
	html_f(&h,
	       "<p>Tasks the broker gave up on after its delivery limit: each was dead-lettered "
	       "to <code>bulkreg.tasks.dead</code> and failed with <code>internal_error</code>. "
	       "Retry them from their job's page.</p>"
	       "<table><caption>Dead-lettered tasks, latest first</caption><thead><tr>"
	       "<th scope=\"col\">Job</th><th scope=\"col\">Organization</th>"
	       "<th scope=\"col\">Index</th><th scope=\"col\">Person</th>"
	       "<th scope=\"col\">Message</th><th scope=\"col\">Failed at</th>"
	       "</tr></thead><tbody>\n");
	int n = PQntuples(res);
	for (int i = 0; i < n && i < CONSOLE_PAGE_ROWS; i++)
		html_f(&h,
		       "<tr><td><a href=\"/console/jobs/{}?status=failed\"><code>{}</code></a></td>"
		       "<td>{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
		       val(res, i, 0), val(res, i, 0), val(res, i, 1), val(res, i, 2),
		       val(res, i, 3), val(res, i, 4), val(res, i, 5));
	if (n == 0)
		html_f(&h, "<tr><td colspan=\"6\">No dead-lettered tasks.</td></tr>");
	html_f(&h, "</tbody></table>");
	pager(&h, "/console/dead?", page, n > CONSOLE_PAGE_ROWS);
	html_page_end(&h);
	html_send(&h, c->r->resp, 200);
	html_free(&h);
	PQclear(res);
}

/* ---- webhook deliveries ---- */

static const char *const delivery_filters[] = {"failing", "all",       "pending",
                                               "failed",  "succeeded", NULL};

/* The attempts of a delivery (a JSON array, newest first) in a disclosure. */
static void attempts(struct html *h, const char *json)
{
	json_t *list = json_loads(json ? json : "[]", 0, NULL);
	size_t i;
	json_t *a;
	html_f(
	    h,
	    "<details><summary>Attempts</summary><table><thead><tr>"
	    "<th scope=\"col\">At</th><th scope=\"col\">HTTP status</th>"
	    "<th scope=\"col\">Duration (ms)</th><th scope=\"col\">Error</th></tr></thead><tbody>");
	json_array_foreach(list, i, a)
	{
		char code[24] = "—", ms[24] = "";
		if (json_is_integer(json_object_get(a, "http_status")))
			snprintf(code, sizeof(code), "%lld",
			         (long long)json_integer_value(json_object_get(a, "http_status")));
		snprintf(ms, sizeof(ms), "%lld",
		         (long long)json_integer_value(json_object_get(a, "duration_ms")));
		html_f(h, "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
		       json_string_value(json_object_get(a, "at")), code, ms,
		       json_string_value(json_object_get(a, "error")));
	}
	if (json_array_size(list) == 0)
		html_f(h, "<tr><td colspan=\"4\">None yet.</td></tr>");
	html_f(h, "</tbody></table></details>");
	json_decref(list);
}

static void delivery_row(struct html *h, struct console_req *c, const PGresult *res, int i)
{
	html_f(h,
	       "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td>"
	       "<td><span class=\"st st-{}\">{}</span></td><td class=\"n\">{}</td><td>{}</td><td>",
	       val(res, i, 7), val(res, i, 1), val(res, i, 2), val(res, i, 3), val(res, i, 4),
	       val(res, i, 4), val(res, i, 5), val(res, i, 6) ? val(res, i, 6) : "—");
	attempts(h, val(res, i, 9));
	html_f(h, "</td><td>");
	if (strcmp(val(res, i, 8), "t") == 0) {
		html_f(h, "Endpoint disabled");
	} else {
		char action[96];
		snprintf(action, sizeof(action), "/console/deliveries/%s/retry", val(res, i, 0));
		html_action(h, action, c->csrf, "Re-send");
	}
	html_f(h, "</td></tr>\n");
}

void console_webhooks(struct console_req *c)
{
	const char *filter = one_of(c, "status", delivery_filters);
	filter = filter ? filter : "failing";
	char offset[24], limit[24];
	long page = page_of(c, offset, limit);
	const char *params[] = {filter, offset, limit};
	PGresult *res = console_query(c, &stmt_deliveries, params);
	if (!res)
		return;
	struct html h;
	html_init(&h);
	html_page_start(&h, "Webhook deliveries", HTML_NAV_WEBHOOKS, c->operator, c->csrf);
	notice(&h, c);
	html_f(&h, "<form method=\"get\" class=\"filters\"><label for=\"status\">Show</label>"
	           "<select id=\"status\" name=\"status\">");
	options(&h, delivery_filters, filter);
	html_f(&h, "</select><button type=\"submit\">Filter</button></form>"
	           "<p><em>failing</em>: failed, or pending after a failed attempt. Re-send sends "
	           "the delivery again at once with the same <code>webhook-id</code>.</p>"
	           "<table><caption>Deliveries, newest first</caption><thead><tr>"
	           "<th scope=\"col\">Created</th><th scope=\"col\">Organization</th>"
	           "<th scope=\"col\">Endpoint</th><th scope=\"col\">Event</th>"
	           "<th scope=\"col\">Status</th><th scope=\"col\">Attempts</th>"
	           "<th scope=\"col\">Next attempt</th><th scope=\"col\">History</th>"
	           "<th scope=\"col\">Action</th></tr></thead><tbody>\n");
	int n = PQntuples(res);
	for (int i = 0; i < n && i < CONSOLE_PAGE_ROWS; i++)
		delivery_row(&h, c, res, i);
	if (n == 0)
		html_f(&h, "<tr><td colspan=\"9\">No deliveries match.</td></tr>");
	html_f(&h, "</tbody></table>");
	char base[64];
	snprintf(base, sizeof(base), "/console/webhooks?status=%s&", filter);
	pager(&h, base, page, n > CONSOLE_PAGE_ROWS);
	html_page_end(&h);
	html_send(&h, c->r->resp, 200);
	html_free(&h);
	PQclear(res);
}
