/*
 * test_pipeline.c - the bulk registration pipeline end to end: the real
 * bulkreg-api, two bulkreg-worker processes and a webhook receiver.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "support.h"

static const char *const fast_env[] = {"BULKREG_WEBHOOK_ALLOW_PRIVATE=1",
                                       "BULKREG_WEBHOOK_RETRY_SCHEDULE=100ms,200ms,400ms",
                                       "BULKREG_WEBHOOK_TIMEOUT_MS=2000", NULL};

struct job_done {
	const char *url;
	const char *token;
};

static bool job_terminal(void *ctx)
{
	struct job_done *d = ctx;
	struct t_resp r;
	t_http(&r, "GET", d->url, d->token, NULL, NULL);
	bool done =
	    r.status == 200 &&
	    strcmp(json_string_value(json_object_get(
	               json_object_get(json_object_get(r.json, "data"), "attributes"), "status")),
	           "processing") != 0;
	t_resp_free(&r);
	return done;
}

static long attr_int(json_t *job, const char *key)
{
	return (long)json_integer_value(json_object_get(json_object_get(job, "attributes"), key));
}

struct hook_wait {
	t_receiver *rc;
	int n;
};

static bool hooks_at_least(void *ctx)
{
	struct hook_wait *w = ctx;
	return t_receiver_count(w->rc) >= w->n;
}

/* Creates a session; returns its id in id (37 bytes). */
static void make_session(const char *api, const struct t_org *org, const char *attrs, char *id)
{
	t_session_new(api, org->token, attrs, id);
}

Test(pipeline, fifty_tasks_with_one_duplicate)
{
	PGconn *db = t_db();
	struct t_org org;
	t_org_new(&org);
	t_receiver *rc = t_receiver_start();
	struct t_proc api, w1, w2;
	t_api_start(&api, fast_env);
	t_worker_start(&w1, fast_env);
	t_worker_start(&w2, fast_env);
	char base[64], url[512], body[16384];
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", api.port);

	/* A webhook endpoint for job.ended. */
	struct t_resp r;
	snprintf(url, sizeof(url), "%s/v1/webhooks", base);
	snprintf(body, sizeof(body),
	         "{\"data\":{\"type\":\"webhooks\",\"attributes\":{\"url\":\"%s\","
	         "\"events\":[\"job.ended\"]}}}",
	         t_receiver_url(rc));
	t_http(&r, "POST", url, org.token, body, NULL);
	cr_assert_eq(r.status, 201, "webhook create: %ld %s", r.status, r.body);
	char secret[128];
	snprintf(secret, sizeof(secret), "%s",
	         json_string_value(json_object_get(
	             json_object_get(json_object_get(r.json, "data"), "attributes"), "secret")));
	cr_assert(strncmp(secret, "whsec_", 6) == 0);
	t_resp_free(&r);

	char sid[37];
	make_session(base, &org, "{\"title\":\"Pipeline\",\"capacity\":100}", sid);

	/* One person registered synchronously. */
	snprintf(url, sizeof(url), "%s/v1/sessions/%s/people", base, sid);
	t_http(&r, "POST", url, org.token,
	       "{\"data\":{\"type\":\"people\",\"attributes\":{\"email\":\"dup@example.com\","
	       "\"first_name\":\"Ada\"}}}",
	       NULL);
	cr_assert_eq(r.status, 201, "single registration: %ld %s", r.status, r.body);
	t_resp_free(&r);

	/* 50 tasks; task 17 is that person again, in other case. */
	size_t len = (size_t)snprintf(body, sizeof(body),
	                              "{\"type\":\"jobs\",\"data\":{\"attributes\":{\"tasks\":[");
	for (int i = 0; i < 50; i++) {
		if (i == 17)
			len += (size_t)snprintf(body + len, sizeof(body) - len,
			                        "%s{\"attributes\":{\"email\":\"DUP@example.com\","
			                        "\"reference\":\"row-%d\"}}",
			                        i ? "," : "", i);
		else
			len += (size_t)snprintf(body + len, sizeof(body) - len,
			                        "%s{\"attributes\":{\"email\":\"p%d@example.com\","
			                        "\"first_name\":\"P%d\",\"reference\":\"row-%d\"}}",
			                        i ? "," : "", i, i, i);
	}
	snprintf(body + len, sizeof(body) - len, "]}}}");
	snprintf(url, sizeof(url), "%s/v1/sessions/%s/people/bulk", base, sid);
	t_http(&r, "POST", url, org.token, body, NULL);
	cr_assert_eq(r.status, 202, "bulk: %ld %s", r.status, r.body);
	json_t *job = json_object_get(r.json, "data");
	char job_id[37];
	cr_assert_not_null(json_string_value(json_object_get(job, "id")));
	snprintf(job_id, sizeof(job_id), "%s", json_string_value(json_object_get(job, "id")));
	char loc[128];
	snprintf(loc, sizeof(loc), "/v1/jobs/%s", job_id);
	cr_assert_str_eq(r.location, loc);
	cr_assert_eq(attr_int(job, "total_items"), 50);
	char job_url[256];
	snprintf(job_url, sizeof(job_url), "%s%s", base, loc);
	t_resp_free(&r);

	struct job_done d = {job_url, org.token};
	cr_assert(t_poll(job_terminal, &d, 30000), "job did not finish");
	t_http(&r, "GET", job_url, org.token, NULL, NULL);
	job = json_object_get(r.json, "data");
	cr_assert_str_eq(
	    json_string_value(json_object_get(json_object_get(job, "attributes"), "status")),
	    "failed");
	cr_assert_eq(attr_int(job, "total_success"), 49);
	cr_assert_eq(attr_int(job, "total_fail"), 1);
	cr_assert_eq(attr_int(job, "total_processed_items"), 50);

	/* Exactly one job.ended, signed, whose data equals GET /v1/jobs/:id. */
	struct hook_wait hw = {rc, 1};
	cr_assert(t_poll(hooks_at_least, &hw, 10000), "no job.ended received");
	struct t_hook hook;
	cr_assert(t_receiver_get(rc, 0, &hook));
	cr_assert(t_hook_verify(&hook, secret), "signature does not verify");
	json_t *event = json_loads(hook.body, 0, NULL);
	cr_assert_not_null(event);
	cr_assert_str_eq(json_string_value(json_object_get(event, "type")), "job.ended");
	cr_assert(json_equal(json_object_get(event, "data"), job),
	          "event data differs from GET /v1/jobs/:id");
	json_decref(event);
	free(hook.body);
	t_resp_free(&r);

	/* 207 tasks, in order, references echoed, the duplicate coded. */
	for (int pg = 0; pg < 3; pg++) {
		snprintf(url, sizeof(url), "%s/tasks?page[number]=%d&page[size]=20", job_url, pg);
		t_http(&r, "GET", url, org.token, NULL, NULL);
		cr_assert_eq(r.status, 207, "tasks page %d: %ld", pg, r.status);
		json_t *data = json_object_get(r.json, "data");
		json_t *meta = json_object_get(r.json, "meta");
		cr_assert_eq(json_integer_value(json_object_get(meta, "record_count")), 50);
		cr_assert_eq(json_integer_value(json_object_get(meta, "page_count")), 3);
		cr_assert_eq(json_array_size(data), pg < 2 ? 20u : 10u);
		for (size_t i = 0; i < json_array_size(data); i++) {
			json_t *t = json_array_get(data, i);
			long idx = pg * 20 + (long)i;
			char ref[32];
			snprintf(ref, sizeof(ref), "row-%ld", idx);
			cr_assert_eq(json_integer_value(json_object_get(t, "index")), idx);
			cr_assert_str_eq(json_string_value(json_object_get(t, "reference")), ref);
			const char *st = json_string_value(json_object_get(t, "status"));
			if (idx == 17) {
				cr_assert_str_eq(st, "failed");
				json_t *err = json_array_get(json_object_get(t, "errors"), 0);
				cr_assert_str_eq(json_string_value(json_object_get(err, "code")),
				                 "already_registered");
				cr_assert(json_is_null(json_object_get(t, "data")));
				cr_assert(json_is_object(json_object_get(t, "input")));
			} else {
				cr_assert_str_eq(st, "succeeded");
				cr_assert_eq(json_array_size(json_object_get(t, "errors")), 0u);
				json_t *pa =
				    json_object_get(json_object_get(t, "data"), "attributes");
				const char *join =
				    json_string_value(json_object_get(pa, "join_url"));
				cr_assert(join &&
				          strncmp(join, "https://join.example.com/s/", 27) == 0);
				cr_assert_geq(strlen(join + 27), 22u);
			}
		}
		t_resp_free(&r);
	}
	snprintf(url, sizeof(url), "%s/tasks?page[number]=3&page[size]=20", job_url);
	t_http(&r, "GET", url, org.token, NULL, NULL);
	cr_assert_eq(r.status, 400);
	t_resp_free(&r);
	snprintf(url, sizeof(url), "%s/tasks?filter[status]=failed", job_url);
	t_http(&r, "GET", url, org.token, NULL, NULL);
	cr_assert_eq(r.status, 207);
	cr_assert_eq(json_array_size(json_object_get(r.json, "data")), 1u);
	/* The filter reads the job's tasks by index, checking each one's status. */
	cr_assert_str_eq(json_string_value(json_object_get(
	                     json_array_get(json_object_get(r.json, "data"), 0), "status")),
	                 "failed");
	cr_assert_eq(
	    json_integer_value(json_object_get(json_object_get(r.json, "meta"), "record_count")),
	    1);
	t_resp_free(&r);

	/* Still exactly one event after a moment more. */
	cr_assert_eq(t_receiver_count(rc), 1);
	const char *p1[] = {job_id};
	cr_assert_eq(t_sql_long(db,
	                        "SELECT count(*) FROM webhook_events WHERE job_id = $1 AND "
	                        "type = 'job.ended'",
	                        1, p1),
	             1);
	t_check_invariants(db);
	cr_assert_eq(t_proc_stop(&w1, SIGTERM, 20000), 0);
	cr_assert_eq(t_proc_stop(&w2, SIGTERM, 20000), 0);
	cr_assert_eq(t_proc_stop(&api, SIGTERM, 20000), 0);
	t_receiver_stop(rc);
	PQfinish(db);
}
