/*
 * test_fault_drain.c - SIGTERM of a busy worker (issue 6, fault test 8;
 * docs/guarantees.md §6): it stops taking deliveries, finishes and acks the batches
 * it holds, and exits 0; the other worker takes the rest, and nothing is
 * done twice in effect.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include <criterion/criterion.h>

#include "fleet.h"

#define JOBS          20
#define TASKS         50
#define WAIT_MS       120000
#define DRAIN_WAIT_MS 60000

TestSuite(fault_drain, .timeout = 600);

Test(fault_drain, sigterm_a_busy_worker)
{
	struct t_fleet f;
	t_fleet_init(&f, "SIGTERM worker mid-run", NULL, NULL);
	t_fleet_worker_start(&f, 0, NULL);
	t_fleet_worker_start(&f, 1, NULL);
	unsigned seed = (unsigned)t_now_ms();
	long at = 100 + rand_r(&seed) % (JOBS * TASKS / 2);

	struct t_load load;
	t_load_start(&load, &f, "drain", JOBS, TASKS, 0);
	cr_assert(t_fleet_wait_processed(&f, at, WAIT_MS), "%ld tasks were never processed", at);
	long long t0 = t_now_ms();
	int rc = t_proc_stop(&f.workers[0], SIGTERM, DRAIN_WAIT_MS);
	long long took = t_now_ms() - t0;
	long seen = t_fleet_processed(&f);
	if (rc != 0)
		t_proc_print_log(&f.workers[0], 40);
	cr_assert_eq(rc, 0, "the worker exited %d on SIGTERM", rc);
	cr_assert_eq(t_fleet_log_count(&f.workers[0], "bulkreg-worker stopped", NULL), 1,
	             "the worker did not drain");
	t_load_stop(&load, true, false);
	t_fleet_note(&f, "SIGTERM at %ld/%d tasks, exit 0 after %lld ms;", seen, JOBS * TASKS,
	             took);
	t_fleet_verify(&f);
	t_fleet_stop(&f);
}
