/*
 * test_abuse.c - docs/openapi.yaml against clients that misbehave, through the
 * real bulkreg-api: the per-token rate limit (429 rate_limited with
 * Retry-After and RateLimit-*), Idempotency-Key (replay, reuse, in flight,
 * two concurrent requests with one key, takeover and expiry), a revoked
 * token, slow clients (idle and slowloris), the per-address connection
 * limit and bodies over BULKREG_MAX_BODY_BYTES (413 without the server's
 * memory growing by the body's size).
 *
 * Every test starts its own API (some with their own BULKREG_RATE_LIMIT)
 * and makes its own organization and session.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "crypto.h"
#include "support.h"

#define MAX_BODY          (1024 * 1024) /* BULKREG_MAX_BODY_BYTES's default */
#define IDLE_TIMEOUT_S    15            /* BULKREG_HTTP_IDLE_TIMEOUT_MS's default */
#define HEADER_DEADLINE_S 20            /* BULKREG_HTTP_HEADER_TIMEOUT_MS's default */
#define PER_IP_LIMIT      128           /* BULKREG_HTTP_MAX_CONNECTIONS_PER_IP's default */

static struct t_proc api, worker;
static struct t_org org;
static PGconn *db;
static char base[64];

static void setup(void)
{
	memset(&api, 0, sizeof(api));
	memset(&worker, 0, sizeof(worker));
	db = t_db();
	t_org_new(&org);
}

static void teardown(void)
{
	/* What a failed test left running. */
	if (worker.pid)
		t_proc_stop(&worker, SIGTERM, 20000);
	if (api.pid)
		t_proc_stop(&api, SIGTERM, 20000);
	PQfinish(db);
}

TestSuite(abuse, .init = setup, .fini = teardown, .timeout = 240);

/* Ends a test: SIGTERM drains to exit 0 (a sanitizer finding would not). */
static void stop_clean(void)
{
	int rc;
	if (worker.pid && (rc = t_proc_stop(&worker, SIGTERM, 20000)) != 0) {
		t_proc_print_log(&worker, 40);
		cr_assert_fail("bulkreg-worker exit status %d", rc);
	}
	if (api.pid && (rc = t_proc_stop(&api, SIGTERM, 20000)) != 0) {
		t_proc_print_log(&api, 40);
		cr_assert_fail("bulkreg-api exit status %d", rc);
	}
}

static void start_api(const char *const *env)
{
	t_api_start(&api, env);
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", api.port);
}

static void make_session(const char *token, char *id)
{
	char url[256];
	struct t_resp r;
	snprintf(url, sizeof(url), "%s/v1/sessions", base);
	t_http(&r, "POST", url, token,
	       "{\"data\":{\"type\":\"sessions\",\"attributes\":{\"title\":\"A\"}}}", NULL);
	cr_assert_eq(r.status, 201, "session create: %ld %s", r.status, r.body);
	snprintf(id, 37, "%s",
	         json_string_value(json_object_get(json_object_get(r.json, "data"), "id")));
	t_resp_free(&r);
}

static const char *error_code(const struct t_resp *r)
{
	const char *c = json_string_value(
	    json_object_get(json_array_get(json_object_get(r->json, "errors"), 0), "code"));
	return c ? c : "";
}

static const char *data_id(const struct t_resp *r)
{
	const char *id = json_string_value(json_object_get(json_object_get(r->json, "data"), "id"));
	return id ? id : "";
}

static long header_long(const struct t_resp *r, const char *name)
{
	const char *v = t_resp_header(r, name);
	cr_assert_not_null(v, "no %s header in:\n%s", name, r->headers);
	return strtol(v, NULL, 10);
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* ---- rate limiting ---- */

Test(abuse, rate_limit_counts_down_then_429_then_recovers)
{
	/* One token a second, five at once: six requests fit well inside a second. */
	const char *env[] = {"BULKREG_RATE_LIMIT=1/s,5", NULL};
	start_api(env);
	char url[256];
	struct t_resp r;
	snprintf(url, sizeof(url), "%s/v1/jobs", base);
	/*
	 * A GET of one session or job authenticates in the statement that reads
	 * it (api/routes.c, read_one): it must be limited all the same. The
	 * session is made in SQL so that it takes no token from the bucket.
	 */
	const char *op[] = {org.id};
	PGresult *sres =
	    t_sql(db, "INSERT INTO sessions (organization_id, title) VALUES ($1, 'R') RETURNING id",
	          1, op);
	char one_session[256], one_job[256];
	snprintf(one_session, sizeof(one_session), "%s/v1/sessions/%s", base,
	         PQgetvalue(sres, 0, 0));
	PQclear(sres);
	snprintf(one_job, sizeof(one_job), "%s/v1/jobs/00000000-0000-4000-8000-000000000000", base);
	for (long i = 0; i < 5; i++) {
		t_http(&r, "GET", url, org.token, NULL, NULL);
		cr_assert_eq(r.status, 200, "request %ld: %ld %s", i, r.status, r.body);
		cr_assert_eq(header_long(&r, "RateLimit-Limit"), 5);
		cr_assert_eq(header_long(&r, "RateLimit-Remaining"), 4 - i, "request %ld:\n%s", i,
		             r.headers);
		long reset = header_long(&r, "RateLimit-Reset");
		cr_assert(reset >= 1 && reset <= 5, "RateLimit-Reset %ld", reset);
		cr_assert_null(t_resp_header(&r, "Retry-After"));
		t_resp_free(&r);
	}
	t_http(&r, "GET", url, org.token, NULL, NULL);
	cr_assert_eq(r.status, 429, "sixth request: %ld %s", r.status, r.body);
	cr_assert_str_eq(error_code(&r), "rate_limited");
	cr_assert_str_eq(t_resp_header(&r, "Content-Type"), "application/vnd.api+json");
	long retry = header_long(&r, "Retry-After");
	cr_assert(retry >= 1 && retry <= 1, "Retry-After %ld", retry);
	cr_assert_eq(header_long(&r, "RateLimit-Limit"), 5);
	cr_assert_eq(header_long(&r, "RateLimit-Remaining"), 0);
	cr_assert(header_long(&r, "RateLimit-Reset") >= 1);
	t_resp_free(&r);

	/* Unknown routes and other methods count too, and carry the headers. */
	char other[256];
	snprintf(other, sizeof(other), "%s/v1/nothing-here", base);
	t_http(&r, "GET", other, org.token, NULL, NULL);
	cr_assert_eq(r.status, 429, "%ld %s", r.status, r.body);
	t_resp_free(&r);
	/* So do the one-statement reads, found or not. */
	const char *reads[] = {one_session, one_job};
	for (int i = 0; i < 2; i++) {
		t_http(&r, "GET", reads[i], org.token, NULL, NULL);
		cr_assert_eq(r.status, 429, "%s: %ld %s", reads[i], r.status, r.body);
		cr_assert_str_eq(error_code(&r), "rate_limited");
		cr_assert(header_long(&r, "Retry-After") >= 1);
		cr_assert_eq(header_long(&r, "RateLimit-Remaining"), 0);
		t_resp_free(&r);
	}

	/* Another organization has its own bucket. */
	struct t_org other_org;
	t_org_new(&other_org);
	t_http(&r, "GET", url, other_org.token, NULL, NULL);
	cr_assert_eq(r.status, 200);
	cr_assert_eq(header_long(&r, "RateLimit-Remaining"), 4);
	t_resp_free(&r);

	/* No token: 401 before any bucket, so no RateLimit headers. */
	t_http(&r, "GET", url, NULL, NULL, NULL);
	cr_assert_eq(r.status, 401);
	cr_assert_null(t_resp_header(&r, "RateLimit-Limit"));
	t_resp_free(&r);
	t_http(&r, "GET", one_session, NULL, NULL, NULL);
	cr_assert_eq(r.status, 401);
	cr_assert_null(t_resp_header(&r, "RateLimit-Limit"));
	t_resp_free(&r);

	/* After Retry-After the organization is served again. */
	sleep_ms(retry * 1000 + 100);
	t_http(&r, "GET", url, org.token, NULL, NULL);
	cr_assert_eq(r.status, 200, "after Retry-After: %ld %s", r.status, r.body);
	long remaining = header_long(&r, "RateLimit-Remaining");
	cr_assert(remaining < 5);
	t_resp_free(&r);
	t_http(&r, "GET", one_session, org.token, NULL, NULL);
	if (remaining > 0) {
		cr_assert_eq(r.status, 200, "one session after Retry-After: %ld %s", r.status,
		             r.body);
		cr_assert(header_long(&r, "RateLimit-Remaining") < remaining,
		          "the one-statement read took no token");
	} else {
		cr_assert_eq(r.status, 429, "%ld %s", r.status, r.body);
	}
	t_resp_free(&r);
	t_check_invariants(db);
	stop_clean();
}

Test(abuse, rate_limit_zero_turns_it_off)
{
	const char *env[] = {"BULKREG_RATE_LIMIT=0", NULL};
	start_api(env);
	char url[256];
	snprintf(url, sizeof(url), "%s/v1/jobs", base);
	for (int i = 0; i < 150; i++) {
		struct t_resp r;
		t_http(&r, "GET", url, org.token, NULL, NULL);
		cr_assert_eq(r.status, 200, "request %d: %ld %s", i, r.status, r.body);
		cr_assert_null(t_resp_header(&r, "RateLimit-Limit"));
		cr_assert_null(t_resp_header(&r, "RateLimit-Remaining"));
		cr_assert_null(t_resp_header(&r, "RateLimit-Reset"));
		t_resp_free(&r);
	}
	stop_clean();
}

Test(abuse, rate_limit_default_is_announced)
{
	start_api(NULL);
	char url[256];
	struct t_resp r;
	snprintf(url, sizeof(url), "%s/v1/jobs", base);
	t_http(&r, "GET", url, org.token, NULL, NULL);
	cr_assert_eq(r.status, 200);
	cr_assert_eq(header_long(&r, "RateLimit-Limit"), 100); /* 50/s,100 */
	cr_assert_eq(header_long(&r, "RateLimit-Remaining"), 99);
	cr_assert_eq(header_long(&r, "RateLimit-Reset"), 1);
	t_resp_free(&r);
	stop_clean();
}

/* ---- Idempotency-Key ---- */

static const char bulk_body_fmt[] = "{\"data\":{\"type\":\"jobs\",\"attributes\":{\"tasks\":["
                                    "{\"attributes\":{\"email\":\"%s1@example.com\"}},"
                                    "{\"attributes\":{\"email\":\"%s2@example.com\"}}]}}}";

static void bulk_body(char *out, size_t cap, const char *prefix)
{
	snprintf(out, cap, bulk_body_fmt, prefix, prefix);
}

static long post_with_key(struct t_resp *r, const char *url, const char *token, const char *body,
                          const char *key)
{
	char h[512];
	snprintf(h, sizeof(h), "Idempotency-Key: %s", key);
	const char *headers[] = {h, NULL};
	t_http(r, "POST", url, token, body, headers);
	return r->status;
}

static long jobs_of_session(const char *sid)
{
	const char *p[] = {sid};
	return t_sql_long(db, "SELECT count(*) FROM jobs WHERE session_id = $1", 1, p);
}

struct jobs_done {
	const char *sid;
};

static bool session_jobs_done(void *ctx)
{
	struct jobs_done *d = ctx;
	const char *p[] = {d->sid};
	return t_sql_long(
	           db, "SELECT count(*) FROM jobs WHERE session_id = $1 AND status = 'processing'",
	           1, p) == 0;
}

static void start_api_and_worker(void)
{
	start_api(NULL);
	t_worker_start(&worker, NULL);
}

Test(abuse, idempotent_bulk_request_is_replayed)
{
	start_api_and_worker();
	char sid[37], url[256], body[1024], body2[1024];
	make_session(org.token, sid);
	snprintf(url, sizeof(url), "%s/v1/sessions/%s/people/bulk", base, sid);
	bulk_body(body, sizeof(body), "idem");

	struct t_resp a, b, c;
	cr_assert_eq(post_with_key(&a, url, org.token, body, "order-42"), 202, "%s", a.body);
	cr_assert_null(t_resp_header(&a, "Idempotent-Replayed"));
	cr_assert_eq(post_with_key(&b, url, org.token, body, "order-42"), 202, "%s", b.body);
	cr_assert_str_eq(data_id(&a), data_id(&b));
	cr_assert_str_eq(a.location, b.location);
	cr_assert_str_eq(a.body, b.body, "the replay differs:\n%s\n%s", a.body, b.body);
	cr_assert_str_eq(t_resp_header(&b, "Idempotent-Replayed"), "true");
	cr_assert_not_null(t_resp_header(&b, "RateLimit-Remaining"));
	cr_assert_eq(jobs_of_session(sid), 1);

	/* The same key with another body, or on another path: reused. */
	bulk_body(body2, sizeof(body2), "other");
	cr_assert_eq(post_with_key(&c, url, org.token, body2, "order-42"), 422, "%s", c.body);
	cr_assert_str_eq(error_code(&c), "idempotency_key_reused");
	t_resp_free(&c);
	char sid2[37], url2[256];
	make_session(org.token, sid2);
	snprintf(url2, sizeof(url2), "%s/v1/sessions/%s/people/bulk", base, sid2);
	cr_assert_eq(post_with_key(&c, url2, org.token, body, "order-42"), 422, "%s", c.body);
	cr_assert_str_eq(error_code(&c), "idempotency_key_reused");
	t_resp_free(&c);
	cr_assert_eq(jobs_of_session(sid2), 0);

	/* Keys belong to an organization: another one may use the same key. */
	struct t_org other;
	t_org_new(&other);
	char sid3[37], url3[256];
	make_session(other.token, sid3);
	snprintf(url3, sizeof(url3), "%s/v1/sessions/%s/people/bulk", base, sid3);
	cr_assert_eq(post_with_key(&c, url3, other.token, body, "order-42"), 202, "%s", c.body);
	cr_assert_str_neq(data_id(&c), data_id(&a));
	cr_assert_null(t_resp_header(&c, "Idempotent-Replayed"));
	t_resp_free(&c);

	/* A final 4xx is stored and replayed too. */
	cr_assert_eq(post_with_key(&c, url, org.token, "{\"data\":", "bad-json"), 400);
	t_resp_free(&c);
	cr_assert_eq(post_with_key(&c, url, org.token, "{\"data\":", "bad-json"), 400);
	cr_assert_str_eq(error_code(&c), "invalid_json");
	cr_assert_str_eq(t_resp_header(&c, "Idempotent-Replayed"), "true");
	t_resp_free(&c);

	struct jobs_done d = {sid};
	cr_assert(t_poll(session_jobs_done, &d, 60000), "the job did not finish");
	cr_assert_eq(jobs_of_session(sid), 1);
	const char *p[] = {sid};
	cr_assert_eq(t_sql_long(db, "SELECT count(*) FROM people WHERE session_id = $1", 1, p), 2);
	t_resp_free(&a);
	t_resp_free(&b);
	t_check_invariants(db);
	stop_clean();
}

Test(abuse, idempotency_key_must_be_printable_and_short)
{
	start_api(NULL);
	char sid[37], url[256], body[1024];
	make_session(org.token, sid);
	snprintf(url, sizeof(url), "%s/v1/sessions/%s/people/bulk", base, sid);
	bulk_body(body, sizeof(body), "keys");
	char longest[256], too_long[257];
	memset(longest, 'k', 255);
	longest[255] = '\0';
	memset(too_long, 'k', 256);
	too_long[256] = '\0';
	struct t_resp r;
	/* curl sends "Name;" as an empty header. */
	const char *empty[] = {"Idempotency-Key;", NULL};
	t_http(&r, "POST", url, org.token, body, empty);
	cr_assert_eq(r.status, 400, "empty key: %ld %s", r.status, r.body);
	cr_assert_str_eq(error_code(&r), "invalid_parameter");
	cr_assert_str_eq(
	    json_string_value(json_object_get(
	        json_object_get(json_array_get(json_object_get(r.json, "errors"), 0), "source"),
	        "header")),
	    "Idempotency-Key");
	t_resp_free(&r);
	cr_assert_eq(post_with_key(&r, url, org.token, body, too_long), 400, "%s", r.body);
	cr_assert_str_eq(error_code(&r), "invalid_parameter");
	t_resp_free(&r);
	cr_assert_eq(post_with_key(&r, url, org.token, body, "caf\xc3\xa9"), 400, "%s", r.body);
	t_resp_free(&r);
	cr_assert_eq(jobs_of_session(sid), 0);
	cr_assert_eq(post_with_key(&r, url, org.token, body, longest), 202, "%s", r.body);
	t_resp_free(&r);
	cr_assert_eq(post_with_key(&r, url, org.token, body, longest), 202, "%s", r.body);
	cr_assert_str_eq(t_resp_header(&r, "Idempotent-Replayed"), "true");
	t_resp_free(&r);
	cr_assert_eq(jobs_of_session(sid), 1);
	t_check_invariants(db);
	stop_clean();
}

struct racer {
	pthread_barrier_t *start;
	const char *url, *token, *body, *key;
	long status;
	char code[64];
	char job_id[40];
	bool replayed;
	char err[512];
};

static void *race(void *arg)
{
	struct racer *x = arg;
	char h[300];
	snprintf(h, sizeof(h), "Idempotency-Key: %s", x->key);
	const char *headers[] = {h, NULL};
	struct t_resp r;
	pthread_barrier_wait(x->start);
	if (t_http_try(&r, "POST", x->url, x->token, x->body, headers, 0, x->err, sizeof(x->err))) {
		x->status = r.status;
		snprintf(x->code, sizeof(x->code), "%s", error_code(&r));
		snprintf(x->job_id, sizeof(x->job_id), "%s", data_id(&r));
		x->replayed = t_resp_header(&r, "Idempotent-Replayed") != NULL;
	}
	t_resp_free(&r);
	return NULL;
}

/* n requests with one key at once: one runs, the others get 409 or its replay. */
static void race_one_key(int n, const char *key)
{
	char sid[37], url[256], body[1024];
	make_session(org.token, sid);
	snprintf(url, sizeof(url), "%s/v1/sessions/%s/people/bulk", base, sid);
	bulk_body(body, sizeof(body), key);
	pthread_barrier_t start;
	pthread_barrier_init(&start, NULL, (unsigned)n);
	struct racer x[8];
	pthread_t th[8];
	cr_assert(n <= 8);
	for (int i = 0; i < n; i++) {
		x[i] = (struct racer){
		    .start = &start, .url = url, .token = org.token, .body = body, .key = key};
		cr_assert_eq(pthread_create(&th[i], NULL, race, &x[i]), 0);
	}
	for (int i = 0; i < n; i++)
		pthread_join(th[i], NULL);
	pthread_barrier_destroy(&start);
	int ran = 0, in_use = 0, replays = 0;
	const char *job = NULL;
	for (int i = 0; i < n; i++) {
		cr_assert_neq(x[i].status, 0, "request %d failed: %s", i, x[i].err);
		if (x[i].status == 202 && !x[i].replayed) {
			ran++;
			job = x[i].job_id;
		} else if (x[i].status == 202) {
			replays++;
		} else {
			cr_assert_eq(x[i].status, 409, "request %d: %ld %s", i, x[i].status,
			             x[i].code);
			cr_assert_str_eq(x[i].code, "idempotency_key_in_use");
			in_use++;
		}
	}
	cr_assert_eq(ran, 1, "%d requests ran the route (%d in use, %d replays)", ran, in_use,
	             replays);
	for (int i = 0; i < n; i++) {
		if (x[i].status == 202)
			cr_assert_str_eq(x[i].job_id, job);
	}
	cr_assert_eq(jobs_of_session(sid), 1);
	cr_log_info("%d racers: 1 ran, %d got 409, %d got the replay", n, in_use, replays);
	struct jobs_done d = {sid};
	cr_assert(t_poll(session_jobs_done, &d, 60000), "the job did not finish");
}

Test(abuse, concurrent_requests_with_one_key_run_once)
{
	start_api_and_worker();
	race_one_key(2, "race-two");
	race_one_key(8, "race-eight");
	race_one_key(8, "race-eight-again");
	t_check_invariants(db);
	stop_clean();
}

static long people_of_session(const char *sid)
{
	const char *p[] = {sid};
	return t_sql_long(db, "SELECT count(*) FROM people WHERE session_id = $1", 1, p);
}

Test(abuse, idempotent_single_registration_is_replayed)
{
	start_api(NULL);
	char sid[37], url[256];
	make_session(org.token, sid);
	snprintf(url, sizeof(url), "%s/v1/sessions/%s/people", base, sid);
	const char *body = "{\"data\":{\"type\":\"people\",\"attributes\":{\"email\":"
	                   "\"one@example.com\",\"first_name\":\"One\"}}}";
	struct t_resp a, b;
	cr_assert_eq(post_with_key(&a, url, org.token, body, "person-1"), 201, "%s", a.body);
	cr_assert_eq(post_with_key(&b, url, org.token, body, "person-1"), 201, "%s", b.body);
	cr_assert_str_eq(data_id(&a), data_id(&b));
	cr_assert_str_eq(a.body, b.body);
	cr_assert_str_eq(t_resp_header(&b, "Idempotent-Replayed"), "true");
	cr_assert_eq(people_of_session(sid), 1);
	t_resp_free(&b);
	/* Without the key the same person is a duplicate: the route did run again. */
	t_http(&b, "POST", url, org.token, body, NULL);
	cr_assert_eq(b.status, 409);
	cr_assert_str_eq(error_code(&b), "already_registered");
	t_resp_free(&b);
	const char *other = "{\"data\":{\"type\":\"people\",\"attributes\":{\"email\":"
	                    "\"two@example.com\"}}}";
	cr_assert_eq(post_with_key(&b, url, org.token, other, "person-1"), 422, "%s", b.body);
	cr_assert_str_eq(error_code(&b), "idempotency_key_reused");
	t_resp_free(&b);
	cr_assert_eq(people_of_session(sid), 1);
	t_resp_free(&a);
	t_check_invariants(db);
	stop_clean();
}

/* The fingerprint the API stores: SHA-256(method NUL path NUL SHA-256(body)), as bytea text. */
static void fingerprint(const char *method, const char *path, const char *body, char out[67])
{
	unsigned char bd[CR_SHA256_LEN], fp[CR_SHA256_LEN];
	cr_sha256(body, strlen(body), bd);
	char buf[1024];
	size_t ml = strlen(method) + 1, pl = strlen(path) + 1;
	cr_assert(ml + pl + sizeof(bd) <= sizeof(buf));
	memcpy(buf, method, ml);
	memcpy(buf + ml, path, pl);
	memcpy(buf + ml + pl, bd, sizeof(bd));
	cr_sha256(buf, ml + pl + sizeof(bd), fp);
	out[0] = '\\';
	out[1] = 'x';
	cr_hex(fp, sizeof(fp), out + 2);
}

/* Plants an idempotency record as another API process would have left it. */
static void plant(const char *key, const char *hash, const char *age, const char *status,
                  const char *body, const char *location)
{
	const char *p[] = {org.id, key, hash, age, status, body, location};
	PQclear(t_sql(db,
	              "INSERT INTO idempotency_keys (organization_id, key, request_hash,"
	              " created_at, response_status, response_body, response_location)"
	              " VALUES ($1, $2, $3::bytea, now() - $4::interval, $5::int, $6, $7)",
	              7, p));
}

Test(abuse, in_flight_abandoned_and_expired_keys)
{
	start_api_and_worker();
	char sid[37], url[256], path[128], body[1024], hash[67];
	make_session(org.token, sid);
	snprintf(path, sizeof(path), "/v1/sessions/%s/people/bulk", sid);
	snprintf(url, sizeof(url), "%s%s", base, path);
	bulk_body(body, sizeof(body), "planted");
	fingerprint("POST", path, body, hash);
	struct t_resp r;

	/*
	 * Still being handled elsewhere: another API's transaction holds the
	 * key's lock (docs/architecture.md, idempotency). 409, nothing runs.
	 */
	PGconn *holder = t_db();
	const char *lp[] = {org.id, "busy"};
	PQclear(t_sql(holder, "BEGIN", 0, NULL));
	PQclear(t_sql(holder, "SELECT pg_advisory_xact_lock(hashtextextended($1 || ' ' || $2, 0))",
	              2, lp));
	cr_assert_eq(post_with_key(&r, url, org.token, body, "busy"), 409, "%s", r.body);
	cr_assert_str_eq(error_code(&r), "idempotency_key_in_use");
	cr_assert_not_null(t_resp_header(&r, "Retry-After"));
	t_resp_free(&r);
	cr_assert_eq(jobs_of_session(sid), 0);
	/* That request died without committing: the key is free at once. */
	PQclear(t_sql(holder, "ROLLBACK", 0, NULL));
	PQfinish(holder);
	cr_assert_eq(post_with_key(&r, url, org.token, body, "busy"), 202, "%s", r.body);
	cr_assert_null(t_resp_header(&r, "Idempotent-Replayed"));
	t_resp_free(&r);
	cr_assert_eq(jobs_of_session(sid), 1);
	/* ... and another body with that key is now a reuse. */
	char other[1024];
	bulk_body(other, sizeof(other), "else");
	cr_assert_eq(post_with_key(&r, url, org.token, other, "busy"), 422, "%s", r.body);
	t_resp_free(&r);

	/* A record without a response (an earlier release's, in flight when it died) is absent. */
	plant("orphan", hash, "1 second", NULL, NULL, NULL);
	cr_assert_eq(post_with_key(&r, url, org.token, body, "orphan"), 202, "%s", r.body);
	cr_assert_null(t_resp_header(&r, "Idempotent-Replayed"));
	t_resp_free(&r);
	cr_assert_eq(jobs_of_session(sid), 2);
	const char *p[] = {org.id};
	cr_assert_eq(t_sql_long(db,
	                        "SELECT response_status FROM idempotency_keys"
	                        " WHERE organization_id = $1 AND key = 'orphan'",
	                        1, p),
	             202);

	/* A stored response older than 24 h is forgotten: the request runs again. */
	plant("old", hash, "25 hours", "202", "{\"data\":{\"id\":\"stale\"}}", "/v1/jobs/stale");
	cr_assert_eq(post_with_key(&r, url, org.token, body, "old"), 202, "%s", r.body);
	cr_assert_str_neq(data_id(&r), "stale");
	cr_assert_null(t_resp_header(&r, "Idempotent-Replayed"));
	t_resp_free(&r);
	cr_assert_eq(jobs_of_session(sid), 3);

	/* A stored response within 24 h is replayed exactly, whatever it is. */
	plant("kept", hash, "23 hours", "202", "{\"data\":{\"id\":\"kept\"}}", "/v1/jobs/kept");
	cr_assert_eq(post_with_key(&r, url, org.token, body, "kept"), 202, "%s", r.body);
	cr_assert_str_eq(r.body, "{\"data\":{\"id\":\"kept\"}}");
	cr_assert_str_eq(r.location, "/v1/jobs/kept");
	t_resp_free(&r);
	cr_assert_eq(jobs_of_session(sid), 3);

	struct jobs_done d = {sid};
	cr_assert(t_poll(session_jobs_done, &d, 60000), "the jobs did not finish");
	t_check_invariants(db);
	stop_clean();
}

/* ---- authentication ---- */

Test(abuse, revoked_token_is_refused)
{
	start_api(NULL);
	char url[256];
	struct t_resp r;
	snprintf(url, sizeof(url), "%s/v1/jobs", base);
	t_http(&r, "GET", url, org.token, NULL, NULL);
	cr_assert_eq(r.status, 200);
	t_resp_free(&r);

	char prefix[13], out[4096];
	snprintf(prefix, sizeof(prefix), "%.12s", org.token);
	const char *args[] = {"token", "revoke", prefix, NULL};
	cr_assert_eq(t_admin(out, sizeof(out), args), 0, "token revoke: %s", out);

	t_http(&r, "GET", url, org.token, NULL, NULL);
	cr_assert_eq(r.status, 401, "%ld %s", r.status, r.body);
	cr_assert_str_eq(error_code(&r), "unauthorized");
	cr_assert_null(t_resp_header(&r, "RateLimit-Limit"));
	t_resp_free(&r);
	/* Bare token (as Livestorm sends it) is refused as well. */
	char auth[128];
	snprintf(auth, sizeof(auth), "Authorization: %s", org.token);
	const char *h[] = {auth, NULL};
	t_http(&r, "GET", url, NULL, NULL, h);
	cr_assert_eq(r.status, 401);
	t_resp_free(&r);
	char sid_url[256];
	snprintf(sid_url, sizeof(sid_url), "%s/v1/sessions", base);
	t_http(&r, "POST", sid_url, org.token,
	       "{\"data\":{\"type\":\"sessions\",\"attributes\":{\"title\":\"A\"}}}", NULL);
	cr_assert_eq(r.status, 401);
	t_resp_free(&r);
	const char *p[] = {org.id};
	cr_assert_eq(
	    t_sql_long(db, "SELECT count(*) FROM sessions WHERE organization_id = $1", 1, p), 0);
	stop_clean();
}

/* ---- slow clients and connection limits ---- */

static int connect_api(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert(fd >= 0, "socket: %s", strerror(errno));
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)api.port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0, "connect: %s",
	             strerror(errno));
	return fd;
}

/* True when the peer closed fd (EOF or reset) within timeout_ms; data read is dropped. */
static bool closed_within(int fd, int timeout_ms)
{
	long long deadline = t_now_ms() + timeout_ms;
	for (;;) {
		long long left = deadline - t_now_ms();
		if (left <= 0)
			return false;
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, (int)left) <= 0)
			continue;
		char buf[4096];
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
			return true;
	}
}

Test(abuse, slow_clients_are_cut_off)
{
	start_api(NULL);
	/* quiet sends nothing; trickle sends a header line every second (slowloris). */
	int quiet = connect_api(), trickle = connect_api();
	long long t0 = t_now_ms(), quiet_closed = 0, trickle_closed = 0, last_send = 0;
	const char *head = "GET /healthz HTTP/1.1\r\nHost: a\r\n";
	cr_assert(send(trickle, head, strlen(head), MSG_NOSIGNAL) > 0);
	char healthz[128];
	snprintf(healthz, sizeof(healthz), "%s/healthz", base);
	bool served_meanwhile = false;
	while ((!quiet_closed || !trickle_closed) && t_now_ms() - t0 < 40000) {
		if (!quiet_closed && closed_within(quiet, 100))
			quiet_closed = t_now_ms() - t0;
		if (!trickle_closed && t_now_ms() - last_send >= 1000) {
			last_send = t_now_ms();
			if (send(trickle, "X-A: b\r\n", 8, MSG_NOSIGNAL) < 0)
				trickle_closed = t_now_ms() - t0;
		}
		if (!trickle_closed && closed_within(trickle, 100))
			trickle_closed = t_now_ms() - t0;
		if (!served_meanwhile && t_now_ms() - t0 > 5000)
			served_meanwhile = t_http_status(healthz, 5000) == 200;
	}
	close(quiet);
	close(trickle);
	cr_log_info("idle connection closed after %lld ms, slowloris after %lld ms", quiet_closed,
	            trickle_closed);
	cr_assert(served_meanwhile, "the API did not serve others while slow clients waited");
	cr_assert(quiet_closed >= (IDLE_TIMEOUT_S - 2) * 1000 &&
	              quiet_closed <= (IDLE_TIMEOUT_S + 4) * 1000,
	          "silent connection closed after %lld ms", quiet_closed);
	/* The trickle outlived the idle timeout, then the head deadline cut it. */
	cr_assert(trickle_closed > (IDLE_TIMEOUT_S + 1) * 1000 &&
	              trickle_closed <= (HEADER_DEADLINE_S + 4) * 1000,
	          "slowloris connection closed after %lld ms", trickle_closed);
	stop_clean();
}

/*
 * Opens n connections at once, sends a request on each and counts those
 * answered 200 and those refused: answered 503 unavailable (a JSON:API
 * document with Retry-After), or closed unanswered (MHD's own limit, which
 * this test should not reach). All are closed on return.
 */
static void flood(int n, int *answered, int *refused)
{
	enum {
		MAX_FDS = 256
	};
	int fds[MAX_FDS];
	cr_assert(n <= MAX_FDS);
	const char *req = "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n";
	*answered = *refused = 0;
	for (int i = 0; i < n; i++)
		fds[i] = connect_api();
	for (int i = 0; i < n; i++) {
		if (send(fds[i], req, strlen(req), MSG_NOSIGNAL) < 0) {
			(*refused)++;
			continue;
		}
		struct pollfd p = {.fd = fds[i], .events = POLLIN};
		char buf[512];
		ssize_t got = poll(&p, 1, 5000) == 1 ? recv(fds[i], buf, sizeof(buf) - 1, 0) : -2;
		cr_assert_neq(got, -2, "connection %d: no answer and not closed", i);
		if (got > 0)
			buf[got] = '\0';
		if (got > 0 && strncmp(buf, "HTTP/1.1 200", 12) == 0) {
			(*answered)++;
		} else {
			cr_assert(got > 0 && strncmp(buf, "HTTP/1.1 503", 12) == 0 &&
			              strstr(buf, "\"code\":\"unavailable\"") &&
			              strstr(buf, "Retry-After: 1"),
			          "connection %d: neither 200 nor a JSON 503: %s", i,
			          got > 0 ? buf : "(closed)");
			(*refused)++;
		}
	}
	for (int i = 0; i < n; i++)
		close(fds[i]);
}

Test(abuse, connections_from_one_address_are_limited)
{
	start_api(NULL);
	enum {
		EXTRA = 4,
		N = PER_IP_LIMIT + EXTRA,
		ROUNDS = 5
	};
	/*
	 * The server never answers more than the limit. It may answer fewer
	 * while it has not yet reaped a connection this address closed a moment
	 * ago (the readiness probe's, a previous round's), so a short round is
	 * repeated; a full one must come.
	 */
	int answered = 0, refused = 0;
	for (int round = 0; round < ROUNDS; round++) {
		flood(N, &answered, &refused);
		cr_log_info("round %d: %d connections answered, %d refused", round, answered,
		            refused);
		cr_assert_leq(answered, PER_IP_LIMIT, "more connections served than the limit");
		if (answered == PER_IP_LIMIT)
			break;
		sleep_ms(200);
	}
	cr_assert_eq(answered, PER_IP_LIMIT);
	cr_assert_eq(refused, EXTRA);
	/* Once they are gone the address is served again. */
	char healthz[128];
	snprintf(healthz, sizeof(healthz), "%s/healthz", base);
	long long deadline = t_now_ms() + 5000;
	bool served = false;
	while (!served && t_now_ms() < deadline) {
		served = t_http_status(healthz, 1000) == 200;
		if (!served)
			sleep_ms(50);
	}
	cr_assert(served, "the address stayed refused after its connections closed");
	stop_clean();
}

/* ---- request bodies over the limit ---- */

static char *filled(size_t n)
{
	char *s = malloc(n + 1);
	cr_assert_not_null(s);
	memset(s, ' ', n);
	s[0] = '{';
	s[n] = '\0';
	return s;
}

/* Sends a chunked body of total bytes; returns how many the server took before it closed. */
static size_t send_chunked(const char *path, size_t total, char *reply, size_t cap)
{
	int fd = connect_api();
	char head[512];
	int hl = snprintf(head, sizeof(head),
	                  "POST %s HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer %s\r\n"
	                  "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
	                  path, org.token);
	cr_assert(send(fd, head, (size_t)hl, MSG_NOSIGNAL) == hl);
	static char chunk[65536 + 16];
	int cl = snprintf(chunk, sizeof(chunk), "10000\r\n");
	memset(chunk + cl, ' ', 65536);
	memcpy(chunk + cl + 65536, "\r\n", 2);
	size_t clen = (size_t)cl + 65536 + 2, sent = 0;
	while (sent < total) {
		ssize_t n = send(fd, chunk, clen, MSG_NOSIGNAL);
		if (n < 0)
			break;
		sent += 65536;
	}
	if (sent >= total)
		(void)!send(fd, "0\r\n\r\n", 5, MSG_NOSIGNAL);
	reply[0] = '\0';
	struct pollfd p = {.fd = fd, .events = POLLIN};
	if (poll(&p, 1, 10000) == 1) {
		ssize_t n = recv(fd, reply, cap - 1, 0);
		reply[n > 0 ? n : 0] = '\0';
	}
	close(fd);
	return sent;
}

Test(abuse, bodies_over_the_limit_get_413_and_memory_stays_flat)
{
	start_api(NULL);
	char sid[37], path[128], url[256];
	make_session(org.token, sid);
	snprintf(path, sizeof(path), "/v1/sessions/%s/people/bulk", sid);
	snprintf(url, sizeof(url), "%s%s", base, path);
	struct t_resp r;

	/* Exactly at the limit the body is read (and is bad JSON); one byte more is 413. */
	char *at_limit = filled(MAX_BODY);
	t_http(&r, "POST", url, org.token, at_limit, NULL);
	cr_assert_eq(r.status, 400, "%ld %s", r.status, r.body);
	t_resp_free(&r);
	free(at_limit);
	char *over = filled(MAX_BODY + 1);
	t_http(&r, "POST", url, org.token, over, NULL);
	cr_assert_eq(r.status, 413, "%ld %s", r.status, r.body);
	t_resp_free(&r);
	free(over);

	long before = t_rss_kib(api.pid);
	char *two = filled(2u << 20);
	t_http(&r, "POST", url, org.token, two, NULL);
	cr_assert_eq(r.status, 413, "%ld %s", r.status, r.body);
	cr_assert_str_eq(error_code(&r), "payload_too_large");
	cr_assert_str_eq(t_resp_header(&r, "Content-Type"), "application/vnd.api+json");
	t_resp_free(&r);
	free(two);

	char *fifty = filled(50u << 20);
	char err[512];
	bool ok = t_http_try(&r, "POST", url, org.token, fifty, NULL, 30000, err, sizeof(err));
	cr_assert(ok, "50 MiB: %s", err);
	cr_assert_eq(r.status, 413, "%ld %s", r.status, r.body);
	t_resp_free(&r);
	free(fifty);

	/* Without Content-Length the server cannot refuse up front: it drops, then cuts. */
	char reply[1024];
	size_t taken = send_chunked(path, 2u << 20, reply, sizeof(reply));
	cr_assert_eq(taken, 2u << 20);
	cr_assert(strncmp(reply, "HTTP/1.1 413", 12) == 0, "chunked 2 MiB: %s", reply);
	taken = send_chunked(path, 50u << 20, reply, sizeof(reply));
	cr_assert(taken < (50u << 20), "the server read all 50 MiB of a chunked body");

	long after = t_rss_kib(api.pid);
	cr_log_info("bulkreg-api RSS %ld KiB before, %ld KiB after 2 + 50 MiB bodies (x2)", before,
	            after);
	cr_assert(after - before < 16 * 1024, "RSS grew by %ld KiB", after - before);
	cr_assert_eq(jobs_of_session(sid), 0);
	t_check_invariants(db);
	stop_clean();
}
