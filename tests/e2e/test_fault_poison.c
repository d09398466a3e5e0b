/*
 * test_fault_poison.c - a task that can never be processed (issue 6, fault
 * test 6; docs/operations.md broker topology; docs/guarantees.md §4).
 *
 * One task's stored input is made unprocessable before any worker runs (a
 * first_name of 300 characters breaks the people CHECK, so
 * session_apply() raises). Each delivery rolls back that task alone and
 * nacks it; the broker redelivers it until x-delivery-limit (5) and then
 * dead-letters it to bulkreg.tasks.dead, whose consumer fails it with
 * internal_error. The job still ends (failed, 49 + 1), with its one
 * job.ended, and nothing stays queued anywhere.
 */
#include <signal.h>
#include <stdio.h>

#include <criterion/criterion.h>

#include "fleet.h"

#define TASKS          50
#define POISON_INDEX   17
#define DELIVERY_LIMIT 5

TestSuite(fault_poison, .timeout = 600);

Test(fault_poison, unprocessable_task_is_dead_lettered)
{
	struct t_fleet f;
	t_fleet_init(&f, "poison task", NULL, NULL);
	f.expected_failed = 1;
	char sid[37], job[37], other[37];
	t_fleet_session(&f, sid);
	t_fleet_post_ok(&f, sid, "poison", TASKS, job);
	t_fleet_post_ok(&f, sid, "healthy", TASKS, other);

	char idx[16];
	snprintf(idx, sizeof(idx), "%d", POISON_INDEX);
	const char *p[] = {job, idx};
	PGresult *res = t_sql(f.db,
	                      "UPDATE tasks SET input = jsonb_set(input, '{first_name}',"
	                      "       to_jsonb(repeat('x', 300)))"
	                      " WHERE job_id = $1 AND idx = $2::int AND status = 'queued'"
	                      " RETURNING id",
	                      2, p);
	cr_assert_eq(PQntuples(res), 1, "the task to poison was not queued");
	char task[37];
	snprintf(task, sizeof(task), "%s", PQgetvalue(res, 0, 0));
	PQclear(res);

	t_fleet_worker_start(&f, 0, NULL);
	t_fleet_worker_start(&f, 1, NULL);
	t_fleet_verify(&f);

	const char *pt[] = {task}, *pj[] = {job}, *po[] = {other};
	cr_assert_eq(t_sql_long(f.db,
	                        "SELECT count(*) FROM tasks WHERE id = $1"
	                        " AND status = 'failed' AND error_code = 'internal_error'",
	                        1, pt),
	             1, "the poisoned task did not fail with internal_error");
	cr_assert_eq(t_sql_long(f.db,
	                        "SELECT count(*) FROM jobs WHERE id = $1 AND status = 'failed'"
	                        " AND total_fail = 1 AND total_success = 49",
	                        1, pj),
	             1, "the poisoned job did not end failed with 49 + 1");
	cr_assert_eq(
	    t_sql_long(f.db, "SELECT count(*) FROM jobs WHERE id = $1 AND status = 'ended'", 1, po),
	    1, "the healthy job did not end");
	/* Every delivery of the poisoned task was tried, then the broker gave up on it. */
	int tries = t_fleet_log_count(&f.workers[0], task, "failed to process") +
	            t_fleet_log_count(&f.workers[1], task, "failed to process");
	int gave_up = t_fleet_log_count(&f.workers[0], task, "dead-lettered by the broker") +
	              t_fleet_log_count(&f.workers[1], task, "dead-lettered by the broker");
	cr_assert_geq(tries, DELIVERY_LIMIT, "the poisoned task was tried %d times", tries);
	cr_assert_eq(gave_up, 1, "the dead-lettered task was failed %d times", gave_up);
	t_fleet_note(&f, "the poisoned task was delivered %d times, then dead-lettered;", tries);
	t_fleet_stop(&f);
}
