/*
 * test_jobs.c - job control (docs/openapi.yaml Jobs): listing with filters and
 * pages, retry_failed, cancel and delete, with counters exact through every
 * transition and one job.ended per completion.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "support.h"

TestSuite(jobs, .timeout = 300);

struct ctx {
	struct t_org org;
	struct t_proc api;
	char base[64];
	PGconn *db;
};

static void start(struct ctx *c)
{
	c->db = t_db();
	t_org_new(&c->org);
	t_api_start(&c->api, NULL);
	snprintf(c->base, sizeof(c->base), "http://127.0.0.1:%d", c->api.port);
}

static void make_session(struct ctx *c, const char *attrs, char *id)
{
	t_session_new(c->base, c->org.token, attrs, id);
}

/* n people prefix<i>@example.com; returns the job id. */
static void post_job(struct ctx *c, const char *sid, const char *prefix, int n, char *job_id)
{
	static char body[65536];
	size_t len = (size_t)snprintf(body, sizeof(body),
	                              "{\"data\":{\"type\":\"jobs\",\"attributes\":{\"tasks\":[");
	for (int i = 0; i < n; i++)
		len += (size_t)snprintf(body + len, sizeof(body) - len,
		                        "%s{\"attributes\":{\"email\":\"%s%d@example.com\"}}",
		                        i ? "," : "", prefix, i);
	snprintf(body + len, sizeof(body) - len, "]}}}");
	char url[256];
	struct t_resp r;
	snprintf(url, sizeof(url), "%s/v1/sessions/%s/people/bulk", c->base, sid);
	t_http(&r, "POST", url, c->org.token, body, NULL);
	cr_assert_eq(r.status, 202, "bulk: %ld %s", r.status, r.body);
	snprintf(job_id, 37, "%s",
	         json_string_value(json_object_get(json_object_get(r.json, "data"), "id")));
	t_resp_free(&r);
}

struct done {
	PGconn *db;
	const char *job_id;
};

static bool job_done(void *arg)
{
	struct done *d = arg;
	const char *p[] = {d->job_id};
	return t_sql_long(d->db,
	                  "SELECT count(*) FROM jobs WHERE id = $1 AND status <> 'processing'", 1,
	                  p) == 1;
}

static void wait_done(struct ctx *c, const char *job_id)
{
	struct done d = {c->db, job_id};
	cr_assert(t_poll(job_done, &d, 60000), "job %s did not finish", job_id);
}

static long job_long(struct ctx *c, const char *job_id, const char *col)
{
	char sql[160];
	snprintf(sql, sizeof(sql), "SELECT %s FROM jobs WHERE id = $1", col);
	const char *p[] = {job_id};
	return t_sql_long(c->db, sql, 1, p);
}

static long put_retry(struct ctx *c, const char *job_id, const char *body, char *code, size_t cap)
{
	char url[256];
	struct t_resp r;
	snprintf(url, sizeof(url), "%s/v1/jobs/%s", c->base, job_id);
	t_http(&r, "PUT", url, c->org.token, body, NULL);
	long status = r.status;
	const char *s = json_string_value(
	    json_object_get(json_array_get(json_object_get(r.json, "errors"), 0), "code"));
	if (code)
		snprintf(code, cap, "%s", s ? s : "");
	t_resp_free(&r);
	return status;
}

static long ended_events(struct ctx *c, const char *job_id)
{
	const char *p[] = {job_id};
	return t_sql_long(
	    c->db, "SELECT count(*) FROM webhook_events WHERE job_id = $1 AND type = 'job.ended'",
	    1, p);
}

Test(jobs, retry_failed_with_and_without_override)
{
	struct ctx c;
	start(&c);
	struct t_proc w;
	t_worker_start(&w, NULL);
	char sid[37], first[37], job[37], code[64];
	make_session(&c, "{\"title\":\"Retry\"}", sid);
	post_job(&c, sid, "r", 5, first);
	wait_done(&c, first);
	post_job(&c, sid, "r", 8, job); /* r0..r4 are duplicates now */
	wait_done(&c, job);
	cr_assert_eq(job_long(&c, job, "total_fail"), 5);
	cr_assert_eq(job_long(&c, job, "total_processed_items"), 8);

	/* Without override the same five fail again: a new completion, a new event. */
	cr_assert_eq(put_retry(&c, job, "{\"action\":\"retry_failed\"}", code, sizeof(code)), 202);
	wait_done(&c, job);
	cr_assert_eq(job_long(&c, job, "retry_count"), 1);
	cr_assert_eq(job_long(&c, job, "total_fail"), 5);
	cr_assert_eq(ended_events(&c, job), 2);

	/* With override they succeed and update the people. */
	cr_assert_eq(put_retry(&c, job,
	                       "{\"action\":\"retry_failed\",\"override_duplicates\":true}", code,
	                       sizeof(code)),
	             202);
	wait_done(&c, job);
	cr_assert_eq(job_long(&c, job, "retry_count"), 2);
	cr_assert_eq(job_long(&c, job, "total_fail"), 0);
	cr_assert_eq(job_long(&c, job, "total_success"), 8);
	const char *p[] = {job};
	cr_assert_eq(
	    t_sql_long(c.db, "SELECT count(*) FROM jobs WHERE id = $1 AND status = 'ended'", 1, p),
	    1);
	cr_assert_eq(ended_events(&c, job), 3);
	const char *ps[] = {sid};
	cr_assert_eq(t_sql_long(c.db, "SELECT count(*) FROM people WHERE session_id = $1", 1, ps),
	             8);

	/* Nothing left to retry. */
	cr_assert_eq(put_retry(&c, job, "{\"action\":\"retry_failed\"}", code, sizeof(code)), 409);
	cr_assert_str_eq(code, "nothing_to_retry");
	cr_assert_eq(put_retry(&c, job, "{\"action\":\"retry_all\"}", code, sizeof(code)), 422);
	t_check_invariants(c.db);
	t_proc_stop(&w, SIGTERM, 20000);
	t_proc_stop(&c.api, SIGTERM, 20000);
	PQfinish(c.db);
}

struct racer {
	struct ctx *c;
	const char *job;
	long status;
};

static void *race(void *arg)
{
	struct racer *rc = arg;
	rc->status = put_retry(rc->c, rc->job, "{\"action\":\"retry_failed\"}", NULL, 0);
	return NULL;
}

Test(jobs, retry_while_processing_and_concurrent_retries)
{
	struct ctx c;
	start(&c);
	struct t_proc w;
	t_worker_start(&w, NULL);
	char sid[37], job[37], code[64];
	make_session(&c, "{\"title\":\"Race\",\"capacity\":2}", sid);
	post_job(&c, sid, "q", 6, job); /* 4 fail with session_full */
	wait_done(&c, job);
	cr_assert_eq(job_long(&c, job, "total_fail"), 4);
	/* No worker: a retried job stays processing. */
	cr_assert_eq(t_proc_stop(&w, SIGTERM, 20000), 0);

	struct racer a = {&c, job, 0}, b = {&c, job, 0};
	pthread_t ta, tb;
	pthread_create(&ta, NULL, race, &a);
	pthread_create(&tb, NULL, race, &b);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	cr_assert((a.status == 202 && b.status == 409) || (a.status == 409 && b.status == 202),
	          "concurrent retries answered %ld and %ld", a.status, b.status);
	cr_assert_eq(job_long(&c, job, "retry_count"), 1);
	cr_assert_eq(put_retry(&c, job, "{\"action\":\"retry_failed\"}", code, sizeof(code)), 409);
	cr_assert_str_eq(code, "job_in_progress");
	cr_assert_eq(job_long(&c, job, "total_processed_items"), 2);

	t_worker_start(&w, NULL);
	wait_done(&c, job);
	cr_assert_eq(job_long(&c, job, "total_fail"), 4);
	cr_assert_eq(ended_events(&c, job), 2);
	t_check_invariants(c.db);
	t_proc_stop(&w, SIGTERM, 20000);
	t_proc_stop(&c.api, SIGTERM, 20000);
	PQfinish(c.db);
}

#define BACKLOG_JOBS 12

Test(jobs, cancel_during_a_backlog)
{
	struct ctx c;
	start(&c);
	char sid[37], jobs[BACKLOG_JOBS][37];
	make_session(&c, "{\"title\":\"Backlog\"}", sid);
	for (int i = 0; i < BACKLOG_JOBS; i++) {
		char prefix[16];
		snprintf(prefix, sizeof(prefix), "b%d-", i);
		post_job(&c, sid, prefix, 50, jobs[i]);
	}
	/*
	 * One consumer works through the backlog while we cancel half of it,
	 * the latest jobs first, so most cancels land on jobs not yet reached.
	 * A batch registers a whole job at once, so the earliest may already
	 * have ended: their DELETE answers 200 and deletes them, as the
	 * contract says; only the jobs that were cancelled are followed.
	 */
	static const char *const slow[] = {"BULKREG_WORKER_CONCURRENCY=1",
	                                   "BULKREG_WORKER_PREFETCH=1", NULL};
	struct t_proc w;
	t_worker_start(&w, slow);
	bool gone[BACKLOG_JOBS] = {false};
	int cancelled = 0, first_cancelled = -1;
	for (int i = BACKLOG_JOBS - 2; i >= 0; i -= 2) {
		char url[256];
		struct t_resp r;
		snprintf(url, sizeof(url), "%s/v1/jobs/%.36s", c.base, jobs[i]);
		t_http(&r, "DELETE", url, c.org.token, NULL, NULL);
		cr_assert(r.status == 202 || r.status == 200, "cancel: %ld %s", r.status, r.body);
		gone[i] = r.status == 200;
		if (r.status == 202) {
			cancelled++;
			first_cancelled = i;
		}
		t_resp_free(&r);
	}
	cr_assert_geq(cancelled, BACKLOG_JOBS / 4, "only %d of %d cancels found the job running",
	              cancelled, BACKLOG_JOBS / 2);
	for (int i = 0; i < BACKLOG_JOBS; i++) {
		const char *p[] = {jobs[i]};
		if (gone[i])
			cr_assert_eq(
			    t_sql_long(c.db, "SELECT count(*) FROM jobs WHERE id = $1", 1, p), 0,
			    "job %d answered 200 to DELETE but is still there", i);
		else
			wait_done(&c, jobs[i]);
	}
	for (int i = 0; i < BACKLOG_JOBS; i++) {
		if (gone[i])
			continue;
		cr_assert_eq(ended_events(&c, jobs[i]), 1, "job %d has %ld job.ended", i,
		             ended_events(&c, jobs[i]));
		cr_assert_eq(job_long(&c, jobs[i], "total_processed_items"), 50);
		const char *p[] = {jobs[i]};
		if (i % 2 == 0)
			cr_assert_eq(t_sql_long(c.db,
			                        "SELECT count(*) FROM jobs WHERE id = $1 AND "
			                        "status IN ('cancelled', 'ended')",
			                        1, p),
			             1);
		/* No cancelled task ever registered anybody. */
		cr_assert_eq(
		    t_sql_long(c.db,
		               "SELECT count(*) FROM tasks t JOIN people p ON p.task_id = t.id"
		               " WHERE t.job_id = $1 AND t.status = 'cancelled'",
		               1, p),
		    0);
	}
	/* A late redelivery of every message of a cancelled job changes nothing. */
	const char *late = jobs[first_cancelled];
	long before = job_long(&c, late, "total_cancelled");
	t_republish_job(c.db, late);
	cr_assert(t_poll(t_tasks_queue_empty, NULL, 30000));
	cr_assert_eq(job_long(&c, late, "total_cancelled"), before);
	cr_assert_eq(ended_events(&c, late), 1);
	/* Everybody registered once: a deleted job had ended with all 50. */
	const char *ps[] = {sid};
	long deleted = 0;
	for (int i = 0; i < BACKLOG_JOBS; i++)
		deleted += gone[i];
	cr_assert_eq(
	    t_sql_long(c.db, "SELECT count(*) FROM people WHERE session_id = $1", 1, ps),
	    t_sql_long(c.db,
	               "SELECT coalesce(sum(total_success), 0) FROM jobs WHERE session_id = $1", 1,
	               ps) +
	        50 * deleted);
	t_check_invariants(c.db);
	t_proc_stop(&w, SIGTERM, 20000);
	t_proc_stop(&c.api, SIGTERM, 20000);
	PQfinish(c.db);
}

Test(jobs, late_redelivery_after_retry_and_delete)
{
	struct ctx c;
	start(&c);
	struct t_proc w;
	t_worker_start(&w, NULL);
	char sid[37], job[37], code[64];
	make_session(&c, "{\"title\":\"Late\",\"capacity\":3}", sid);
	post_job(&c, sid, "l", 5, job);
	wait_done(&c, job);
	cr_assert_eq(put_retry(&c, job, "{\"action\":\"retry_failed\"}", code, sizeof(code)), 202);
	wait_done(&c, job);
	long processed = job_long(&c, job, "total_processed_items");
	t_republish_job(c.db, job); /* every original message again, late */
	cr_assert(t_poll(t_tasks_queue_empty, NULL, 30000));
	cr_assert_eq(job_long(&c, job, "total_processed_items"), processed);
	cr_assert_eq(ended_events(&c, job), 2);

	/* Deleting a finished job removes it and its tasks, not the people. */
	char url[512];
	struct t_resp r;
	snprintf(url, sizeof(url), "%s/v1/jobs/%s", c.base, job);
	t_http(&r, "DELETE", url, c.org.token, NULL, NULL);
	cr_assert_eq(r.status, 200);
	char msg[160];
	snprintf(msg, sizeof(msg), "Bulk registration job %s deleted", job);
	cr_assert_str_eq(
	    json_string_value(json_object_get(json_object_get(r.json, "meta"), "message")), msg);
	t_resp_free(&r);
	t_http(&r, "GET", url, c.org.token, NULL, NULL);
	cr_assert_eq(r.status, 404);
	t_resp_free(&r);
	const char *p[] = {job}, *ps[] = {sid};
	cr_assert_eq(t_sql_long(c.db, "SELECT count(*) FROM tasks WHERE job_id = $1", 1, p), 0);
	cr_assert_eq(t_sql_long(c.db, "SELECT count(*) FROM people WHERE session_id = $1", 1, ps),
	             3);
	/* Messages of a deleted job are acked and dropped. */
	cr_assert(t_poll(t_tasks_queue_empty, NULL, 30000));
	t_check_invariants(c.db);
	t_proc_stop(&w, SIGTERM, 20000);
	t_proc_stop(&c.api, SIGTERM, 20000);
	PQfinish(c.db);
}

Test(jobs, list_filters_and_pages)
{
	struct ctx c;
	start(&c);
	struct t_proc w;
	t_worker_start(&w, NULL);
	char s1[37], s2[37], ids[5][37];
	make_session(&c, "{\"title\":\"L1\"}", s1);
	make_session(&c, "{\"title\":\"L2\",\"capacity\":0}", s2);
	post_job(&c, s1, "a", 2, ids[0]);
	post_job(&c, s1, "b", 2, ids[1]);
	post_job(&c, s2, "c", 2, ids[2]); /* capacity 0: fails */
	post_job(&c, s1, "d", 2, ids[3]);
	post_job(&c, s2, "e", 2, ids[4]); /* fails */
	for (int i = 0; i < 5; i++)
		wait_done(&c, ids[i]);
	char url[512];
	struct t_resp r;
	/* Newest first, two per page, three pages. */
	int nseen = 0;
	for (int pg = 0; pg < 3; pg++) {
		snprintf(url, sizeof(url), "%s/v1/jobs?page[number]=%d&page[size]=2", c.base, pg);
		t_http(&r, "GET", url, c.org.token, NULL, NULL);
		cr_assert_eq(r.status, 200);
		json_t *meta = json_object_get(r.json, "meta");
		cr_assert_eq(json_integer_value(json_object_get(meta, "record_count")), 5);
		cr_assert_eq(json_integer_value(json_object_get(meta, "page_count")), 3);
		json_t *data = json_object_get(r.json, "data");
		for (size_t i = 0; i < json_array_size(data); i++) {
			const char *id =
			    json_string_value(json_object_get(json_array_get(data, i), "id"));
			cr_assert_str_eq(id, ids[4 - nseen], "page %d item %zu out of order", pg,
			                 i);
			nseen++;
		}
		t_resp_free(&r);
	}
	cr_assert_eq(nseen, 5);
	snprintf(url, sizeof(url), "%s/v1/jobs?page[number]=3&page[size]=2", c.base);
	t_http(&r, "GET", url, c.org.token, NULL, NULL);
	cr_assert_eq(r.status, 400);
	t_resp_free(&r);
	snprintf(url, sizeof(url), "%s/v1/jobs?filter[status]=failed", c.base);
	t_http(&r, "GET", url, c.org.token, NULL, NULL);
	cr_assert_eq(json_array_size(json_object_get(r.json, "data")), 2u);
	t_resp_free(&r);
	snprintf(url, sizeof(url), "%s/v1/jobs?filter[session_id]=%s&filter[status]=ended", c.base,
	         s1);
	t_http(&r, "GET", url, c.org.token, NULL, NULL);
	cr_assert_eq(json_array_size(json_object_get(r.json, "data")), 3u);
	t_resp_free(&r);
	snprintf(url, sizeof(url), "%s/v1/jobs?filter[status]=done", c.base);
	t_http(&r, "GET", url, c.org.token, NULL, NULL);
	cr_assert_eq(r.status, 400);
	t_resp_free(&r);
	t_check_invariants(c.db);
	t_proc_stop(&w, SIGTERM, 20000);
	t_proc_stop(&c.api, SIGTERM, 20000);
	PQfinish(c.db);
}
