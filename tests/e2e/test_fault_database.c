/*
 * test_fault_database.c - PostgreSQL restarted mid-run (issue 6, fault test
 * 4; docs/guarantees.md §1, §2 and §5).
 *
 * The restart kills every connection: workers lose open transactions and
 * commits of unknown outcome, the API answers 503 meanwhile (never a 2xx
 * for a write that did not commit), the deliverer and the sweeper lose
 * their sessions. Everything must reconnect, run again what it held, and
 * leave each registration done exactly once.
 *
 * The suite's .init and .fini start both services (scripts/ctl), so a
 * failed assertion never leaves PostgreSQL stopped.
 */
#include <signal.h>
#include <stdio.h>

#include <criterion/criterion.h>

#include "fleet.h"

#define TASKS   50
#define WAIT_MS 120000

TestSuite(fault_database, .init = t_fleet_services_up, .fini = t_fleet_services_up, .timeout = 600);

/* Workers slow enough that work is in flight and queued when the server goes. */
static const char *const slow_workers[] = {"BULKREG_WORKER_CONCURRENCY=2",
                                           "BULKREG_WORKER_PREFETCH=4", NULL};

Test(fault_database, postgres_restarted_mid_run)
{
	struct t_fleet f;
	t_fleet_init(&f, "PostgreSQL restart mid-run", NULL, slow_workers);
	t_fleet_worker_start(&f, 0, NULL);
	t_fleet_worker_start(&f, 1, NULL);
	struct t_load load;
	t_load_start(&load, &f, "pg", 40, TASKS, 100);
	cr_assert(t_load_wait_accepted(&load, 10, WAIT_MS), "the load did not start");
	long depth = t_fleet_queue_depth();
	long done = t_fleet_processed(&f);
	cr_assert_eq(t_ctl("restart", "postgres"), 0, "scripts/ctl restart postgres failed");
	/* Jobs refused (503) or unanswered during the outage were never promised. */
	t_load_stop(&load, true, true);
	t_fleet_note(&f,
	             "restart with %ld tasks processed, %ld queued; POSTs: %d accepted,"
	             " %d refused (503), %d unanswered;",
	             done, depth, load.accepted, load.refused, load.no_answer);
	t_fleet_verify(&f);
	t_fleet_stop(&f);
}
