/*
 * test_webhook_policy.c - what webhook delivery owes receivers and other
 * organizations (docs/architecture.md, "Webhooks"; docs/openapi.yaml
 * Webhooks): at most BULKREG_WEBHOOK_MAX_ENDPOINTS endpoints per
 * organization, even under concurrent creation; one organization's hanging
 * receivers do not hold up another's deliveries by more than about one
 * attempt's timeout; 410 Gone disables the endpoint; Retry-After is honoured
 * up to the schedule's longest wait; an internationalized host is stored as
 * punycode.
 *
 * Timing assertions have wide margins (a loaded 2-core machine, ASan): each
 * bound sits far from what the behaviour it rules out would give.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "support.h"

TestSuite(webhook_policy, .timeout = 300);

#define BOTH  "[\"job.created\",\"job.ended\"]"
#define ENDED "[\"job.ended\"]"

static const char *const env[] = {"BULKREG_WEBHOOK_ALLOW_PRIVATE=1", "BULKREG_RATE_LIMIT=0",
                                  "BULKREG_WEBHOOK_RETRY_SCHEDULE=200ms,200ms,200ms,5s",
                                  "BULKREG_WEBHOOK_TIMEOUT_MS=10000", NULL};

/* POSTs an endpoint for url and events; the response is the caller's to free. */
static void post_endpoint(struct t_resp *r, const char *base, const struct t_org *org,
                          const char *url, const char *events)
{
	char u[256], body[512];
	snprintf(u, sizeof(u), "%s/v1/webhooks", base);
	snprintf(body, sizeof(body),
	         "{\"data\":{\"type\":\"webhooks\",\"attributes\":{\"url\":\"%s\","
	         "\"events\":%s}}}",
	         url, events);
	t_http(r, "POST", u, org->token, body, NULL);
}

/* Creates an endpoint and returns its id. */
static void make_endpoint(const char *base, const struct t_org *org, const char *url,
                          const char *events, char id[37])
{
	struct t_resp r;
	post_endpoint(&r, base, org, url, events);
	cr_assert_eq(r.status, 201, "webhook: %ld %s", r.status, r.body);
	snprintf(id, 37, "%s",
	         json_string_value(json_object_get(json_object_get(r.json, "data"), "id")));
	t_resp_free(&r);
}

/* A session with a one-person job posted to it; the job's id in job. */
static void post_small_job(const char *base, const struct t_org *org, char job[37])
{
	char url[256], sid[37];
	struct t_resp r;
	t_session_new(base, org->token, "{\"title\":\"Hooks\"}", sid);
	snprintf(url, sizeof(url), "%s/v1/sessions/%s/people/bulk", base, sid);
	t_http(&r, "POST", url, org->token,
	       "{\"data\":{\"type\":\"jobs\",\"attributes\":{\"tasks\":[{\"attributes\":"
	       "{\"email\":\"hook@example.com\"}}]}}}",
	       NULL);
	cr_assert_eq(r.status, 202, "bulk: %ld %s", r.status, r.body);
	snprintf(job, 37, "%s",
	         json_string_value(json_object_get(json_object_get(r.json, "data"), "id")));
	t_resp_free(&r);
}

static void finish(PGconn *db, struct t_proc *api, struct t_proc *worker)
{
	t_check_invariants(db);
	cr_assert_eq(t_proc_stop(worker, SIGTERM, 30000), 0);
	cr_assert_eq(t_proc_stop(api, SIGTERM, 20000), 0);
	PQfinish(db);
}

static long org_endpoints(PGconn *db, const struct t_org *org)
{
	const char *p[] = {org->id};
	return t_sql_long(db, "SELECT count(*) FROM webhook_endpoints WHERE organization_id = $1",
	                  1, p);
}

struct sql_wait {
	PGconn *db;
	const char *sql;
	const char *param;
	long at_least;
};

static bool sql_reached(void *ctx)
{
	struct sql_wait *w = ctx;
	const char *p[] = {w->param};
	return t_sql_long(w->db, w->sql, 1, p) >= w->at_least;
}

/* ---- BULKREG_WEBHOOK_MAX_ENDPOINTS ---- */

Test(webhook_policy, the_21st_endpoint_is_refused_until_one_is_deleted)
{
	PGconn *db = t_db();
	struct t_org org;
	t_org_new(&org);
	struct t_proc api;
	t_api_start(&api, env);
	char base[64], id[37], first[37] = "";
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", api.port);
	for (int i = 0; i < 20; i++) {
		char url[128];
		snprintf(url, sizeof(url), "http://127.0.0.1:9/hook/%d", i);
		make_endpoint(base, &org, url, ENDED, id);
		if (!first[0])
			memcpy(first, id, sizeof(first));
	}
	struct t_resp r;
	post_endpoint(&r, base, &org, "http://127.0.0.1:9/hook/20", ENDED);
	cr_assert_eq(r.status, 422, "21st endpoint: %ld %s", r.status, r.body);
	json_t *err = json_array_get(json_object_get(r.json, "errors"), 0);
	cr_assert_str_eq(json_string_value(json_object_get(err, "code")), "too_many_endpoints",
	                 "%s", r.body);
	cr_assert(strstr(json_string_value(json_object_get(err, "detail")), "20"), "%s", r.body);
	t_resp_free(&r);
	cr_assert_eq(org_endpoints(db, &org), 20);

	char url[256];
	snprintf(url, sizeof(url), "%s/v1/webhooks/%s", base, first);
	t_http(&r, "DELETE", url, org.token, NULL, NULL);
	cr_assert_eq(r.status, 200, "delete: %ld %s", r.status, r.body);
	t_resp_free(&r);
	make_endpoint(base, &org, "http://127.0.0.1:9/hook/again", ENDED, id);
	cr_assert_eq(org_endpoints(db, &org), 20);
	cr_assert_eq(t_proc_stop(&api, SIGTERM, 20000), 0);
	PQfinish(db);
}

#define RACERS 40

struct racer {
	const char *base;
	const struct t_org *org;
	int i;
	long status;
};

static void *race_create(void *arg)
{
	struct racer *rc = arg;
	char u[256], body[512], err[128];
	snprintf(u, sizeof(u), "%s/v1/webhooks", rc->base);
	snprintf(body, sizeof(body),
	         "{\"data\":{\"type\":\"webhooks\",\"attributes\":{\"url\":"
	         "\"http://127.0.0.1:9/race/%d\",\"events\":" ENDED "}}}",
	         rc->i);
	struct t_resp r;
	t_http_try(&r, "POST", u, rc->org->token, body, NULL, 60000, err, sizeof(err));
	rc->status = r.status;
	t_resp_free(&r);
	return NULL;
}

Test(webhook_policy, concurrent_creations_never_exceed_the_limit)
{
	PGconn *db = t_db();
	struct t_org org;
	t_org_new(&org);
	struct t_proc api;
	t_api_start(&api, env);
	char base[64];
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", api.port);
	struct racer racers[RACERS];
	pthread_t th[RACERS];
	for (int i = 0; i < RACERS; i++) {
		racers[i] = (struct racer){.base = base, .org = &org, .i = i};
		cr_assert_eq(pthread_create(&th[i], NULL, race_create, &racers[i]), 0);
	}
	int created = 0, refused = 0;
	for (int i = 0; i < RACERS; i++) {
		pthread_join(th[i], NULL);
		created += racers[i].status == 201;
		refused += racers[i].status == 422;
	}
	cr_assert_eq(created, 20, "%d created, %d refused of %d", created, refused, RACERS);
	cr_assert_eq(refused, RACERS - 20, "%d created, %d refused of %d", created, refused,
	             RACERS);
	cr_assert_eq(org_endpoints(db, &org), 20);
	cr_assert_eq(t_proc_stop(&api, SIGTERM, 20000), 0);
	PQfinish(db);
}

/* ---- fairness ---- */

static const char *const fair_env[] = {
    "BULKREG_WEBHOOK_ALLOW_PRIVATE=1", "BULKREG_RATE_LIMIT=0", "BULKREG_WEBHOOK_TIMEOUT_MS=1000",
    "BULKREG_WEBHOOK_RETRY_SCHEDULE=200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms", NULL};

#define FLOOD_JOBS 15

struct org_events {
	PGconn *db;
	const char *org;
	long n;
};

static bool events_written(void *ctx)
{
	struct org_events *w = ctx;
	const char *p[] = {w->org};
	return t_sql_long(w->db,
	                  "SELECT count(*) FROM webhook_events WHERE organization_id = $1"
	                  " AND type = 'job.ended'",
	                  1, p) >= w->n;
}

/* Most attempts in flight to one endpoint right now. */
static long most_in_flight(PGconn *db)
{
	return t_sql_long(
	    db,
	    "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n"
	    " FROM webhook_deliveries WHERE status = 'pending' AND locked_until > now()"
	    " GROUP BY endpoint_id) x",
	    0, NULL);
}

/*
 * Organization A: 20 endpoints whose receiver hangs past the 1 s timeout,
 * and a backlog of 600 deliveries (15 jobs, both events) due before B's
 * one. Strictly by due time, B's job.ended would wait for the backlog:
 * 600 / 32 slots = about 19 rounds of 1 s. With one attempt in flight per
 * endpoint, A holds at most 20 slots and B's goes out at once.
 */
Test(webhook_policy, hanging_endpoints_of_one_organization_do_not_delay_another)
{
	PGconn *db = t_db();
	struct t_org a, b;
	t_org_new(&a);
	t_org_new(&b);
	t_receiver *hang = t_receiver_start();
	t_receiver *fast = t_receiver_start();
	t_receiver_script(hang, NULL, 0, 20000);
	struct t_proc api, worker;
	t_api_start(&api, fair_env);
	t_worker_start(&worker, fair_env);
	char base[64], id[37], job[37];
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", api.port);
	for (int i = 0; i < 20; i++) {
		char url[128];
		snprintf(url, sizeof(url), "%s?n=%d", t_receiver_url(hang), i);
		make_endpoint(base, &a, url, BOTH, id);
	}
	char b_endpoint[37];
	make_endpoint(base, &b, t_receiver_url(fast), ENDED, b_endpoint);
	for (int i = 0; i < FLOOD_JOBS; i++)
		post_small_job(base, &a, job);
	struct org_events w = {db, a.id, FLOOD_JOBS};
	cr_assert(t_poll(events_written, &w, 120000), "A's jobs did not end");
	cr_assert(t_receiver_count(hang) > 0, "A's receiver got nothing yet");

	post_small_job(base, &b, job);
	cr_assert(t_receiver_wait(fast, 1, 60000), "B's receiver got nothing");
	cr_assert_leq(most_in_flight(db), 1, "more than one attempt in flight to one endpoint");
	struct sql_wait recorded = {
	    db,
	    "SELECT count(*) FROM webhook_attempts a JOIN webhook_deliveries d"
	    " ON d.id = a.delivery_id WHERE d.endpoint_id = $1",
	    b_endpoint, 1};
	cr_assert(t_poll(sql_reached, &recorded, 30000), "B's attempt was not recorded");
	/* From B's event being written to its first attempt starting, by the worker's clock. */
	const char *p[] = {b_endpoint};
	long waited =
	    t_sql_long(db,
	               "SELECT (extract(epoch FROM min(a.attempted_at) - min(ev.created_at))"
	               " * 1000)::bigint"
	               " FROM webhook_deliveries d JOIN webhook_events ev ON ev.id = d.event_id"
	               " JOIN webhook_attempts a ON a.delivery_id = d.id"
	               " WHERE d.endpoint_id = $1",
	               1, p);
	cr_log_info("B's job.ended waited %ld ms behind A's backlog", waited);
	cr_assert_lt(waited, 4000, "B's delivery waited %ld ms (timeout 1000 ms)", waited);
	/* A is still being retried: the bound above was measured under the flood. */
	const char *pa[] = {a.id};
	cr_assert_gt(t_sql_long(db,
	                        "SELECT count(*) FROM webhook_deliveries d JOIN webhook_events ev"
	                        " ON ev.id = d.event_id WHERE ev.organization_id = $1"
	                        " AND d.status = 'pending'",
	                        1, pa),
	             100, "A's backlog was gone before B's event");
	finish(db, &api, &worker);
	t_receiver_stop(hang);
	t_receiver_stop(fast);
}

/* ---- 410 Gone ---- */

/* The webhook resource of id from GET /v1/webhooks (a copy, caller decrefs). */
static json_t *webhook_resource(const char *base, const struct t_org *org, const char *id)
{
	char url[256];
	struct t_resp r;
	snprintf(url, sizeof(url), "%s/v1/webhooks", base);
	t_http(&r, "GET", url, org->token, NULL, NULL);
	cr_assert_eq(r.status, 200, "list: %ld %s", r.status, r.body);
	json_t *found = NULL, *v;
	size_t i;
	json_array_foreach(json_object_get(r.json, "data"), i, v)
	{
		if (strcmp(json_string_value(json_object_get(v, "id")), id) == 0)
			found = json_deep_copy(v);
	}
	t_resp_free(&r);
	cr_assert_not_null(found, "webhook %s not listed", id);
	return found;
}

Test(webhook_policy, gone_disables_the_endpoint_and_fails_its_pending_deliveries)
{
	PGconn *db = t_db();
	struct t_org org;
	t_org_new(&org);
	t_receiver *gone = t_receiver_start();
	t_receiver *live = t_receiver_start();
	/* Answered 6 s late, so the job's job.ended is pending behind it by then. */
	static const int script[] = {410};
	t_receiver_script(gone, script, 1, 6000);
	struct t_proc api, worker;
	t_api_start(&api, env);
	t_worker_start(&worker, env);
	char base[64], gone_id[37], live_id[37], job[37];
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", api.port);
	make_endpoint(base, &org, t_receiver_url(gone), BOTH, gone_id);
	make_endpoint(base, &org, t_receiver_url(live), ENDED, live_id);
	json_t *res = webhook_resource(base, &org, gone_id);
	cr_assert(json_is_null(json_object_get(json_object_get(res, "attributes"), "disabled_at")),
	          "an active endpoint shows disabled_at null");
	json_decref(res);

	post_small_job(base, &org, job);
	struct sql_wait pending = {db,
	                           "SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1"
	                           " AND status = 'pending' AND locked_until IS NULL",
	                           gone_id, 1};
	cr_assert(t_poll(sql_reached, &pending, 5500),
	          "no job.ended delivery pending behind the 410");
	struct sql_wait disabled = {
	    db, "SELECT count(*) FROM webhook_endpoints WHERE id = $1 AND disabled_at IS NOT NULL",
	    gone_id, 1};
	cr_assert(t_poll(sql_reached, &disabled, 30000), "410 did not disable the endpoint");

	const char *p[] = {gone_id};
	cr_assert_eq(t_sql_long(db,
	                        "SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1"
	                        " AND status = 'failed'",
	                        1, p),
	             2, "the 410'd delivery and the pending one are failed");
	res = webhook_resource(base, &org, gone_id);
	cr_assert(
	    json_is_string(json_object_get(json_object_get(res, "attributes"), "disabled_at")),
	    "disabled_at is set");
	json_decref(res);

	/* A new job: the live endpoint hears of it, the disabled one gets no delivery. */
	cr_assert(t_receiver_wait(live, 1, 30000));
	post_small_job(base, &org, job);
	cr_assert(t_receiver_wait(live, 2, 30000), "the live endpoint missed the second job");
	cr_assert_eq(
	    t_sql_long(db, "SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1", 1, p),
	    2, "a delivery was written for a disabled endpoint");
	cr_assert_eq(t_receiver_count(gone), 1, "the disabled endpoint was called again");
	finish(db, &api, &worker);
	t_receiver_stop(gone);
	t_receiver_stop(live);
}

/* ---- Retry-After ---- */

Test(webhook_policy, retry_after_is_honoured_up_to_the_longest_scheduled_wait)
{
	PGconn *db = t_db();
	struct t_org org;
	t_org_new(&org);
	t_receiver *rc = t_receiver_start();
	/* Schedule 200ms,200ms,200ms,5s: its longest wait is 5 s. */
	static const int script[] = {503, 503, 429};
	static const char *const after[] = {"1", "date+3", "3600"};
	t_receiver_script(rc, script, 3, 0);
	t_receiver_retry_after(rc, after, 3);
	struct t_proc api, worker;
	t_api_start(&api, env);
	t_worker_start(&worker, env);
	char base[64], id[37], job[37];
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", api.port);
	make_endpoint(base, &org, t_receiver_url(rc), ENDED, id);
	post_small_job(base, &org, job);

	cr_assert(t_receiver_wait(rc, 4, 60000), "got %d attempts of 4", t_receiver_count(rc));
	long long at[4];
	for (int i = 0; i < 4; i++) {
		struct t_hook h;
		cr_assert(t_receiver_get(rc, i, &h));
		at[i] = h.at_ms;
		free(h.body);
	}
	long long g1 = at[1] - at[0], g2 = at[2] - at[1], g3 = at[3] - at[2];
	cr_log_info("gaps %lld, %lld, %lld ms", g1, g2, g3);
	/* The schedule alone would wait 200 ms each time. */
	cr_assert_geq(g1, 950, "Retry-After: 1 not honoured (%lld ms)", g1);
	cr_assert_geq(g2, 1900, "Retry-After as an HTTP-date not honoured (%lld ms)", g2);
	/* 3600 s capped at 5 s, and not less than the cap. */
	cr_assert_geq(g3, 4900, "Retry-After: 3600 not honoured up to the cap (%lld ms)", g3);
	cr_assert_lt(g3, 30000, "Retry-After: 3600 not capped (%lld ms)", g3);
	finish(db, &api, &worker);
	t_receiver_stop(rc);
}

/* ---- internationalized hosts ---- */

Test(webhook_policy, an_internationalized_host_is_stored_as_punycode)
{
	PGconn *db = t_db();
	struct t_org org;
	t_org_new(&org);
	struct t_proc api;
	t_api_start(&api, env);
	char base[64];
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", api.port);
	struct t_resp r;
	post_endpoint(&r, base, &org,
	              "https://b\xc3\xbc"
	              "cher.example/hook",
	              ENDED);
	cr_assert_eq(r.status, 201, "IDN URL: %ld %s", r.status, r.body);
	json_t *attrs = json_object_get(json_object_get(r.json, "data"), "attributes");
	cr_assert_str_eq(json_string_value(json_object_get(attrs, "url")),
	                 "https://xn--bcher-kva.example/hook");
	t_resp_free(&r);
	const char *p[] = {org.id};
	char *stored =
	    t_sql_text(db, "SELECT url FROM webhook_endpoints WHERE organization_id = $1", 1, p);
	cr_assert_str_eq(stored, "https://xn--bcher-kva.example/hook");
	free(stored);

	/* Not a domain name: 422 with a reason, never 503. */
	post_endpoint(&r, base, &org, "https://\xe2\x98\x83.example/hook", ENDED);
	cr_assert_eq(r.status, 422, "invalid IDN: %ld %s", r.status, r.body);
	t_resp_free(&r);
	cr_assert_eq(t_proc_stop(&api, SIGTERM, 20000), 0);
	PQfinish(db);
}
