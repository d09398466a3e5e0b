/*
 * test_fault_lifecycle.c - the life of a registration under concurrency and
 * crashes (docs/guarantees.md §10): waitlist promotion while cancellations
 * and capacity changes race, transitions of one person racing each other,
 * duplicates across email and external_id sent at once, and a bulk cancel
 * whose worker is SIGKILLed in the middle of the job. Every case checks
 * exactly who holds a seat and who waits, in which order, not only that
 * the counters agree.
 */
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "support.h"

#define JOB_WAIT_MS   120000
#define CRASH_WAIT_MS 120000
#define MAX_OPS       64

static struct t_proc api;
static struct t_org org;
static PGconn *db;
static char base[64];

static void setup(void)
{
	static const char *const env[] = {"BULKREG_MAX_TASKS=200", NULL};
	db = t_db();
	t_org_new(&org);
	t_api_start(&api, env);
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", api.port);
}

static void teardown(void)
{
	t_proc_stop(&api, SIGTERM, 20000);
	PQfinish(db);
}

TestSuite(fault_lifecycle, .init = setup, .fini = teardown, .timeout = 600);

/* ---- requests sent at once ---- */

struct op {
	const char *method;
	char url[256];
	char body[512];
	long status;
	pthread_barrier_t *start;
};

static void *op_main(void *arg)
{
	struct op *o = arg;
	struct t_resp r;
	pthread_barrier_wait(o->start);
	t_http(&r, o->method, o->url, org.token, o->body[0] ? o->body : NULL, NULL);
	o->status = r.status;
	t_resp_free(&r);
	return NULL;
}

/* Sends every op at the same instant (a barrier) and waits for all answers. */
static void run_at_once(struct op *ops, int n)
{
	pthread_t th[MAX_OPS];
	pthread_barrier_t start;
	cr_assert_leq(n, MAX_OPS);
	pthread_barrier_init(&start, NULL, (unsigned)n);
	for (int i = 0; i < n; i++) {
		ops[i].start = &start;
		cr_assert_eq(pthread_create(&th[i], NULL, op_main, &ops[i]), 0);
	}
	for (int i = 0; i < n; i++)
		pthread_join(th[i], NULL);
	pthread_barrier_destroy(&start);
}

/* An op of method on the API's path (a format) with body (or NULL). */
static void op_set(struct op *o, const char *method, const char *body, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void op_set(struct op *o, const char *method, const char *body, const char *fmt, ...)
{
	va_list ap;
	int n = snprintf(o->url, sizeof(o->url), "%s", base);
	va_start(ap, fmt);
	vsnprintf(o->url + n, sizeof(o->url) - (size_t)n, fmt, ap);
	va_end(ap);
	o->method = method;
	snprintf(o->body, sizeof(o->body), "%s", body ? body : "");
	o->status = 0;
}

/* ---- fixtures ---- */

static void session_new(const char *attrs, char sid[37])
{
	t_session_new(base, org.token, attrs, sid);
}

static bool job_done(void *ctx)
{
	const char *params[] = {ctx};
	return t_sql_long(db, "SELECT count(*) FROM jobs WHERE id = $1 AND status <> 'processing'",
	                  1, params) == 1;
}

/*
 * POSTs a bulk job of n tasks (action NULL: a registration) naming people
 * "<prefix>-<i>" by external_id (and address <prefix>-<i>@x.org when
 * registering), indexes from..from+n-1 in the order given by idx (NULL:
 * ascending); writes the job id.
 */
static void bulk(const char *sid, const char *action, const char *prefix, const int *idx, int n,
                 char job[37])
{
	size_t cap = 256 + (size_t)n * 128;
	char *body = malloc(cap), url[256];
	cr_assert_not_null(body);
	int at =
	    snprintf(body, cap, "{\"data\":{\"type\":\"jobs\",\"attributes\":{%s%s%s\"tasks\":[",
	             action ? "\"action\":\"" : "", action ? action : "", action ? "\"," : "");
	for (int i = 0; i < n; i++) {
		int k = idx ? idx[i] : i;
		if (action)
			at += snprintf(body + at, cap - (size_t)at,
			               "%s{\"attributes\":{\"external_id\":\"%s-%d\"}}",
			               i ? "," : "", prefix, k);
		else
			at += snprintf(body + at, cap - (size_t)at,
			               "%s{\"attributes\":{\"external_id\":\"%s-%d\","
			               "\"email\":\"%s-%d@x.org\"}}",
			               i ? "," : "", prefix, k, prefix, k);
	}
	snprintf(body + at, cap - (size_t)at, "]}}}");
	snprintf(url, sizeof(url), "%s/v1/sessions/%s/people/bulk", base, sid);
	struct t_resp r;
	t_http(&r, "POST", url, org.token, body, NULL);
	cr_assert_eq(r.status, 202, "bulk %s: %ld %s", action ? action : "register", r.status,
	             r.body);
	snprintf(job, 37, "%s",
	         json_string_value(json_object_get(json_object_get(r.json, "data"), "id")));
	t_resp_free(&r);
	free(body);
}

static void wait_job(char job[37], const char *expect_status)
{
	cr_assert(t_poll(job_done, job, JOB_WAIT_MS), "job %s never finished", job);
	const char *params[] = {job};
	char *st = t_sql_text(db, "SELECT status FROM jobs WHERE id = $1", 1, params);
	cr_assert_str_eq(st, expect_status, "job %s ended %s", job, st);
	free(st);
}

/* The external ids of a session's people of one status, in waitlist order then position. */
static char *people_of(const char *sid, const char *status)
{
	const char *params[] = {sid, status};
	return t_sql_text(db,
	                  "SELECT coalesce(string_agg(external_id, ' '"
	                  "       ORDER BY waitlist_seq NULLS FIRST, position), '')"
	                  " FROM people WHERE session_id = $1 AND registration_status = $2",
	                  2, params);
}

static long session_long(const char *sid, const char *column)
{
	char sql[128];
	const char *params[] = {sid};
	snprintf(sql, sizeof(sql), "SELECT %s FROM sessions WHERE id = $1", column);
	return t_sql_long(db, sql, 1, params);
}

/* Appends "<prefix>-<i>" for i in [from, to) to out. */
static void ids_range(char *out, size_t cap, const char *prefix, int from, int to)
{
	size_t at = strlen(out);
	for (int i = from; i < to; i++)
		at += (size_t)snprintf(out + at, cap - at, "%s%s-%d", at ? " " : "", prefix, i);
}

static void shuffle(int *v, int n, unsigned *seed)
{
	for (int i = n - 1; i > 0; i--) {
		int j = (int)(rand_r(seed) % (unsigned)(i + 1)), t = v[i];
		v[i] = v[j];
		v[j] = t;
	}
}

/* The waitlist positions of a session are 1..n in waitlist order. */
static void expect_positions(const char *sid)
{
	const char *params[] = {sid};
	long bad = t_sql_long(db,
	                      "SELECT count(*) FROM (SELECT (person_resource(p, '')->'attributes'"
	                      "  ->>'waitlist_position')::int AS pos,"
	                      "  row_number() OVER (ORDER BY p.waitlist_seq) AS n"
	                      " FROM people p WHERE p.session_id = $1"
	                      "   AND p.registration_status = 'waitlisted') x WHERE pos <> n",
	                      1, params);
	cr_expect_eq(bad, 0, "%ld waitlist positions are not 1..n in order", bad);
}

/* ---- the tests ---- */

/*
 * 50 people: 20 registered, 30 waitlisted in index order. Then, all at
 * once: 15 of the registered cancel and the capacity changes 6 times.
 * Whatever the interleaving, seats are free only when nobody waits, so the
 * end state is exact: min(capacity, 35) seats held, by the 5 who stayed and
 * the head of the waiting list in its order; the rest still wait, in order.
 */
Test(fault_lifecycle, promotion_under_concurrent_cancellations_and_capacity_changes)
{
	struct t_proc w1, w2;
	t_worker_start(&w1, NULL);
	t_worker_start(&w2, NULL);
	unsigned seed = (unsigned)t_now_ms();
	cr_log_info("seed %u", seed);
	for (int round = 0; round < 4; round++) {
		char sid[37], job[37], prefix[16];
		snprintf(prefix, sizeof(prefix), "r%d", round);
		session_new("{\"title\":\"promotion\",\"capacity\":20,\"waitlist\":true}", sid);
		bulk(sid, NULL, prefix, NULL, 50, job);
		wait_job(job, "ended");
		char want[2048] = "";
		ids_range(want, sizeof(want), prefix, 20, 50);
		char *got = people_of(sid, "waitlisted");
		cr_assert_str_eq(got, want, "the waiting list after registration");
		free(got);

		int order[20], nops = 0;
		for (int i = 0; i < 20; i++)
			order[i] = i;
		shuffle(order, 20, &seed);
		struct op ops[21];
		for (int i = 0; i < 15; i++) {
			char ext[32];
			snprintf(ext, sizeof(ext), "%s-%d", prefix, order[i]);
			op_set(&ops[nops++], "DELETE", NULL,
			       "/v1/sessions/%s/people?external_id=%s", sid, ext);
		}
		for (int i = 0; i < 6; i++) {
			char body[160];
			snprintf(
			    body, sizeof(body),
			    "{\"data\":{\"type\":\"sessions\",\"attributes\":{\"capacity\":%d}}}",
			    10 + (int)(rand_r(&seed) % 31));
			op_set(&ops[nops++], "PATCH", body, "/v1/sessions/%s", sid);
		}
		run_at_once(ops, nops);
		for (int i = 0; i < nops; i++)
			cr_expect(ops[i].status == 200 ||
			              (ops[i].status == 422 && strcmp(ops[i].method, "PATCH") == 0),
			          "round %d: %s %s answered %ld", round, ops[i].method, ops[i].url,
			          ops[i].status);

		long capacity = session_long(sid, "capacity");
		long held = capacity < 35 ? capacity : 35;
		/* The 5 who stayed (by position), then the promoted in waitlist order. */
		char stayed[2048] = "", promoted[2048] = "", waiting[2048] = "";
		for (int i = 0; i < 20; i++) {
			bool cancelled = false;
			for (int k = 0; k < 15; k++)
				cancelled = cancelled || order[k] == i;
			if (!cancelled)
				ids_range(stayed, sizeof(stayed), prefix, i, i + 1);
		}
		ids_range(promoted, sizeof(promoted), prefix, 20, 20 + (int)held - 5);
		ids_range(waiting, sizeof(waiting), prefix, 20 + (int)held - 5, 50);
		char registered[4096];
		snprintf(registered, sizeof(registered), "%s%s%s", stayed, promoted[0] ? " " : "",
		         promoted);
		got = people_of(sid, "registered");
		/* people_of orders promoted people (no waitlist_seq now) by position too. */
		cr_expect_str_eq(got, registered, "round %d (capacity %ld): seat holders", round,
		                 capacity);
		free(got);
		got = people_of(sid, "waitlisted");
		cr_expect_str_eq(got, waiting, "round %d (capacity %ld): still waiting", round,
		                 capacity);
		free(got);
		cr_expect_eq(session_long(sid, "registrants_count"), held);
		expect_positions(sid);
		t_check_invariants(db);
	}
	t_proc_stop(&w1, SIGTERM, 20000);
	t_proc_stop(&w2, SIGTERM, 20000);
}

static char *person_id(const char *sid, const char *ext)
{
	const char *params[] = {sid, ext};
	return t_sql_text(db, "SELECT id FROM people WHERE session_id = $1 AND external_id = $2", 2,
	                  params);
}

static long events_of(const char *person)
{
	const char *params[] = {person};
	return t_sql_long(db,
	                  "SELECT count(*) FROM webhook_events"
	                  " WHERE type = 'person.updated' AND person_id = $1",
	                  1, params);
}

/*
 * Ten pending people, each approved and denied at the same instant (exactly
 * one of the two wins, the other is 409), then ten more also cancelled at
 * that instant (the cancel always applies; approve and deny at most once
 * between them). Each change that happened is one person.updated event.
 */
Test(fault_lifecycle, transitions_of_one_person_race)
{
	char sid[37];
	session_new("{\"title\":\"race\",\"capacity\":30,\"approval\":\"manual\"}", sid);
	const char *params[] = {org.id};
	PQclear(t_sql(db,
	              "INSERT INTO webhook_endpoints (organization_id, url, events, secret)"
	              " VALUES ($1, 'http://127.0.0.1:9/hook', '{person.updated}', 'whsec_x')",
	              1, params));
	for (int round = 0; round < 2; round++) {
		struct op ops[30];
		int nops = 0;
		for (int i = 0; i < 10; i++) {
			char url[160], body[160];
			snprintf(url, sizeof(url), "%s/v1/sessions/%s/people", base, sid);
			snprintf(body, sizeof(body),
			         "{\"data\":{\"type\":\"people\",\"attributes\":{\"external_id\":"
			         "\"t%d-%d\"}}}",
			         round, i);
			struct t_resp r;
			t_http(&r, "POST", url, org.token, body, NULL);
			cr_assert_eq(r.status, 201);
			const char *id = json_string_value(
			    json_object_get(json_object_get(r.json, "data"), "id"));
			static const char *const to[] = {"registered", "denied"};
			for (int k = 0; k < 2; k++) {
				snprintf(body, sizeof(body),
				         "{\"data\":{\"type\":\"people\",\"attributes\":"
				         "{\"registration_status\":\"%s\"}}}",
				         to[k]);
				op_set(&ops[nops++], "PATCH", body, "/v1/sessions/%s/people/%s",
				       sid, id);
			}
			if (round == 1)
				op_set(&ops[nops++], "DELETE", NULL, "/v1/sessions/%s/people/%s",
				       sid, id);
			t_resp_free(&r);
		}
		run_at_once(ops, nops);
		int per = round == 0 ? 2 : 3;
		for (int i = 0; i < 10; i++) {
			struct op *o = &ops[i * per];
			int wins = (o[0].status == 200) + (o[1].status == 200);
			for (int k = 0; k < 2; k++)
				cr_expect(o[k].status == 200 || o[k].status == 409,
				          "%s answered %ld", o[k].url, o[k].status);
			char ext[16];
			snprintf(ext, sizeof(ext), "t%d-%d", round, i);
			char *pid = person_id(sid, ext);
			const char *pp[] = {pid};
			char *status = t_sql_text(
			    db, "SELECT registration_status FROM people WHERE id = $1", 1, pp);
			if (round == 0) {
				cr_expect_eq(wins, 1, "%s: %d of approve and deny applied", ext,
				             wins);
				cr_expect_str_eq(status,
				                 o[0].status == 200 ? "registered" : "denied");
				cr_expect_eq(events_of(pid), 1, "%s: events", ext);
			} else {
				cr_expect_leq(wins, 1, "%s: approve and deny both applied", ext);
				cr_expect_eq(o[2].status, 200, "%s: the cancel answered %ld", ext,
				             o[2].status);
				cr_expect_str_eq(status, "cancelled");
				cr_expect_eq(events_of(pid), 1 + wins, "%s: events", ext);
			}
			free(status);
			free(pid);
		}
		t_check_invariants(db);
	}
}

static long post_person(const char *sid, const char *attrs)
{
	char url[160], body[512];
	struct t_resp r;
	snprintf(url, sizeof(url), "%s/v1/sessions/%s/people", base, sid);
	snprintf(body, sizeof(body), "{\"data\":{\"type\":\"people\",\"attributes\":%s}}", attrs);
	t_http(&r, "POST", url, org.token, body, NULL);
	long status = r.status;
	t_resp_free(&r);
	return status;
}

/*
 * One person sent twelve times at once under both identities (the address
 * in varying case): one 201. The address alone and the external id alone,
 * six times each at once: one person each, and then the pair names two
 * people (409). A bulk job and single requests racing for the same twenty
 * people: each of them exactly once.
 */
Test(fault_lifecycle, duplicates_across_email_and_external_id_race)
{
	struct t_proc w1, w2;
	char sid[37];
	session_new("{\"title\":\"dups\"}", sid);
	static const char *const spelling[] = {"dup@x.org", "DUP@X.ORG", "Dup@x.Org"};
	struct op ops[40];
	for (int i = 0; i < 12; i++) {
		char body[256];
		snprintf(body, sizeof(body),
		         "{\"data\":{\"type\":\"people\",\"attributes\":{\"email\":\"%s\","
		         "\"external_id\":\"dup-1\"}}}",
		         spelling[i % 3]);
		op_set(&ops[i], "POST", body, "/v1/sessions/%s/people", sid);
	}
	run_at_once(ops, 12);
	int created = 0;
	for (int i = 0; i < 12; i++) {
		created += ops[i].status == 201;
		cr_expect(ops[i].status == 201 || ops[i].status == 409, "answered %ld",
		          ops[i].status);
	}
	cr_expect_eq(created, 1, "%d people made of one", created);

	for (int i = 0; i < 12; i++) {
		const char *attrs = i % 2 == 0   ? "{\"external_id\":\"solo-1\"}"
		                    : i % 4 == 1 ? "{\"email\":\"solo@x.org\"}"
		                                 : "{\"email\":\"SOLO@x.org\"}";
		char body[256];
		snprintf(body, sizeof(body), "{\"data\":{\"type\":\"people\",\"attributes\":%s}}",
		         attrs);
		op_set(&ops[i], "POST", body, "/v1/sessions/%s/people", sid);
	}
	run_at_once(ops, 12);
	created = 0;
	for (int i = 0; i < 12; i++)
		created += ops[i].status == 201;
	cr_expect_eq(created, 2, "%d people made of two", created);
	cr_expect_eq(post_person(sid, "{\"email\":\"solo@x.org\",\"external_id\":\"solo-1\"}"),
	             409);
	cr_expect_eq(session_long(sid, "people_count"), 3);

	/* The bulk job is accepted while no worker runs, then raced. */
	char job[37];
	bulk(sid, NULL, "b", NULL, 20, job);
	for (int i = 0; i < 20; i++) {
		char body[256];
		snprintf(body, sizeof(body),
		         "{\"data\":{\"type\":\"people\",\"attributes\":{\"email\":\"B-%d@X.ORG\","
		         "\"external_id\":\"b-%d\"}}}",
		         i, i);
		op_set(&ops[i], "POST", body, "/v1/sessions/%s/people", sid);
	}
	t_worker_start(&w1, NULL);
	t_worker_start(&w2, NULL);
	run_at_once(ops, 20);
	wait_job(job, "ended");
	for (int i = 0; i < 20; i++) {
		char idx[16];
		snprintf(idx, sizeof(idx), "%d", i);
		const char *params[] = {job, idx};
		long task_won = t_sql_long(db,
		                           "SELECT count(*) FROM tasks WHERE job_id = $1"
		                           " AND idx = $2::int AND status = 'succeeded'",
		                           2, params);
		cr_expect_eq(task_won + (ops[i].status == 201), 1,
		             "b-%d: the task %s, the request answered %ld", i,
		             task_won ? "registered them" : "failed", ops[i].status);
	}
	cr_expect_eq(session_long(sid, "people_count"), 23);
	t_check_invariants(db);
	t_proc_stop(&w1, SIGTERM, 20000);
	t_proc_stop(&w2, SIGTERM, 20000);
}

/*
 * 200 registered, 200 waiting; a bulk cancel of 150 of the registered, in
 * random order, is processed by a worker that SIGKILLs itself at its
 * second batch (fault point), and finished by another. The job ends with
 * 150 successes; the first 150 of the waiting list (in its order) hold the
 * freed seats; each cancellation and each promotion is one person.updated.
 */
static void bulk_cancel_killed(const char *fault)
{
	struct t_proc w;
	char sid[37], job[37];
	session_new("{\"title\":\"bulk cancel\",\"capacity\":200,\"waitlist\":true}", sid);
	const char *params[] = {org.id};
	PQclear(t_sql(db,
	              "INSERT INTO webhook_endpoints (organization_id, url, events, secret)"
	              " VALUES ($1, 'http://127.0.0.1:9/hook', '{person.updated}', 'whsec_x')",
	              1, params));
	t_worker_start(&w, NULL);
	bulk(sid, NULL, "k", NULL, 200, job);
	wait_job(job, "ended");
	int idx[200];
	for (int i = 0; i < 200; i++)
		idx[i] = 200 + i;
	bulk(sid, NULL, "k", idx, 200, job);
	wait_job(job, "ended");
	t_proc_stop(&w, SIGTERM, 20000);

	unsigned seed = (unsigned)t_now_ms();
	for (int i = 0; i < 200; i++)
		idx[i] = i;
	shuffle(idx, 200, &seed);
	const char *const env[] = {fault, NULL};
	t_worker_start(&w, env);
	bulk(sid, "cancel", "k", idx, 150, job);
	int rc = t_proc_stop(&w, 0, CRASH_WAIT_MS);
	if (rc != 128 + SIGKILL)
		t_proc_print_log(&w, 40);
	cr_assert_eq(rc, 128 + SIGKILL, "the worker armed with %s ended with %d", fault, rc);
	const char *jp[] = {job};
	long before = t_sql_long(db, "SELECT total_processed_items FROM jobs WHERE id = $1", 1, jp);
	cr_log_info("seed %u; %s: %ld of 150 cancelled before the crash", seed, fault, before);
	cr_expect_lt(before, 150, "the crash came after the whole job");
	t_worker_start(&w, NULL);
	wait_job(job, "ended");
	cr_expect_eq(t_sql_long(db, "SELECT total_success FROM jobs WHERE id = $1", 1, jp), 150);

	char *stayed = people_of(sid, "registered");
	/* The 50 who stayed come first (by position), then the promoted (positions 200..349). */
	char sorted[8192] = "";
	int keep[50];
	for (int i = 0; i < 50; i++)
		keep[i] = idx[150 + i];
	for (int i = 0; i < 50; i++) {
		for (int j = i + 1; j < 50; j++) {
			if (keep[j] < keep[i]) {
				int t = keep[i];
				keep[i] = keep[j];
				keep[j] = t;
			}
		}
	}
	for (int i = 0; i < 50; i++)
		ids_range(sorted, sizeof(sorted), "k", keep[i], keep[i] + 1);
	ids_range(sorted, sizeof(sorted), "k", 200, 350);
	cr_expect_str_eq(stayed, sorted, "seat holders after the bulk cancel");
	free(stayed);
	char waiting[4096] = "";
	ids_range(waiting, sizeof(waiting), "k", 350, 400);
	char *got = people_of(sid, "waitlisted");
	cr_expect_str_eq(got, waiting, "still waiting");
	free(got);
	expect_positions(sid);
	const char *sp[] = {sid};
	cr_expect_eq(t_sql_long(db,
	                        "SELECT count(*) FROM people p WHERE p.session_id = $1"
	                        " AND (SELECT count(*) FROM webhook_events e"
	                        "      WHERE e.type = 'person.updated' AND e.person_id = p.id)"
	                        "     <> (p.registration_status IN ('cancelled') OR"
	                        "         p.position >= 200 AND p.registration_status ="
	                        "         'registered')::int",
	                        1, sp),
	             0, "people whose person.updated events are not exactly one per change");
	t_check_invariants(db);
	t_proc_stop(&w, SIGTERM, 20000);
}

Test(fault_lifecycle, bulk_cancel_with_a_worker_killed_mid_transaction)
{
	bulk_cancel_killed("BULKREG_FAULT=worker_mid_transaction:2");
}

Test(fault_lifecycle, bulk_cancel_with_a_worker_killed_after_a_commit)
{
	bulk_cancel_killed("BULKREG_FAULT=worker_after_commit:2");
}
