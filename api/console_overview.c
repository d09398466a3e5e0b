/*
 * console_overview.c - the console's overview page and the JSON it polls
 * (docs/console.md). One object holds every figure: the database's
 * (console_overview(), sql/functions/console.sql), the broker's queue
 * figures and this API process's readiness (ops.h). The page renders it
 * once on the server; console.js fetches /console/overview.json every few
 * seconds and writes the same figures into the elements named by their
 * data-k paths, and draws the charts. Stateless; thread-safe.
 */
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "console.h"
#include "log.h"

static const db_stmt stmt_overview = {"console_overview", "SELECT console_overview()", 0};

/*
 * The broker's figures of both queues: depth and consumers (a passive
 * declare), the task queue's replicas and how many are online (the
 * management API); null where the broker cannot be asked.
 */
static json_t *queues(struct console_req *c)
{
	uint32_t s[2][2];
	struct mq_members m;
	bool ok = ops_queues(c->r->app->ops, s);
	bool members = ops_queue_members(c->r->app->ops, &m);
	return json_pack("{s:{s:o,s:o,s:o,s:o},s:{s:o}}", "tasks", "messages",
	                 ok ? json_integer(s[0][0]) : json_null(), "consumers",
	                 ok ? json_integer(s[0][1]) : json_null(), "replicas",
	                 members ? json_integer(m.members) : json_null(), "replicas_online",
	                 members ? json_integer(m.online) : json_null(), "dead", "messages",
	                 ok ? json_integer(s[1][0]) : json_null());
}

/* Totals of the hour's series, for the page without JavaScript. */
static json_t *last_hour(const json_t *series)
{
	json_int_t sum[2] = {0, 0};
	const char *keys[2] = {"succeeded", "failed"};
	for (int k = 0; k < 2; k++) {
		size_t i;
		json_t *v;
		json_array_foreach(json_object_get(series, keys[k]), i, v) sum[k] +=
		    json_integer_value(v);
	}
	return json_pack("{s:I,s:I}", "succeeded", sum[0], "failed", sum[1]);
}

/* The overview object (a new reference), or NULL with the 503 page sent. */
static json_t *overview(struct console_req *c)
{
	PGresult *res = console_query(c, &stmt_overview, NULL);
	if (!res)
		return NULL;
	json_t *o = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
	PQclear(res);
	bool db_ok, mq_ok, proc_ok;
	bool ready = ops_readiness(c->r->app->ops, &db_ok, &mq_ok, &proc_ok);
	if (!o || json_object_set_new(o, "queues", queues(c)) != 0 ||
	    json_object_set_new(o, "last_hour", last_hour(json_object_get(o, "series"))) != 0 ||
	    json_object_set_new(o, "api",
	                        json_pack("{s:b,s:b,s:b}", "ready", ready, "database", db_ok,
	                                  "broker", mq_ok)) != 0) {
		json_decref(o);
		console_message(c, 503, "Unavailable", "Out of memory.");
		return NULL;
	}
	return o;
}

void console_overview_json(struct console_req *c)
{
	json_t *o = overview(c);
	if (!o)
		return;
	char *text = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (!text) {
		http_resp_error(c->r->resp, 503, "unavailable", "Service unavailable",
		                "Out of memory.");
		return;
	}
	html_security_headers(c->r->resp);
	http_resp_json(c->r->resp, 200, text);
	free(text);
}

/* The value at a dotted path of o as text: a number, up/down, or "unknown" for null. */
static const char *text_at(const json_t *o, const char *path, char buf[32])
{
	char key[64];
	const json_t *v = o;
	for (const char *p = path; v && *p;) {
		size_t n = strcspn(p, ".");
		snprintf(key, sizeof(key), "%.*s", (int)n, p);
		v = json_object_get(v, key);
		p += n + (p[n] == '.');
	}
	if (json_is_integer(v))
		snprintf(buf, 32, "%lld", (long long)json_integer_value(v));
	else if (json_is_boolean(v))
		snprintf(buf, 32, "%s", json_is_true(v) ? "up" : "down");
	else
		snprintf(buf, 32, "%s", json_is_string(v) ? json_string_value(v) : "unknown");
	return buf;
}

/* One figure: its label and the value console.js keeps current (data-k). */
static void figure(struct html *h, const json_t *o, const char *path, const char *label)
{
	char buf[32];
	html_f(h, "<div><dt>{}</dt><dd data-k=\"{}\">{}</dd></div>", label, path,
	       text_at(o, path, buf));
}

static void endpoint_rows(struct html *h, const json_t *list)
{
	size_t i;
	json_t *e;
	json_array_foreach(list, i, e)
	{
		char failed[32], retrying[32];
		html_f(h,
		       "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td class=\"n\">{}</td>"
		       "<td class=\"n\">{}</td></tr>",
		       json_string_value(json_object_get(e, "organization")),
		       json_string_value(json_object_get(e, "url")),
		       json_is_true(json_object_get(e, "disabled")) ? "disabled" : "enabled",
		       text_at(e, "failed", failed), text_at(e, "retrying", retrying));
	}
	if (json_array_size(list) == 0)
		html_f(h, "<tr><td colspan=\"5\">None.</td></tr>");
}

static void process_rows(struct html *h, const json_t *o)
{
	char db[32], mq[32];
	html_f(h,
	       "<tr><td>bulkreg-api (this process)</td><td>{}</td><td>database {}, broker {}</td>"
	       "<td>now</td></tr>",
	       json_is_true(json_object_get(json_object_get(o, "api"), "ready")) ? "ready"
	                                                                         : "not ready",
	       text_at(o, "api.database", db), text_at(o, "api.broker", mq));
	size_t i;
	json_t *w;
	json_array_foreach(json_object_get(o, "workers"), i, w)
	{
		const char *state = json_is_true(json_object_get(w, "silent"))  ? "silent"
		                    : json_is_true(json_object_get(w, "ready")) ? "ready"
		                                                                : "not ready";
		char pid[32], port[32];
		html_f(h,
		       "<tr><td>bulkreg-worker {} pid {}</td><td>{}</td><td>metrics port {}</td>"
		       "<td>{}</td></tr>",
		       json_string_value(json_object_get(w, "host")), text_at(w, "pid", pid), state,
		       text_at(w, "metrics_port", port),
		       json_string_value(json_object_get(w, "seen_at")));
	}
}

static void sections(struct html *h, const json_t *o)
{
	html_f(h, "<section aria-labelledby=\"h-queue\"><h2 id=\"h-queue\">Queue</h2>"
	          "<dl class=\"figures\">");
	figure(h, o, "queues.tasks.messages", "Messages in bulkreg.tasks");
	figure(h, o, "queues.tasks.consumers", "Consumers");
	figure(h, o, "queues.tasks.replicas", "Replicas");
	figure(h, o, "queues.tasks.replicas_online", "Replicas online");
	figure(h, o, "queues.dead.messages", "Messages in bulkreg.tasks.dead");
	html_f(h, "</dl></section><section aria-labelledby=\"h-jobs\"><h2 id=\"h-jobs\">Jobs</h2>"
	          "<dl class=\"figures\">");
	figure(h, o, "jobs_in_flight", "Jobs in flight");
	figure(h, o, "tasks_queued", "Tasks not yet finished");
	figure(h, o, "dead_lettered", "Dead-lettered tasks");
	html_f(h, "</dl><p><a href=\"/console/jobs?status=processing\">Jobs in flight</a> · "
	          "<a href=\"/console/dead\">Dead letters</a></p></section>"
	          "<section aria-labelledby=\"h-rate\"><h2 id=\"h-rate\">Tasks, last hour</h2>"
	          "<dl class=\"figures\">");
	figure(h, o, "last_hour.succeeded", "Succeeded");
	figure(h, o, "last_hour.failed", "Failed");
	html_f(
	    h,
	    "</dl><div class=\"charts\">"
	    "<figure><svg id=\"chart-rate\" class=\"chart\" role=\"img\" viewBox=\"0 0 600 160\" "
	    "aria-label=\"Tasks per second, per minute of the last hour\"></svg>"
	    "<figcaption>Tasks per second (each minute's average)</figcaption></figure>"
	    "<figure><svg id=\"chart-failed\" class=\"chart\" role=\"img\" "
	    "viewBox=\"0 0 600 160\" aria-label=\"Failed tasks per minute of the last hour\">"
	    "</svg><figcaption>Failed tasks per minute</figcaption></figure></div>"
	    "<noscript><p>The charts need JavaScript; the totals above are the same "
	    "figures.</p></noscript></section>"
	    "<section aria-labelledby=\"h-hooks\"><h2 id=\"h-hooks\">Webhooks</h2>"
	    "<dl class=\"figures\">");
	figure(h, o, "webhook_backlog", "Deliveries pending");
	figure(h, o, "webhook_failed_day", "Deliveries failed, last 24 h");
	html_f(h, "</dl><table><caption>Failing endpoints</caption><thead><tr>"
	          "<th scope=\"col\">Organization</th><th scope=\"col\">URL</th>"
	          "<th scope=\"col\">State</th><th scope=\"col\">Failed, 24 h</th>"
	          "<th scope=\"col\">Being retried</th></tr></thead><tbody id=\"endpoints\">");
	endpoint_rows(h, json_object_get(o, "failing_endpoints"));
	html_f(h, "</tbody></table><p><a href=\"/console/webhooks\">Failing deliveries</a></p>"
	          "</section><section aria-labelledby=\"h-procs\"><h2 id=\"h-procs\">Processes</h2>"
	          "<table><caption>Readiness (workers report every sweep interval)</caption>"
	          "<thead><tr><th scope=\"col\">Process</th><th scope=\"col\">State</th>"
	          "<th scope=\"col\">Detail</th><th scope=\"col\">Last seen</th></tr></thead>"
	          "<tbody id=\"processes\">");
	process_rows(h, o);
	html_f(h, "</tbody></table></section>");
}

void console_overview(struct console_req *c)
{
	json_t *o = overview(c);
	if (!o)
		return;
	struct html h;
	html_init(&h);
	html_page_start(&h, "Overview", HTML_NAV_OVERVIEW, c->operator, c->csrf);
	char now[32];
	html_f(&h,
	       "<p class=\"updated\">Figures as of <time data-k=\"now\">{}</time>; "
	       "they refresh every 5 seconds.</p>",
	       text_at(o, "now", now));
	sections(&h, o);
	html_page_end(&h);
	html_send(&h, c->r->resp, 200);
	html_free(&h);
	json_decref(o);
}
