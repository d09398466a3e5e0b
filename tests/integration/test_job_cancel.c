/*
 * test_job_cancel.c - what DELETE /v1/jobs/:id does to a processing job
 * (cancel_or_delete_job(), sql/functions/jobs.sql; docs/openapi.yaml):
 *   - a cancel that arrives while a batch is registering some of the job's
 *     tasks waits for that batch: what it committed keeps its outcome,
 *     everything else is cancelled, and a batch that rolled back leaves
 *     its tasks cancellable;
 *   - the job ends `cancelled` only when the cancel cancelled something in
 *     that run, and a retry_failed run of a once-cancelled job ends as its
 *     own tasks say.
 * Each test commits what two connections must both see, in an organization
 * of its own.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "support.h"

struct two {
	struct t_org org;
	PGconn *db;     /* the test's own statements */
	PGconn *worker; /* a batch's transaction */
	char sid[37];
	char job[37];
};

static void setup(struct two *t, int tasks)
{
	t_org_new(&t->org);
	t->db = t_db();
	t->worker = t_db();
	/* A wait that never ends is a failure, not a stuck test. */
	PQclear(t_sql(t->db, "SET statement_timeout = '20s'", 0, NULL));
	t_session_sql(t->db, t->org.id, "cancel", t->sid);
	t_job_sql(t->db, t->org.id, t->sid, tasks, t->job);
}

static void teardown(struct two *t)
{
	t_check_invariants(t->db);
	PQfinish(t->worker);
	PQfinish(t->db);
}

/* The worker's open transaction registers the given indexes (claiming nothing more). */
static void batch_open(struct two *t, const char *indexes)
{
	const char *p[] = {t->job, indexes};
	PQclear(t_sql(t->worker, "BEGIN", 0, NULL));
	PQclear(t_sql(t->worker,
	              "SELECT * FROM process_batch((SELECT array_agg(id) FROM tasks"
	              " WHERE job_id = $1 AND idx = ANY ($2::int[])), 0)",
	              2, p));
}

/* Sends the cancel on t->db without waiting for its answer. */
static void cancel_send(struct two *t)
{
	const char *p[] = {t->org.id, t->job};
	cr_assert(PQsendQueryParams(t->db, "SELECT outcome FROM cancel_or_delete_job($1, $2)", 2,
	                            NULL, p, NULL, NULL, 0),
	          "%s", PQerrorMessage(t->db));
}

static void cancel_wait(struct two *t, const char *want)
{
	PGresult *res = PQgetResult(t->db);
	cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s", PQresultErrorMessage(res));
	cr_expect_str_eq(PQgetvalue(res, 0, 0), want);
	PQclear(res);
	while ((res = PQgetResult(t->db)))
		PQclear(res);
}

/* "status success fail cancelled" of the job. */
static char *job_state(struct two *t)
{
	const char *p[] = {t->job};
	return t_sql_text(t->db,
	                  "SELECT format('%s %s %s %s', status, total_success, total_fail,"
	                  " total_cancelled) FROM jobs WHERE id = $1",
	                  1, p);
}

Test(job_cancel, a_cancel_waits_for_the_batch_and_cancels_the_rest)
{
	struct two t;
	setup(&t, 5);
	batch_open(&t, "{1}"); /* registers 0 and 1, holding the job */
	cancel_send(&t);
	/* The cancel waits: the job's row is the batch's. */
	cr_assert(t_poll(t_waits_for_lock, t.db, 20000), "the cancel is not waiting for the batch");
	PQclear(t_sql(t.worker, "COMMIT", 0, NULL));
	cancel_wait(&t, "cancelled");
	char *st = job_state(&t);
	cr_expect_str_eq(st, "cancelled 2 0 3");
	free(st);
	teardown(&t);
}

Test(job_cancel, a_batch_that_rolled_back_leaves_its_tasks_cancellable)
{
	struct two t;
	setup(&t, 4);
	batch_open(&t, "{3}"); /* takes all four */
	cancel_send(&t);
	PQclear(t_sql(t.worker, "ROLLBACK", 0, NULL));
	cancel_wait(&t, "cancelled");
	char *st = job_state(&t);
	cr_expect_str_eq(st, "cancelled 0 0 4");
	free(st);
	teardown(&t);
}

Test(job_cancel, a_cancel_after_the_last_task_deletes_the_finished_job)
{
	struct two t;
	setup(&t, 3);
	batch_open(&t, "{2}");
	cancel_send(&t);
	PQclear(t_sql(t.worker, "COMMIT", 0, NULL));
	/* The job ended before the cancel got it: it is finished, so deleted. */
	cancel_wait(&t, "deleted");
	const char *p[] = {t.job};
	cr_expect_eq(t_sql_long(t.db, "SELECT count(*) FROM jobs WHERE id = $1", 1, p), 0);
	teardown(&t);
}

Test(job_cancel, each_run_ends_as_its_own_tasks_say)
{
	struct two t;
	t_org_new(&t.org);
	t.db = t_db();
	t.worker = t_db();
	t_session_sql(t.db, t.org.id, "runs", t.sid);
	/* Rows 0 and 1 are one person: 1 fails already_registered; 2 gets cancelled. */
	const char *p[] = {t.org.id, t.sid};
	char *id =
	    t_sql_text(t.db,
	               "SELECT job_id FROM create_job($1, $2, 'register', false, false, false,"
	               " '[{\"email\":\"a@example.com\"},{\"email\":\"A@example.com\"},"
	               "   {\"email\":\"b@example.com\"}]')",
	               2, p);
	snprintf(t.job, sizeof(t.job), "%s", id);
	free(id);
	batch_open(&t, "{1}");
	PQclear(t_sql(t.worker, "COMMIT", 0, NULL));
	cancel_send(&t);
	cancel_wait(&t, "cancelled");
	char *st = job_state(&t);
	cr_expect_str_eq(st, "cancelled 1 1 1");
	free(st);

	/* The failed row again, as an update: that run cancelled nothing. */
	const char *r[] = {t.org.id, t.job};
	char *outcome = t_sql_text(t.db, "SELECT outcome FROM retry_failed($1, $2, true)", 2, r);
	cr_expect_str_eq(outcome, "retried");
	free(outcome);
	batch_open(&t, "{1}");
	PQclear(t_sql(t.worker, "COMMIT", 0, NULL));
	st = job_state(&t);
	cr_expect_str_eq(st, "ended 2 0 1");
	free(st);
	teardown(&t);
}
