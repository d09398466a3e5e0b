/*
 * test_ops.c - what operators and list clients rely on: every metric that
 * docs/openapi.yaml names is exposed on both the API port and the worker's
 * metrics port, task outcomes are counted, and a session's people page
 * like Livestorm's lists.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>

#include "support.h"

TestSuite(ops, .timeout = 180);

static const char *const contract_metrics[] = {
    "bulkreg_http_requests_total",   "bulkreg_http_request_duration_seconds",
    "bulkreg_tasks_processed_total", "bulkreg_task_duration_seconds",
    "bulkreg_queue_messages",        "bulkreg_queue_consumers",
    "bulkreg_jobs_in_flight",        "bulkreg_webhook_deliveries_total",
};

static void check_metrics(const char *base, const char *who)
{
	char url[128];
	struct t_resp r;
	snprintf(url, sizeof(url), "%s/metrics", base);
	t_http(&r, "GET", url, NULL, NULL, NULL);
	cr_assert_eq(r.status, 200, "%s /metrics: %ld", who, r.status);
	for (size_t i = 0; i < sizeof(contract_metrics) / sizeof(contract_metrics[0]); i++) {
		char type[128];
		snprintf(type, sizeof(type), "# TYPE %s ", contract_metrics[i]);
		cr_assert_not_null(strstr(r.body, type), "%s /metrics lacks %s", who,
		                   contract_metrics[i]);
	}
	cr_assert_not_null(strstr(r.body, "bulkreg_queue_messages{queue=\"bulkreg.tasks\"}"),
	                   "%s /metrics has no bulkreg.tasks depth", who);
	/* The test stack's single node holds the one replica (management API on). */
	cr_expect_not_null(strstr(r.body, "bulkreg_queue_members{queue=\"bulkreg.tasks\"} 1\n"),
	                   "%s /metrics has no member count", who);
	cr_expect_not_null(
	    strstr(r.body, "bulkreg_queue_members_online{queue=\"bulkreg.tasks\"} 1\n"),
	    "%s /metrics has no online member count", who);
	/* Before anything happened, every outcome is there at 0 (a rate() of it is 0), and
	 * /readyz has its 503 series (the start-up probes may have counted some). */
	static const char *const zero[] = {
	    "bulkreg_tasks_processed_total{outcome=\"succeeded\"} 0\n",
	    "bulkreg_tasks_processed_total{outcome=\"failed\"} 0\n",
	    "bulkreg_tasks_processed_total{outcome=\"internal_error\"} 0\n",
	    "bulkreg_webhook_deliveries_total{outcome=\"success\"} 0\n",
	    "bulkreg_webhook_deliveries_total{outcome=\"failed_permanently\"} 0\n",
	    "bulkreg_http_requests_total{route=\"/readyz\",code=\"503\"} ",
	};
	for (size_t i = 0; i < sizeof(zero) / sizeof(zero[0]); i++)
		cr_expect_not_null(strstr(r.body, zero[i]), "%s /metrics lacks %s", who, zero[i]);
	cr_expect_null(strstr(r.body, "\nbulkreg_tasks_processed_total 0"),
	               "%s /metrics has an unlabelled outcome counter", who);
	/* The deployment-wide gauges say how to aggregate them across processes. */
	static const char *const shared[] = {"bulkreg_queue_messages", "bulkreg_queue_consumers",
	                                     "bulkreg_jobs_in_flight", "bulkreg_queue_members",
	                                     "bulkreg_queue_members_online"};
	for (size_t i = 0; i < sizeof(shared) / sizeof(shared[0]); i++) {
		char help[96];
		snprintf(help, sizeof(help), "# HELP %s ", shared[i]);
		const char *h = strstr(r.body, help);
		const char *eol = h ? strchr(h, '\n') : NULL;
		const char *max = h ? strstr(h, "aggregate with max()") : NULL;
		cr_expect(h && eol && max && max < eol, "%s: HELP of %s does not say max()", who,
		          shared[i]);
	}
	t_resp_free(&r);
}

struct done {
	PGconn *db;
	const char *job;
};

static bool job_done(void *arg)
{
	struct done *d = arg;
	const char *p[] = {d->job};
	return t_sql_long(d->db,
	                  "SELECT count(*) FROM jobs WHERE id = $1 AND status <> 'processing'", 1,
	                  p) == 1;
}

Test(ops, metrics_and_people_pages)
{
	PGconn *db = t_db();
	struct t_org org;
	t_org_new(&org);
	struct t_proc api, worker;
	t_api_start(&api, NULL);
	t_worker_start(&worker, NULL);
	char sid[37], url[512], body[8192];
	struct t_resp r;
	check_metrics(api.url, "API");
	check_metrics(worker.url, "worker");
	/* The API's routes are there before their first request. */
	snprintf(url, sizeof(url), "%s/metrics", api.url);
	t_http(&r, "GET", url, NULL, NULL, NULL);
	cr_expect_not_null(
	    strstr(r.body, "bulkreg_http_requests_total{route=\"/v1/sessions/:id/people/bulk\","
	                   "code=\"400\"} 0\n"),
	    "the API's routes are not pre-initialised");
	t_resp_free(&r);

	t_session_new(api.url, org.token, "{\"title\":\"Ops\"}", sid);
	size_t len = (size_t)snprintf(body, sizeof(body),
	                              "{\"data\":{\"type\":\"jobs\",\"attributes\":{\"tasks\":[");
	for (int i = 0; i < 25; i++)
		len += (size_t)snprintf(body + len, sizeof(body) - len,
		                        "%s{\"attributes\":{\"email\":\"ops%d@example.com\"}}",
		                        i ? "," : "", i);
	snprintf(body + len, sizeof(body) - len, "]}}}");
	snprintf(url, sizeof(url), "%s/v1/sessions/%s/people/bulk", api.url, sid);
	t_http(&r, "POST", url, org.token, body, NULL);
	cr_assert_eq(r.status, 202, "bulk: %ld %s", r.status, r.body);
	char job[37];
	snprintf(job, sizeof(job), "%s",
	         json_string_value(json_object_get(json_object_get(r.json, "data"), "id")));
	t_resp_free(&r);
	struct done d = {db, job};
	cr_assert(t_poll(job_done, &d, 60000), "job did not finish");

	/* The worker counted the outcomes it committed. */
	snprintf(url, sizeof(url), "%s/metrics", worker.url);
	t_http(&r, "GET", url, NULL, NULL, NULL);
	cr_assert_not_null(strstr(r.body, "bulkreg_tasks_processed_total{outcome=\"succeeded\"}"),
	                   "no succeeded outcome counted");
	t_resp_free(&r);

	/* 25 people, 10 a page: 10, 10, 5, then past the end. */
	static const size_t sizes[] = {10, 10, 5};
	for (int pg = 0; pg < 3; pg++) {
		snprintf(url, sizeof(url), "%s/v1/sessions/%s/people?page[number]=%d&page[size]=10",
		         api.url, sid, pg);
		t_http(&r, "GET", url, org.token, NULL, NULL);
		cr_assert_eq(r.status, 200, "people page %d: %ld", pg, r.status);
		json_t *meta = json_object_get(r.json, "meta");
		cr_assert_eq(json_integer_value(json_object_get(meta, "record_count")), 25);
		cr_assert_eq(json_integer_value(json_object_get(meta, "page_count")), 3);
		cr_assert_eq(json_array_size(json_object_get(r.json, "data")), sizes[pg]);
		if (pg == 2)
			cr_assert(json_is_null(json_object_get(meta, "next_page")));
		t_resp_free(&r);
	}
	snprintf(url, sizeof(url), "%s/v1/sessions/%s/people?page[number]=3&page[size]=10", api.url,
	         sid);
	t_http(&r, "GET", url, org.token, NULL, NULL);
	cr_assert_eq(r.status, 400);
	cr_assert_str_eq(json_string_value(json_object_get(
	                     json_array_get(json_object_get(r.json, "errors"), 0), "code")),
	                 "invalid_page");
	t_resp_free(&r);
	t_check_invariants(db);
	cr_assert_eq(t_proc_stop(&worker, SIGTERM, 20000), 0);
	cr_assert_eq(t_proc_stop(&api, SIGTERM, 20000), 0);
	PQfinish(db);
}

/* Every answer carries an X-Request-Id: a client's own when it is sane, else a fresh one. */
Test(ops, request_ids)
{
	struct t_proc api;
	t_api_start(&api, NULL);
	char url[256];
	snprintf(url, sizeof(url), "%s/healthz", api.url);
	char seen[20][64];
	for (int i = 0; i < 20; i++) {
		struct t_resp r;
		t_http(&r, "GET", url, NULL, NULL, NULL);
		const char *id = t_resp_header(&r, "X-Request-Id");
		cr_assert_not_null(id, "no X-Request-Id");
		cr_assert_eq(strlen(id), 32, "request id %s", id);
		cr_assert_eq(strspn(id, "0123456789abcdef"), 32, "request id %s", id);
		for (int k = 0; k < i; k++)
			cr_assert_str_neq(seen[k], id, "request id %s given twice", id);
		snprintf(seen[i], sizeof(seen[i]), "%s", id);
		t_resp_free(&r);
	}
	static const char *const mine[] = {"X-Request-Id: trace-42_A", NULL};
	static const char *const odd[] = {"X-Request-Id: no spaces allowed", NULL};
	struct t_resp r;
	t_http(&r, "GET", url, NULL, NULL, mine);
	cr_expect_str_eq(t_resp_header(&r, "X-Request-Id"), "trace-42_A");
	t_resp_free(&r);
	t_http(&r, "GET", url, NULL, NULL, odd);
	cr_expect_eq(strlen(t_resp_header(&r, "X-Request-Id")), 32);
	t_resp_free(&r);
	t_proc_stop(&api, SIGTERM, 10000);
}

/*
 * The queue's members come from the management API: bulkreg-admin status
 * prints them; where the API cannot be reached, status says "unknown" and
 * still succeeds, and /metrics leaves the member series out (no sample
 * beats a wrong one) but serves the rest.
 */
Test(ops, members_from_the_management_api)
{
	char out[2048] = "";
	const char *status[] = {"status", NULL};
	cr_assert_eq(t_admin(out, sizeof(out), status), 0, "bulkreg-admin status: %s", out);
	cr_expect_not_null(strstr(out, "queue bulkreg.tasks members 1 online 1\n"), "%s", out);

	char closed[64];
	snprintf(closed, sizeof(closed), "BULKREG_MQ_MANAGEMENT_URL=http://127.0.0.1:%d",
	         t_free_port());
	const char *env[] = {closed, NULL};
	int rc = t_run("bulkreg-admin", status, env, out, sizeof(out), NULL, 0, 60000);
	cr_assert_eq(rc, 0, "status without a management API exited %d: %s", rc, out);
	cr_expect_not_null(strstr(out, "queue bulkreg.tasks members unknown ("), "%s", out);

	struct t_proc api;
	t_api_start(&api, env);
	char url[128];
	struct t_resp r;
	snprintf(url, sizeof(url), "%s/metrics", api.url);
	t_http(&r, "GET", url, NULL, NULL, NULL);
	cr_assert_eq(r.status, 200, "/metrics without a management API: %ld", r.status);
	cr_expect_null(strstr(r.body, "bulkreg_queue_members{"), "a member count out of nowhere");
	cr_expect_not_null(strstr(r.body, "bulkreg_queue_messages{queue=\"bulkreg.tasks\"}"),
	                   "the other gauges went missing too");
	t_resp_free(&r);
	cr_assert_eq(t_proc_stop(&api, SIGTERM, 20000), 0);
}
