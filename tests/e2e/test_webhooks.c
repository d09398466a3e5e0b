/*
 * test_webhooks.c - webhook delivery (docs/openapi.yaml Webhooks; docs/guarantees.md §3): retries
 * on the schedule with one stable webhook-id, every attempt recorded, a
 * receiver that hangs does not hold up anybody else's deliveries, and each
 * endpoint gets the events it subscribed to and no others.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "support.h"

TestSuite(webhooks, .timeout = 180);

#define ENDED   "[\"job.ended\"]"
#define CREATED "[\"job.created\"]"

static const char *const env[] = {"BULKREG_WEBHOOK_ALLOW_PRIVATE=1",
                                  "BULKREG_WEBHOOK_RETRY_SCHEDULE=200ms,200ms,200ms",
                                  "BULKREG_WEBHOOK_TIMEOUT_MS=2000", NULL};

/* Creates an endpoint for url and events (a JSON array) and returns its secret and id. */
static void make_endpoint(const char *base, const struct t_org *org, const char *url,
                          const char *events, char *secret, char *id)
{
	char u[256], body[512];
	struct t_resp r;
	snprintf(u, sizeof(u), "%s/v1/webhooks", base);
	snprintf(body, sizeof(body),
	         "{\"data\":{\"type\":\"webhooks\",\"attributes\":{\"url\":\"%s\","
	         "\"events\":%s}}}",
	         url, events);
	t_http(&r, "POST", u, org->token, body, NULL);
	cr_assert_eq(r.status, 201, "webhook: %ld %s", r.status, r.body);
	json_t *data = json_object_get(r.json, "data");
	snprintf(secret, 128, "%s",
	         json_string_value(json_object_get(json_object_get(data, "attributes"), "secret")));
	snprintf(id, 37, "%s", json_string_value(json_object_get(data, "id")));
	t_resp_free(&r);
}

/* A session with a one-person job posted to it. */
static void post_small_job(const char *base, const struct t_org *org)
{
	char url[256], sid[37];
	struct t_resp r;
	snprintf(url, sizeof(url), "%s/v1/sessions", base);
	t_http(&r, "POST", url, org->token,
	       "{\"data\":{\"type\":\"sessions\",\"attributes\":{\"title\":\"Hooks\"}}}", NULL);
	cr_assert_eq(r.status, 201);
	snprintf(sid, sizeof(sid), "%s",
	         json_string_value(json_object_get(json_object_get(r.json, "data"), "id")));
	t_resp_free(&r);
	snprintf(url, sizeof(url), "%s/v1/sessions/%s/people/bulk", base, sid);
	t_http(&r, "POST", url, org->token,
	       "{\"data\":{\"type\":\"jobs\",\"attributes\":{\"tasks\":[{\"attributes\":"
	       "{\"email\":\"hook@example.com\"}}]}}}",
	       NULL);
	cr_assert_eq(r.status, 202);
	t_resp_free(&r);
}

struct count_wait {
	t_receiver *rc;
	int n;
};

static bool received(void *ctx)
{
	struct count_wait *w = ctx;
	return t_receiver_count(w->rc) >= w->n;
}

/* The end of every test: the invariants hold, the API and worker exit 0. */
static void finish(PGconn *db, struct t_proc *api, struct t_proc *worker)
{
	t_check_invariants(db);
	cr_assert_eq(t_proc_stop(worker, SIGTERM, 30000), 0);
	cr_assert_eq(t_proc_stop(api, SIGTERM, 20000), 0);
	PQfinish(db);
}

Test(webhooks, retried_until_accepted_with_one_id)
{
	PGconn *db = t_db();
	struct t_org org;
	t_org_new(&org);
	t_receiver *rc = t_receiver_start();
	static const int script[] = {500, 500};
	t_receiver_script(rc, script, 2, 0);
	struct t_proc api, worker;
	t_api_start(&api, env);
	t_worker_start(&worker, env);
	char base[64], secret[128], hook_id[37];
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", api.port);
	make_endpoint(base, &org, t_receiver_url(rc), ENDED, secret, hook_id);
	post_small_job(base, &org);

	struct count_wait w = {rc, 3};
	cr_assert(t_poll(received, &w, 20000), "expected 3 attempts, got %d", t_receiver_count(rc));
	struct t_hook first;
	cr_assert(t_receiver_get(rc, 0, &first));
	for (int i = 0; i < 3; i++) {
		struct t_hook h;
		cr_assert(t_receiver_get(rc, i, &h));
		cr_assert_str_eq(h.id, first.id, "webhook-id changed between attempts");
		cr_assert(t_hook_verify(&h, secret), "attempt %d not signed right", i);
		cr_assert_str_eq(h.body, first.body);
		free(h.body);
	}
	free(first.body);

	/* Every attempt is recorded: 500, 500, 200, and then nothing more. */
	char url[256];
	struct t_resp r;
	snprintf(url, sizeof(url), "%s/v1/webhooks/%s/deliveries", base, hook_id);
	bool three = false;
	for (int i = 0; i < 100 && !three; i++) {
		t_http(&r, "GET", url, org.token, NULL, NULL);
		cr_assert_eq(r.status, 200, "deliveries: %ld %s", r.status, r.body);
		three = json_array_size(json_object_get(r.json, "data")) == 3;
		if (!three)
			t_resp_free(&r);
		else
			break;
		struct count_wait never = {rc, 1000};
		t_poll(received, &never, 50);
	}
	cr_assert(three, "deliveries does not list 3 attempts");
	int ok = 0, failed = 0;
	for (size_t i = 0; i < 3; i++) {
		json_t *a = json_object_get(json_array_get(json_object_get(r.json, "data"), i),
		                            "attributes");
		long s = (long)json_integer_value(json_object_get(a, "http_status"));
		ok += s == 200;
		failed += s == 500;
	}
	cr_assert_eq(ok, 1);
	cr_assert_eq(failed, 2);
	t_resp_free(&r);
	cr_assert_eq(t_receiver_count(rc), 3);
	finish(db, &api, &worker);
	t_receiver_stop(rc);
}

Test(webhooks, a_hanging_receiver_delays_nobody_else)
{
	PGconn *db = t_db();
	struct t_org slow_org, fast_org;
	t_org_new(&slow_org);
	t_org_new(&fast_org);
	t_receiver *slow = t_receiver_start();
	t_receiver *fast = t_receiver_start();
	static const int ok[] = {200};
	t_receiver_script(slow, ok, 1, 10000); /* answers long after the 2 s timeout */
	struct t_proc api, worker;
	t_api_start(&api, env);
	t_worker_start(&worker, env);
	char base[64], secret[128], id[37];
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", api.port);
	make_endpoint(base, &slow_org, t_receiver_url(slow), ENDED, secret, id);
	make_endpoint(base, &fast_org, t_receiver_url(fast), ENDED, secret, id);

	post_small_job(base, &slow_org);
	struct count_wait ws = {slow, 1};
	cr_assert(t_poll(received, &ws, 20000), "the slow receiver got nothing");
	post_small_job(base, &fast_org);
	struct count_wait wf = {fast, 1};
	cr_assert(t_poll(received, &wf, 20000), "the fast receiver got nothing");
	struct t_hook hs, hf;
	cr_assert(t_receiver_get(slow, 0, &hs));
	cr_assert(t_receiver_get(fast, 0, &hf));
	/* The fast delivery went out while the slow one was still hanging. */
	cr_assert_lt(hf.at_ms, hs.at_ms + 2000, "fast delivery waited for the slow one");
	free(hs.body);
	free(hf.body);
	finish(db, &api, &worker);
	t_receiver_stop(slow);
	t_receiver_stop(fast);
}

/* The type and the job id of a received hook's body; false when unreadable. */
static bool hook_event(const struct t_hook *h, char *type, size_t cap, char job[37])
{
	json_t *doc = json_loads(h->body, 0, NULL);
	const char *t = json_string_value(json_object_get(doc, "type"));
	const char *id = json_string_value(json_object_get(json_object_get(doc, "data"), "id"));
	bool ok = t && id;
	if (ok) {
		snprintf(type, cap, "%s", t);
		snprintf(job, 37, "%s", id);
	}
	json_decref(doc);
	return ok;
}

/* Deliveries recorded for the endpoint id. */
static long endpoint_deliveries(PGconn *db, const char *id)
{
	const char *p[] = {id};
	return t_sql_long(db, "SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1", 1,
	                  p);
}

/*
 * A job.created endpoint and a job.ended endpoint of one organization: one
 * job gives each exactly its own event, signed with its own secret, about
 * the same job. (job.created rows are written only for subscribers, so
 * this is what keeps that saving honest.)
 */
Test(webhooks, each_endpoint_gets_the_events_it_subscribed_to)
{
	PGconn *db = t_db();
	struct t_org org;
	t_org_new(&org);
	t_receiver *created = t_receiver_start();
	t_receiver *ended = t_receiver_start();
	struct t_proc api, worker;
	t_api_start(&api, env);
	t_worker_start(&worker, env);
	char base[64], created_secret[128], created_id[37], ended_secret[128], ended_id[37];
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", api.port);
	make_endpoint(base, &org, t_receiver_url(created), CREATED, created_secret, created_id);
	make_endpoint(base, &org, t_receiver_url(ended), ENDED, ended_secret, ended_id);
	post_small_job(base, &org);

	struct count_wait wc = {created, 1}, we = {ended, 1};
	cr_assert(t_poll(received, &wc, 20000), "the job.created endpoint got nothing");
	cr_assert(t_poll(received, &we, 20000), "the job.ended endpoint got nothing");
	struct t_hook hc, he;
	cr_assert(t_receiver_get(created, 0, &hc));
	cr_assert(t_receiver_get(ended, 0, &he));
	char type_c[32], type_e[32], job_c[37], job_e[37];
	cr_assert(hook_event(&hc, type_c, sizeof(type_c), job_c), "unreadable: %s", hc.body);
	cr_assert(hook_event(&he, type_e, sizeof(type_e), job_e), "unreadable: %s", he.body);
	cr_expect_str_eq(type_c, "job.created");
	cr_expect_str_eq(type_e, "job.ended");
	cr_expect_str_eq(job_c, job_e, "the two events are about different jobs");
	cr_expect(t_hook_verify(&hc, created_secret), "job.created not signed with its secret");
	cr_expect(t_hook_verify(&he, ended_secret), "job.ended not signed with its secret");
	free(hc.body);
	free(he.body);

	/* Every event is written by now: one delivery each, and nothing more arrives. */
	cr_expect_eq(endpoint_deliveries(db, created_id), 1);
	cr_expect_eq(endpoint_deliveries(db, ended_id), 1);
	struct count_wait more = {created, 2};
	cr_expect_not(t_poll(received, &more, 500),
	              "a second hook reached the job.created endpoint");
	more.rc = ended;
	cr_expect_not(t_poll(received, &more, 500), "a second hook reached the job.ended endpoint");
	finish(db, &api, &worker);
	t_receiver_stop(created);
	t_receiver_stop(ended);
}

struct delivery_wait {
	PGconn *db;
	const char *hook_id;
	const char *status;
};

/* The endpoint's one delivery has the status w->status. */
static bool delivery_is(void *ctx)
{
	const struct delivery_wait *w = ctx;
	const char *p[] = {w->hook_id, w->status};
	return t_sql_long(w->db,
	                  "SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1"
	                  " AND status = $2",
	                  2, p) == 1;
}

/*
 * POST /v1/webhooks/:id/deliveries/:delivery_id/retry (docs/openapi.yaml):
 * a delivery failed after its whole schedule is sent again at once with the
 * same webhook-id, and succeeds; another organization's token, an unknown
 * delivery and a disabled endpoint are refused.
 */
Test(webhooks, a_failed_delivery_is_sent_again_on_request)
{
	PGconn *db = t_db();
	struct t_org org, other;
	t_org_new(&org);
	t_org_new(&other);
	t_receiver *rc = t_receiver_start();
	static const int script[] = {500, 500, 500, 500};
	t_receiver_script(rc, script, 4, 0);
	struct t_proc api, worker;
	t_api_start(&api, env);
	t_worker_start(&worker, env);
	char base[64], secret[128], hook_id[37];
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", api.port);
	make_endpoint(base, &org, t_receiver_url(rc), ENDED, secret, hook_id);
	post_small_job(base, &org);

	/* The first attempt and the schedule's three retries all fail. */
	struct delivery_wait failed = {db, hook_id, "failed"};
	cr_assert(t_poll(delivery_is, &failed, 20000), "the delivery did not fail");
	cr_assert_eq(t_receiver_count(rc), 4);
	const char *p[] = {hook_id};
	char *delivery =
	    t_sql_text(db, "SELECT id FROM webhook_deliveries WHERE endpoint_id = $1", 1, p);

	char url[256];
	struct t_resp r;
	snprintf(url, sizeof(url), "%s/v1/webhooks/%s/deliveries/%s/retry", base, hook_id,
	         delivery);
	t_http(&r, "POST", url, other.token, NULL, NULL);
	cr_assert_eq(r.status, 404, "another organization's token: %ld %s", r.status, r.body);
	t_resp_free(&r);

	long long asked = t_now_ms();
	t_http(&r, "POST", url, org.token, NULL, NULL);
	cr_assert_eq(r.status, 202, "retry: %ld %s", r.status, r.body);
	json_t *attrs = json_object_get(json_object_get(r.json, "data"), "attributes");
	cr_assert_str_eq(json_string_value(json_object_get(attrs, "status")), "pending");
	cr_assert_eq(json_integer_value(json_object_get(attrs, "attempts")), 4);
	cr_assert_str_eq(json_string_value(json_object_get(json_object_get(r.json, "data"), "id")),
	                 delivery);
	t_resp_free(&r);

	/* Sent at once (the deliverers are woken, not left to their poll), same webhook-id. */
	cr_assert(t_receiver_wait(rc, 5, 10000), "the delivery was not sent again");
	struct t_hook first, again;
	cr_assert(t_receiver_get(rc, 0, &first));
	cr_assert(t_receiver_get(rc, 4, &again));
	cr_assert_str_eq(again.id, first.id, "the webhook-id changed");
	cr_assert_str_eq(again.body, first.body);
	cr_assert(t_hook_verify(&again, secret));
	cr_assert_lt(again.at_ms - asked, 3000, "sent again after %lld ms", again.at_ms - asked);
	free(first.body);
	free(again.body);
	struct delivery_wait ok = {db, hook_id, "succeeded"};
	cr_assert(t_poll(delivery_is, &ok, 10000), "the delivery did not succeed");

	/* An unknown delivery of the endpoint; a disabled endpoint (a 410 Gone). */
	char unknown[37], bad[256];
	t_uuid(unknown);
	snprintf(bad, sizeof(bad), "%s/v1/webhooks/%s/deliveries/%s/retry", base, hook_id, unknown);
	t_http(&r, "POST", bad, org.token, NULL, NULL);
	cr_assert_eq(r.status, 404, "unknown delivery: %ld %s", r.status, r.body);
	t_resp_free(&r);
	t_sql_long(db,
	           "WITH u AS (UPDATE webhook_endpoints SET disabled_at = now() WHERE id = $1"
	           " RETURNING 1) SELECT count(*) FROM u",
	           1, p);
	t_http(&r, "POST", url, org.token, NULL, NULL);
	cr_assert_eq(r.status, 409, "disabled endpoint: %ld %s", r.status, r.body);
	cr_assert_str_eq(json_string_value(json_object_get(
	                     json_array_get(json_object_get(r.json, "errors"), 0), "code")),
	                 "invalid_transition");
	t_resp_free(&r);
	cr_assert_eq(t_receiver_count(rc), 5);
	free(delivery);
	finish(db, &api, &worker);
	t_receiver_stop(rc);
}
