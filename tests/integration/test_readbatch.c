/*
 * test_readbatch.c - GETs of one resource batched into one statement
 * (api/readbatch.h), against the real database and the API's own
 * statements (route_jobs_read, route_sessions_read):
 * - under concurrent load every request gets its own answer: its token's
 *   organization, its resource, NULL for another organization's, and no
 *   row for an unknown or revoked token;
 * - requests that arrive while a batch is at the database go together in
 *   the next one, one batch per statement, and each still gets its row;
 * - with the database unreachable every request gets the failure, and
 *   none waits forever.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "app.h"
#include "crypto.h"
#include "readbatch.h"
#include "support.h"

#define READ_TIMEOUT_MS 15000
#define TEST_TIMEOUT_S  120
#define THREADS         16
#define ROUNDS          300

/* What the test reads with: three organizations, a session each for A and B, a job of A. */
struct fixture {
	struct t_org a, b, c; /* c's token is revoked */
	char hex_a[65], hex_b[65], hex_c[65], hex_unknown[65];
	char session_a[37], session_b[37], job_a[37], missing[37];
};

static struct fixture fx;

static void digest_hex(const char *token, char hex[65])
{
	unsigned char d[CR_SHA256_LEN];
	cr_sha256(token, strlen(token), d);
	cr_hex(d, sizeof(d), hex);
}

static void fixture_setup(void)
{
	t_org_new(&fx.a);
	t_org_new(&fx.b);
	t_org_new(&fx.c);
	digest_hex(fx.a.token, fx.hex_a);
	digest_hex(fx.b.token, fx.hex_b);
	digest_hex(fx.c.token, fx.hex_c);
	digest_hex("brk_no-such-token", fx.hex_unknown);
	t_uuid(fx.missing);
	PGconn *db = t_db();
	const char *pc[] = {fx.c.id};
	PQclear(t_sql(db, "UPDATE api_tokens SET revoked_at = now() WHERE organization_id = $1", 1,
	              pc));
	t_session_sql(db, fx.a.id, "reads", fx.session_a);
	t_session_sql(db, fx.b.id, "reads", fx.session_b);
	const char *pj[] = {fx.a.id, fx.session_a};
	PGresult *res =
	    t_sql(db,
	          "SELECT job_id FROM create_job($1, $2, 'register', false, false, false,"
	          " '[{\"email\": \"reads@example.com\"}]'::jsonb)",
	          2, pj);
	cr_assert_eq(PQntuples(res), 1, "create_job made no job");
	snprintf(fx.job_a, sizeof(fx.job_a), "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	PQfinish(db);
}

/* The job's one task was never published: it goes with its job. */
static void fixture_teardown(void)
{
	if (!fx.job_a[0])
		return;
	PGconn *db = t_db();
	const char *p[] = {fx.job_a};
	PQclear(t_sql(db, "DELETE FROM jobs WHERE id = $1", 1, p));
	PQfinish(db);
}

/* One read and what it must find: org NULL when the token must be refused. */
struct read {
	const db_stmt *stmt;
	const char *hex, *id;
	const char *org;     /* the organization the token belongs to, or NULL */
	const char *want_id; /* the resource's id in the answer, or NULL for none */
	br_status st;
	struct rb_row row;
};

static void read_case(struct read *r, int k)
{
	const db_stmt *sessions = &route_sessions_read.stmt, *jobs = &route_jobs_read.stmt;
	struct read cases[] = {
	    {sessions, fx.hex_a, fx.session_a, fx.a.id, fx.session_a, BR_OK, {0}},
	    {sessions, fx.hex_a, fx.session_b, fx.a.id, NULL, BR_OK, {0}},
	    {sessions, fx.hex_b, fx.session_b, fx.b.id, fx.session_b, BR_OK, {0}},
	    {sessions, fx.hex_c, fx.session_a, NULL, NULL, BR_OK, {0}},
	    {jobs, fx.hex_unknown, fx.job_a, NULL, NULL, BR_OK, {0}},
	    {jobs, fx.hex_a, fx.job_a, fx.a.id, fx.job_a, BR_OK, {0}},
	    {jobs, fx.hex_b, fx.job_a, fx.b.id, NULL, BR_OK, {0}},
	    {jobs, fx.hex_a, fx.missing, fx.a.id, NULL, BR_OK, {0}},
	};
	*r = cases[k % (int)(sizeof(cases) / sizeof(cases[0]))];
}

/* NULL when r got what it must, else what was wrong (a string literal). */
static const char *read_check(const struct read *r)
{
	if (r->st != BR_OK)
		return "the read failed";
	if (!r->org)
		return r->row.authenticated ? "a refused token was accepted" : NULL;
	if (!r->row.authenticated)
		return "a valid token was refused";
	if (strcmp(r->row.org_id, r->org) != 0)
		return "the answer carries another organization";
	if (!r->want_id)
		return r->row.resource ? "another organization's resource was returned" : NULL;
	if (!r->row.resource)
		return "the resource was not found";
	char needle[64];
	snprintf(needle, sizeof(needle), "\"%s\"", r->want_id);
	return strstr(r->row.resource, needle) ? NULL : "the answer is another resource";
}

static readbatch *test_rb;
static db_pool *pool;

static void *read_thread(void *arg)
{
	struct read *r = arg;
	r->st = rb_read(test_rb, r->stmt, r->hex, r->id, &r->row);
	return NULL;
}

static void batcher_new(const char *url)
{
	static const struct db_opts opts = {.statement_timeout_ms = READ_TIMEOUT_MS};
	pool = db_pool_new(url, &opts, 2);
	cr_assert(pool);
	test_rb = rb_new(pool, READ_TIMEOUT_MS);
	cr_assert(test_rb);
}

static void batcher_free(void)
{
	rb_free(test_rb);
	db_pool_free(pool);
	test_rb = NULL;
	pool = NULL;
}

/* ---- every request gets its own answer under load ---- */

struct worker {
	pthread_t thread;
	int first;
	int wrong;
	const char *why;
};

static void *load_thread(void *arg)
{
	struct worker *w = arg;
	for (int i = 0; i < ROUNDS; i++) {
		struct read r;
		read_case(&r, w->first + i);
		r.st = rb_read(test_rb, r.stmt, r.hex, r.id, &r.row);
		const char *why = read_check(&r);
		if (r.st == BR_OK)
			free(r.row.resource);
		if (why) {
			w->wrong++;
			w->why = why;
		}
	}
	return NULL;
}

Test(readbatch, every_request_gets_its_own_answer_under_load, .init = fixture_setup,
     .fini = fixture_teardown, .timeout = TEST_TIMEOUT_S)
{
	batcher_new(t_database_url());
	struct worker w[THREADS] = {0};
	for (int i = 0; i < THREADS; i++) {
		w[i].first = i;
		cr_assert_eq(pthread_create(&w[i].thread, NULL, load_thread, &w[i]), 0);
	}
	int wrong = 0;
	for (int i = 0; i < THREADS; i++) {
		pthread_join(w[i].thread, NULL);
		cr_expect_eq(w[i].wrong, 0, "thread %d: %d wrong answers, the last: %s", i,
		             w[i].wrong, w[i].why);
		wrong += w[i].wrong;
	}
	struct rb_stats s;
	rb_get_stats(test_rb, &s);
	cr_expect_eq(s.requests, (unsigned long)THREADS * ROUNDS, "%lu requests served of %d",
	             s.requests, THREADS * ROUNDS);
	cr_expect(s.statements >= 1 && s.statements < s.requests,
	          "%lu statements for %lu requests: no batch served two", s.statements, s.requests);
	cr_expect_eq(s.waiting, 0);
	cr_expect_eq(s.leaders, 0);
	cr_log_info("%lu requests in %lu statements (%d wrong)", s.requests, s.statements, wrong);
	batcher_free();
}

/* ---- requests that wait share the next statement ---- */

static unsigned want_waiting;

static bool queued(void *ctx)
{
	(void)ctx;
	struct rb_stats s;
	rb_get_stats(test_rb, &s);
	return s.leaders == 1 && s.waiting == (int)want_waiting;
}

Test(readbatch, requests_that_arrive_meanwhile_share_the_next_statement, .init = fixture_setup,
     .fini = fixture_teardown, .timeout = TEST_TIMEOUT_S)
{
	batcher_new(t_database_url());
	/* The first batch waits for this lock at the database. */
	PGconn *lock = t_db();
	PQclear(t_sql(lock, "BEGIN", 0, NULL));
	PQclear(t_sql(lock, "LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE", 0, NULL));

	/*
	 * 0 leads alone; behind it six sessions and two jobs, a job among the
	 * sessions: the sessions' batch leaves it queued for the jobs' batch.
	 */
	int kinds[] = {0, 0, 1, 5, 2, 3, 1, 2, 4};
	enum {
		N = sizeof(kinds) / sizeof(kinds[0])
	};
	struct read r[N];
	pthread_t th[N];
	for (int i = 0; i < N; i++) {
		read_case(&r[i], kinds[i]);
		cr_assert_eq(pthread_create(&th[i], NULL, read_thread, &r[i]), 0);
		want_waiting = (unsigned)i;
		cr_assert(t_poll(queued, NULL, READ_TIMEOUT_MS),
		          "request %d did not queue behind the first batch", i);
	}
	PQclear(t_sql(lock, "ROLLBACK", 0, NULL));
	PQfinish(lock);
	for (int i = 0; i < N; i++) {
		pthread_join(th[i], NULL);
		const char *why = read_check(&r[i]);
		cr_expect(!why, "request %d: %s", i, why);
		if (r[i].st == BR_OK)
			free(r[i].row.resource);
	}
	struct rb_stats s;
	rb_get_stats(test_rb, &s);
	cr_expect_eq(s.requests, (unsigned long)N);
	cr_expect_eq(s.statements, 3,
	             "%lu statements: want one for the first request, one for the six "
	             "sessions queued behind it, one for the two jobs among them",
	             s.statements);
	batcher_free();
}

/* ---- the database's failure is every request's ---- */

Test(readbatch, an_unreachable_database_fails_every_request, .timeout = TEST_TIMEOUT_S)
{
	char url[128];
	snprintf(url, sizeof(url), "postgresql://bulkreg@127.0.0.1:%d/bulkreg", t_free_port());
	batcher_new(url);
	char hex[65], id[37];
	digest_hex("brk_whatever", hex);
	t_uuid(id);
	struct read r[6];
	pthread_t th[6];
	for (int i = 0; i < 6; i++) {
		r[i] = (struct read){.stmt = &route_jobs_read.stmt, .hex = hex, .id = id};
		cr_assert_eq(pthread_create(&th[i], NULL, read_thread, &r[i]), 0);
	}
	for (int i = 0; i < 6; i++) {
		pthread_join(th[i], NULL);
		cr_expect_eq(r[i].st, BR_DB_CONN, "request %d: %s", i, br_strerror(r[i].st));
	}
	struct rb_stats s;
	rb_get_stats(test_rb, &s);
	cr_expect_eq(s.requests, 6);
	cr_expect_eq(s.waiting, 0);
	batcher_free();
}
