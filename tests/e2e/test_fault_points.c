/*
 * test_fault_points.c - a crash at each test-only fault point (common/fault.h;
 * issue 6, fault test 2; issue 7's crash in the middle of a batch).
 *
 * A worker armed with BULKREG_FAULT=NAME:N SIGKILLs itself the Nth time it
 * reaches the point. It runs alone on a backlog, so it certainly gets
 * there; then a clean worker pair finishes the work:
 *   worker_mid_transaction  the batch's transaction dies open: rolled back,
 *                           its deliveries redelivered and processed once;
 *   worker_after_commit     the batch committed, never acked: redelivered,
 *                           and the redelivery changes nothing;
 *   worker_parked           a batch committed and left the deliveries of a
 *                           session another transaction held parked,
 *                           unacked: they come back, and so does what the
 *                           crash left unacked;
 *   publish_before_confirm  the API dies after committing a job and sending
 *                           its messages, before reading the confirms: the
 *                           client gets no answer, the job stays unpublished
 *                           and the workers' sweeper publishes it.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>

#include "fleet.h"

#define BACKLOG_JOBS  10
#define TASKS         50
#define CRASH_WAIT_MS 120000
#define LOG_WAIT_MS   10000

TestSuite(fault_points, .timeout = 600);

static void backlog(struct t_fleet *f, const char *prefix, int jobs)
{
	char sid[37], p[48];
	t_fleet_session(f, sid);
	for (int i = 0; i < jobs; i++) {
		snprintf(p, sizeof(p), "%s%d", prefix, i);
		t_fleet_post_ok(f, sid, p, TASKS, NULL);
	}
}

/* Waits for worker 0 to crash at point; returns the tasks processed by then. */
static long await_crash(struct t_fleet *f, const char *point)
{
	int rc = t_proc_stop(&f->workers[0], 0, CRASH_WAIT_MS);
	if (rc != 128 + SIGKILL)
		t_proc_print_log(&f->workers[0], 40);
	cr_assert_eq(rc, 128 + SIGKILL, "the worker armed at %s ended with %d", point, rc);
	cr_assert_eq(t_fleet_log_count(&f->workers[0], "fault point", point), 1,
	             "the worker died, but not at %s", point);
	return t_fleet_processed(f);
}

/*
 * A worker crashes at point (its nth passage) on a backlog it holds alone,
 * so it certainly gets there with work left; a clean pair finishes. With
 * `held`, a transaction of the test holds the row of one of the backlog's
 * two sessions until the crash, so the worker's batches leave that
 * session's deliveries parked.
 */
static void worker_point(const char *name, const char *fault, const char *const *extra_env,
                         bool held)
{
	struct t_fleet f;
	t_fleet_init(&f, name, NULL, NULL);
	char sid[37];
	PGconn *holder = NULL;
	backlog(&f, "p", BACKLOG_JOBS / 2);
	t_fleet_session(&f, sid);
	for (int i = 0; i < BACKLOG_JOBS / 2; i++) {
		char p[16];
		snprintf(p, sizeof(p), "h%d", i);
		t_fleet_post_ok(&f, sid, p, TASKS, NULL);
	}
	if (held) {
		const char *ps[] = {sid};
		holder = t_db();
		PQclear(t_sql(holder, "BEGIN", 0, NULL));
		PQclear(
		    t_sql(holder, "SELECT 1 FROM sessions WHERE id = $1 FOR NO KEY UPDATE", 1, ps));
	}
	const char *env[8] = {fault, NULL};
	int n = 1;
	for (const char *const *kv = extra_env; kv && *kv && n < 7; kv++)
		env[n++] = *kv;
	env[n] = NULL;
	t_fleet_worker_spawn(&f, 0, env);
	const char *armed = strchr(fault, '=') + 1;
	char point[64];
	snprintf(point, sizeof(point), "%.*s", (int)strcspn(armed, ":"), armed);
	long before = await_crash(&f, point);
	t_fleet_note(&f, "crashed with %ld of %d tasks committed;", before, BACKLOG_JOBS * TASKS);
	cr_assert_lt(before, BACKLOG_JOBS * TASKS, "the crash came after all the work");
	if (holder) {
		PQclear(t_sql(holder, "ROLLBACK", 0, NULL));
		PQfinish(holder);
	}

	/* More work while the redeliveries are processed. */
	t_fleet_worker_start(&f, 0, NULL);
	t_fleet_worker_start(&f, 1, NULL);
	backlog(&f, "q", 4);
	t_fleet_verify(&f);
	t_fleet_stop(&f);
}

Test(fault_points, worker_mid_transaction)
{
	worker_point("worker_mid_transaction", "BULKREG_FAULT=worker_mid_transaction:3", NULL,
	             false);
}

Test(fault_points, worker_after_commit)
{
	worker_point("worker_after_commit", "BULKREG_FAULT=worker_after_commit:3", NULL, false);
}

/*
 * Issue 7: a worker taking up to 16 deliveries per transaction, and
 * claiming the rest of their jobs up to 64 tasks, is killed inside its 4th
 * batch's transaction. One consumer thread on a backlog of 500 tasks: a
 * whole job or more of registrations dies together, and every one must come
 * back exactly once.
 */
Test(fault_points, worker_killed_in_the_middle_of_a_batch)
{
	static const char *const env[] = {"BULKREG_WORKER_PREFETCH=16",
	                                  "BULKREG_WORKER_CONCURRENCY=1", NULL};
	worker_point("mid-batch (prefetch 16)", "BULKREG_FAULT=worker_mid_transaction:4", env,
	             false);
}

/*
 * One of the backlog's two sessions is held by another transaction: the
 * worker's batches register the other session's tasks and park the held
 * one's deliveries, unacked; the first time it parks, it dies. They come
 * back to the clean pair once the holder is gone.
 */
Test(fault_points, worker_parked)
{
	static const char *const env[] = {"BULKREG_WORKER_CONCURRENCY=4", NULL};
	worker_point("worker_parked", "BULKREG_FAULT=worker_parked:1", env, true);
}

static const char *const api_crash[] = {"BULKREG_FAULT=publish_before_confirm:1", NULL};

/* True once a worker logged that its sweeper published an unpublished job. */
static bool sweeper_logged(void *ctx)
{
	struct t_fleet *f = ctx;
	return t_fleet_log_count(&f->workers[0], "sweeper: published", NULL) +
	           t_fleet_log_count(&f->workers[1], "sweeper: published", NULL) >
	       0;
}

Test(fault_points, publish_before_confirm)
{
	struct t_fleet f;
	t_fleet_init(&f, "publish_before_confirm", api_crash, NULL);
	char sid[37];
	t_fleet_session(&f, sid);

	/* The API commits the job, sends its messages and dies before the confirms. */
	long status = -1;
	bool ok = t_fleet_post(&f, sid, "orphan", TASKS, 0, NULL, &status, NULL);
	cr_assert(!ok && status == 0, "the crashing POST answered %ld", status);
	int rc = t_proc_stop(&f.api, 0, CRASH_WAIT_MS);
	cr_assert_eq(rc, 128 + SIGKILL, "the API ended with %d", rc);

	PGresult *res = t_sql(f.db,
	                      "SELECT id, published_at IS NULL FROM jobs"
	                      " WHERE organization_id = $1",
	                      1, (const char *const[]){f.org.id});
	cr_assert_eq(PQntuples(res), 1, "the crashed request left %d jobs", PQntuples(res));
	char orphan[37];
	snprintf(orphan, sizeof(orphan), "%s", PQgetvalue(res, 0, 0));
	cr_assert_str_eq(PQgetvalue(res, 0, 1), "t", "the job was marked published");
	PQclear(res);
	/*
	 * The messages may or may not have reached the broker before the
	 * connection died; purging the queue makes the worst case certain:
	 * only the sweeper can now get this job done.
	 */
	const char *purge[] = {"rabbitmqctl", "purge_queue", "bulkreg.tasks", NULL};
	char out[1024];
	cr_assert_eq(t_ctl_capture(purge, out, sizeof(out)), 0, "purge_queue failed: %s", out);

	t_fleet_api_restart(&f, NULL);
	t_fleet_worker_start(&f, 0, NULL);
	t_fleet_worker_start(&f, 1, NULL);
	for (int i = 0; i < 4; i++) {
		char p[16];
		snprintf(p, sizeof(p), "after%d", i);
		t_fleet_post_ok(&f, sid, p, TASKS, NULL);
	}
	t_fleet_verify(&f);
	const char *pj[] = {orphan};
	cr_assert_eq(t_sql_long(f.db,
	                        "SELECT count(*) FROM jobs WHERE id = $1"
	                        " AND published_at IS NOT NULL AND status = 'ended'",
	                        1, pj),
	             1, "the sweeper did not publish the orphaned job");
	/* The sweeper logs after its mark commits, so the line may trail the job's end. */
	cr_assert(t_poll(sweeper_logged, &f, LOG_WAIT_MS),
	          "no sweeper logged publishing the orphaned job");
	t_fleet_note(&f, "the crashed POST got no answer; its job was published by the sweeper;");
	t_fleet_stop(&f);
}
