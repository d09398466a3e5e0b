/*
 * test_redelivery.c - at-least-once delivery, exactly-once effect: a task
 * message delivered twice, and a task whose transaction committed before
 * its worker could ack, change nothing the second time.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "support.h"

TestSuite(redelivery, .timeout = 180);

static void make_session(const char *base, const struct t_org *org, char *id)
{
	t_session_new(base, org->token, "{\"title\":\"Redelivery\"}", id);
}

/* Posts n people; returns the job id. */
static void post_job(const char *base, const struct t_org *org, const char *sid, int n,
                     char *job_id)
{
	char url[256], body[8192];
	size_t len = (size_t)snprintf(body, sizeof(body),
	                              "{\"data\":{\"type\":\"jobs\",\"attributes\":{\"tasks\":[");
	for (int i = 0; i < n; i++)
		len += (size_t)snprintf(body + len, sizeof(body) - len,
		                        "%s{\"attributes\":{\"email\":\"r%d@example.com\"}}",
		                        i ? "," : "", i);
	snprintf(body + len, sizeof(body) - len, "]}}}");
	struct t_resp r;
	snprintf(url, sizeof(url), "%s/v1/sessions/%s/people/bulk", base, sid);
	t_http(&r, "POST", url, org->token, body, NULL);
	cr_assert_eq(r.status, 202, "bulk: %ld %s", r.status, r.body);
	snprintf(job_id, 37, "%s",
	         json_string_value(json_object_get(json_object_get(r.json, "data"), "id")));
	t_resp_free(&r);
}

struct done_ctx {
	PGconn *db;
	const char *job_id;
};

static bool job_done(void *ctx)
{
	struct done_ctx *d = ctx;
	const char *p[] = {d->job_id};
	return t_sql_long(d->db,
	                  "SELECT count(*) FROM jobs WHERE id = $1 AND status <> 'processing'", 1,
	                  p) == 1;
}

static void check_once(PGconn *db, const char *sid, const char *job_id, int n)
{
	const char *ps[] = {sid}, *pj[] = {job_id};
	cr_assert_eq(t_sql_long(db, "SELECT count(*) FROM people WHERE session_id = $1", 1, ps), n);
	cr_assert_eq(t_sql_long(db, "SELECT total_processed_items FROM jobs WHERE id = $1", 1, pj),
	             n);
	cr_assert_eq(t_sql_long(db, "SELECT total_success FROM jobs WHERE id = $1", 1, pj), n);
	cr_assert_eq(t_sql_long(db,
	                        "SELECT count(*) FROM webhook_events WHERE job_id = $1 AND type = "
	                        "'job.ended'",
	                        1, pj),
	             1);
	t_check_invariants(db);
}

Test(redelivery, every_message_delivered_twice)
{
	PGconn *db = t_db();
	struct t_org org;
	t_org_new(&org);
	struct t_proc api, worker;
	t_api_start(&api, NULL);
	char base[64], sid[37], job_id[37];
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", api.port);
	make_session(base, &org, sid);
	post_job(base, &org, sid, 20, job_id); /* no worker yet: the messages wait */
	t_republish_job(db, job_id);           /* every task now has two messages */
	t_worker_start(&worker, NULL);
	struct done_ctx d = {db, job_id};
	cr_assert(t_poll(job_done, &d, 30000));
	cr_assert(t_poll(t_tasks_queue_empty, NULL, 30000), "duplicates left in bulkreg.tasks");
	check_once(db, sid, job_id, 20);
	cr_assert_eq(t_proc_stop(&worker, SIGTERM, 20000), 0);
	cr_assert_eq(t_proc_stop(&api, SIGTERM, 20000), 0);
	PQfinish(db);
}

Test(redelivery, committed_but_never_acked)
{
	PGconn *db = t_db();
	struct t_org org;
	t_org_new(&org);
	struct t_proc api, worker;
	t_api_start(&api, NULL);
	char base[64], sid[37], job_id[37];
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", api.port);
	make_session(base, &org, sid);
	post_job(base, &org, sid, 10, job_id);
	/*
	 * A worker that committed the first half and died before acking: the
	 * transaction is exactly what the worker runs; the messages stay queued.
	 */
	const char *pj[] = {job_id};
	PGresult *res = t_sql(db,
	                      "SELECT count(*) FROM process_tasks(ARRAY(SELECT id FROM tasks "
	                      "WHERE job_id = $1 AND idx < 5))",
	                      1, pj);
	PQclear(res);
	t_worker_start(&worker, NULL);
	struct done_ctx d = {db, job_id};
	cr_assert(t_poll(job_done, &d, 30000));
	cr_assert(t_poll(t_tasks_queue_empty, NULL, 30000));
	check_once(db, sid, job_id, 10);
	cr_assert_eq(t_sql_long(db,
	                        "SELECT count(*) FROM tasks WHERE job_id = $1 AND error_code = "
	                        "'already_registered'",
	                        1, pj),
	             0);
	cr_assert_eq(t_proc_stop(&worker, SIGTERM, 20000), 0);
	cr_assert_eq(t_proc_stop(&api, SIGTERM, 20000), 0);
	PQfinish(db);
}
