/*
 * test_isolation.c - organization isolation on every route (docs/openapi.yaml:
 * "sessions, jobs and webhooks of another organization answer 404").
 *
 * Organization A owns a session with two people, a finished bulk job with a
 * failed task (so A itself could retry or delete it), and a webhook endpoint
 * with recorded delivery attempts. Organization B's token is then used on
 * each of A's resources, on every route and method that names one: each
 * answer must be 404 not_found, as for an id that does not exist, and
 * nothing of A's may have changed. B's lists never show A's resources.
 * The GETs of one session or job, which the API answers in shared batches,
 * are also sent by both organizations at once, from many threads.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "support.h"

static struct t_proc api, worker;
static struct t_org org_a, org_b;
static t_receiver *rc;
static PGconn *db;
static char base[64];
static char sid[37], job[37], hook[37];

/* POSTs body as A; returns data.id in id (37 bytes) after checking the status. */
static void create(const char *path, const char *body, long status, char *id)
{
	char url[256];
	struct t_resp r;
	snprintf(url, sizeof(url), "%s%s", base, path);
	t_http(&r, "POST", url, org_a.token, body, NULL);
	cr_assert_eq(r.status, status, "POST %s: %ld %s", path, r.status, r.body);
	if (id)
		snprintf(id, 37, "%s",
		         json_string_value(json_object_get(json_object_get(r.json, "data"), "id")));
	t_resp_free(&r);
}

static bool job_finished(void *ctx)
{
	(void)ctx;
	const char *p[] = {job};
	return t_sql_long(db, "SELECT count(*) FROM jobs WHERE id = $1 AND status <> 'processing'",
	                  1, p) == 1;
}

static bool attempts_recorded(void *ctx)
{
	(void)ctx;
	const char *p[] = {hook};
	return t_sql_long(db,
	                  "SELECT count(*) FROM webhook_attempts a JOIN webhook_deliveries d"
	                  " ON d.id = a.delivery_id WHERE d.endpoint_id = $1",
	                  1, p) > 0;
}

static void setup(void)
{
	static const char *const env[] = {"BULKREG_RATE_LIMIT=0", NULL};
	db = t_db();
	t_org_new(&org_a);
	t_org_new(&org_b);
	rc = t_receiver_start();
	t_api_start(&api, env);
	t_worker_start(&worker, env);
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", api.port);

	char body[512];
	snprintf(body, sizeof(body),
	         "{\"data\":{\"type\":\"webhooks\",\"attributes\":{\"url\":\"%s\","
	         "\"events\":[\"job.created\",\"job.ended\"]}}}",
	         t_receiver_url(rc));
	create("/v1/webhooks", body, 201, hook);
	create("/v1/sessions",
	       "{\"data\":{\"type\":\"sessions\",\"attributes\":{\"title\":\"A\"}}}", 201, sid);
	char path[128];
	snprintf(path, sizeof(path), "/v1/sessions/%s/people", sid);
	create(path,
	       "{\"data\":{\"type\":\"people\",\"attributes\":{\"email\":\"p1@example.com\"}}}",
	       201, NULL);
	/* p1 again fails already_registered: the job ends failed, retryable by A. */
	snprintf(path, sizeof(path), "/v1/sessions/%s/people/bulk", sid);
	create(path,
	       "{\"data\":{\"type\":\"jobs\",\"attributes\":{\"tasks\":["
	       "{\"attributes\":{\"email\":\"p1@example.com\"}},"
	       "{\"attributes\":{\"email\":\"p2@example.com\"}}]}}}",
	       202, job);
	cr_assert(t_poll(job_finished, NULL, 60000), "job %s did not finish", job);
	cr_assert(t_poll(attempts_recorded, NULL, 60000), "no webhook delivery was attempted");
}

static void teardown(void)
{
	t_proc_stop(&worker, SIGTERM, 20000);
	t_proc_stop(&api, SIGTERM, 20000);
	t_receiver_stop(rc);
	PQfinish(db);
}

TestSuite(isolation, .init = setup, .fini = teardown, .timeout = 180);

/*
 * Sends method path (with body) as organization B and expects 404
 * not_found as a JSON:API error document. bare sends the token without
 * "Bearer", as Livestorm does.
 */
static void foreign(const char *method, const char *path, const char *body, bool bare)
{
	char url[384], auth[160];
	snprintf(url, sizeof(url), "%s%s", base, path);
	snprintf(auth, sizeof(auth), "Authorization: %s", org_b.token);
	const char *headers[] = {bare ? auth : NULL, NULL};
	struct t_resp r;
	t_http(&r, method, url, bare ? NULL : org_b.token, body, headers);
	cr_expect_eq(r.status, 404, "%s %s as another organization: %ld %s", method, path, r.status,
	             r.body);
	const char *code = json_string_value(
	    json_object_get(json_array_get(json_object_get(r.json, "errors"), 0), "code"));
	cr_expect(code && strcmp(code, "not_found") == 0, "%s %s: code %s", method, path,
	          code ? code : "(none)");
	const char *ct = t_resp_header(&r, "Content-Type");
	cr_expect(ct && strncmp(ct, "application/vnd.api+json", 24) == 0, "%s %s: content type %s",
	          method, path, ct ? ct : "(none)");
	t_resp_free(&r);
}

/* GET path as `token`'s organization; returns the status and meta.record_count (or -1). */
static long get_as(const char *token, const char *path, long *record_count)
{
	char url[384];
	struct t_resp r;
	snprintf(url, sizeof(url), "%s%s", base, path);
	t_http(&r, "GET", url, token, NULL, NULL);
	long status = r.status;
	if (record_count) {
		const json_t *n = json_object_get(json_object_get(r.json, "meta"), "record_count");
		*record_count = json_is_integer(n) ? (long)json_integer_value(n) : -1;
	}
	t_resp_free(&r);
	return status;
}

static long count1(const char *sql, const char *param)
{
	const char *p[] = {param};
	return t_sql_long(db, sql, 1, p);
}

/* Nothing organization B did shows anywhere, and B owns nothing. */
static void b_wrote_nothing(void)
{
	cr_expect_eq(count1("SELECT count(*) FROM sessions WHERE organization_id = $1", org_b.id),
	             0);
	cr_expect_eq(count1("SELECT count(*) FROM jobs WHERE organization_id = $1", org_b.id), 0);
	cr_expect_eq(
	    count1("SELECT count(*) FROM webhook_endpoints WHERE organization_id = $1", org_b.id),
	    0);
	cr_expect_eq(
	    count1("SELECT count(*) FROM webhook_events WHERE organization_id = $1", org_b.id), 0);
	cr_expect_eq(count1("SELECT count(*) FROM people WHERE session_id = $1", sid), 2,
	             "people were added to A's session");
	cr_expect_eq(count1("SELECT count(*) FROM people WHERE session_id = $1"
	                    " AND email LIKE 'intruder%'",
	                    sid),
	             0);
	cr_expect_eq(count1("SELECT count(*) FROM jobs WHERE session_id = $1", sid), 1,
	             "a job was added to A's session");
}

Test(isolation, session_routes)
{
	char p[128];
	snprintf(p, sizeof(p), "/v1/sessions/%s", sid);
	foreign("GET", p, NULL, false);
	foreign("GET", p, NULL, true);
	snprintf(p, sizeof(p), "/v1/sessions/%s/people", sid);
	foreign("GET", p, NULL, false);
	snprintf(p, sizeof(p), "/v1/sessions/%s/people?page[number]=0&page[size]=1", sid);
	foreign("GET", p, NULL, false);
	snprintf(p, sizeof(p), "/v1/sessions/%s/people", sid);
	foreign(
	    "POST", p,
	    "{\"data\":{\"type\":\"people\",\"attributes\":{\"email\":\"intruder1@example.com\"}}}",
	    false);
	foreign("POST", p,
	        "{\"data\":{\"type\":\"people\",\"attributes\":{\"email\":\"p1@example.com\"}},"
	        "\"meta\":{\"override_duplicates\":true}}",
	        true);
	snprintf(p, sizeof(p), "/v1/sessions/%s/people/bulk", sid);
	foreign("POST", p,
	        "{\"type\":\"jobs\",\"data\":{\"attributes\":{\"tasks\":["
	        "{\"attributes\":{\"email\":\"intruder2@example.com\"}}]}}}",
	        false);

	/* A still sees its session as it was. */
	long n = 0;
	snprintf(p, sizeof(p), "/v1/sessions/%s/people", sid);
	cr_expect_eq(get_as(org_a.token, p, &n), 200);
	cr_expect_eq(n, 2);
	cr_expect_eq(count1("SELECT registrants_count FROM sessions WHERE id = $1", sid), 2);
	cr_expect_eq(count1("SELECT count(*) FROM people WHERE session_id = $1"
	                    " AND email = 'p1@example.com' AND updated_at <> created_at",
	                    sid),
	             0, "B's override_duplicates updated A's person");
	b_wrote_nothing();
	t_check_invariants(db);
}

Test(isolation, job_routes)
{
	char p[128];
	snprintf(p, sizeof(p), "/v1/jobs/%s", job);
	foreign("GET", p, NULL, false);
	foreign("PUT", p, "{\"action\":\"retry_failed\"}", false);
	foreign("PUT", p, "{\"action\":\"retry_failed\",\"override_duplicates\":true}", true);
	foreign("DELETE", p, NULL, false);
	snprintf(p, sizeof(p), "/v1/jobs/%s/tasks", job);
	foreign("GET", p, NULL, false);
	snprintf(p, sizeof(p), "/v1/jobs/%s/tasks?filter[status]=failed&page[size]=1", job);
	foreign("GET", p, NULL, true);

	/* B's job list does not show A's job, even filtered by A's session. */
	long n = 0;
	cr_expect_eq(get_as(org_b.token, "/v1/jobs", &n), 200);
	cr_expect_eq(n, 0, "B's job list shows %ld jobs", n);
	snprintf(p, sizeof(p), "/v1/jobs?filter[session_id]=%s", sid);
	cr_expect_eq(get_as(org_b.token, p, &n), 200);
	cr_expect_eq(n, 0, "B's job list filtered by A's session shows %ld jobs", n);
	cr_expect_eq(get_as(org_a.token, p, &n), 200);
	cr_expect_eq(n, 1);

	/* The job is as it ended: not retried, not cancelled, not deleted. */
	cr_expect_eq(count1("SELECT count(*) FROM jobs WHERE id = $1 AND status = 'failed'"
	                    " AND retry_count = 0 AND cancelled_at IS NULL",
	                    job),
	             1, "A's job changed");
	cr_expect_eq(count1("SELECT count(*) FROM tasks WHERE job_id = $1", job), 2);
	cr_expect_eq(
	    count1("SELECT count(*) FROM tasks WHERE job_id = $1 AND status = 'failed'", job), 1);
	snprintf(p, sizeof(p), "/v1/jobs/%s/tasks", job);
	cr_expect_eq(get_as(org_a.token, p, &n), 207);
	cr_expect_eq(n, 2);
	b_wrote_nothing();
	t_check_invariants(db);
}

/* One of the concurrent readers: who reads what, and what it must get. */
struct reader {
	pthread_t thread;
	const char *token;
	const char *path;
	long want_status;
	const char *want_id; /* data.id of a 200 */
	int wrong;
	char last[160]; /* the last wrong answer */
};

#define READERS          16
#define READS_PER_READER 100

static void *read_loop(void *arg)
{
	struct reader *rd = arg;
	char url[384], err[128];
	snprintf(url, sizeof(url), "%s%s", base, rd->path);
	for (int i = 0; i < READS_PER_READER; i++) {
		struct t_resp r;
		t_http_try(&r, "GET", url, rd->token, NULL, NULL, 0, err, sizeof(err));
		const char *id =
		    json_string_value(json_object_get(json_object_get(r.json, "data"), "id"));
		bool right = r.status == rd->want_status &&
		             (rd->want_status != 200 || (id && strcmp(id, rd->want_id) == 0));
		if (!right) {
			rd->wrong++;
			snprintf(rd->last, sizeof(rd->last), "%ld %.120s", r.status,
			         r.status ? r.body : err);
		}
		t_resp_free(&r);
	}
	return NULL;
}

/*
 * A and B read A's session and job at the same moment: A gets them, B gets
 * 404, whichever requests end up answered by one statement.
 */
Test(isolation, concurrent_reads_of_one_resource)
{
	char session_path[128], job_path[128];
	snprintf(session_path, sizeof(session_path), "/v1/sessions/%s", sid);
	snprintf(job_path, sizeof(job_path), "/v1/jobs/%s", job);
	struct reader rd[READERS];
	for (int i = 0; i < READERS; i++) {
		bool a = i % 2 == 0, on_job = i % 4 >= 2;
		rd[i] = (struct reader){.token = a ? org_a.token : org_b.token,
		                        .path = on_job ? job_path : session_path,
		                        .want_status = a ? 200 : 404,
		                        .want_id = on_job ? job : sid};
		cr_assert_eq(pthread_create(&rd[i].thread, NULL, read_loop, &rd[i]), 0);
	}
	for (int i = 0; i < READERS; i++) {
		pthread_join(rd[i].thread, NULL);
		cr_expect_eq(rd[i].wrong, 0, "reader %d (%s, %s): %d wrong answers, the last: %s",
		             i, i % 2 == 0 ? "A" : "B", rd[i].path, rd[i].wrong, rd[i].last);
	}
	b_wrote_nothing();
}

Test(isolation, webhook_routes)
{
	char p[128];
	snprintf(p, sizeof(p), "/v1/webhooks/%s/deliveries", hook);
	foreign("GET", p, NULL, false);
	snprintf(p, sizeof(p), "/v1/webhooks/%s/deliveries?page[number]=0", hook);
	foreign("GET", p, NULL, true);
	snprintf(p, sizeof(p), "/v1/webhooks/%s", hook);
	foreign("DELETE", p, NULL, false);
	foreign("DELETE", p, NULL, true);

	long n = 0;
	cr_expect_eq(get_as(org_b.token, "/v1/webhooks", &n), 200);
	cr_expect_eq(n, 0, "B's webhook list shows %ld endpoints", n);
	cr_expect_eq(get_as(org_a.token, "/v1/webhooks", &n), 200);
	cr_expect_eq(n, 1);
	snprintf(p, sizeof(p), "/v1/webhooks/%s/deliveries", hook);
	cr_expect_eq(get_as(org_a.token, p, &n), 200);
	cr_expect_gt(n, 0, "A's endpoint lost its delivery attempts");
	cr_expect_eq(count1("SELECT count(*) FROM webhook_endpoints WHERE id = $1", hook), 1,
	             "A's endpoint was deleted");
	b_wrote_nothing();
}
