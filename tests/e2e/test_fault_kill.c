/*
 * test_fault_kill.c - docs/guarantees.md §1-3 under SIGKILL (issue 6, fault test
 * 1): two workers process 20 jobs x 50 tasks while one of them is killed at
 * a random point of the run and started again; five rounds. Whatever the
 * killed worker held (an open transaction, a committed batch not yet acked,
 * a webhook in flight, the sweeper's lock) must be finished by someone else
 * exactly once. Then the same with a prefetch that lets a process run full
 * batches side by side.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include <criterion/criterion.h>

#include "fleet.h"

#define ROUNDS       5
#define JOBS         20
#define TASKS        50
#define KILL_WAIT_MS 120000

TestSuite(fault_kill, .timeout = 900);

/* rounds of 20 jobs, each with a worker SIGKILLed at a random task and started again */
static void kill_rounds(const char *name, const char *const *worker_env, int rounds)
{
	struct t_fleet f;
	t_fleet_init(&f, name, NULL, worker_env);
	t_fleet_worker_start(&f, 0, NULL);
	t_fleet_worker_start(&f, 1, NULL);
	unsigned seed = (unsigned)t_now_ms();
	t_fleet_note(&f, "seed %u; killed at task", seed);

	long base = 0;
	for (int round = 0; round < rounds; round++) {
		/* Somewhere in the first 90% of the round's 1,000 tasks. */
		long at = 1 + rand_r(&seed) % (JOBS * TASKS * 9 / 10);
		int victim = rand_r(&seed) % 2;
		char prefix[32];
		snprintf(prefix, sizeof(prefix), "kill%d", round);
		struct t_load load;
		t_load_start(&load, &f, prefix, JOBS, TASKS, 0);
		cr_assert(t_fleet_wait_processed(&f, base + at, KILL_WAIT_MS),
		          "round %d: %ld tasks were never processed", round, at);
		int rc = t_proc_stop(&f.workers[victim], SIGKILL, 10000);
		long seen = t_fleet_processed(&f) - base;
		cr_assert_eq(rc, 128 + SIGKILL, "round %d: worker %d ended with %d", round, victim,
		             rc);
		t_fleet_note(&f, "%ld/%d (w%d)", seen, JOBS * TASKS, victim);
		t_fleet_worker_start(&f, victim, NULL);
		t_load_stop(&load, true, false);
		cr_assert_eq(load.accepted, JOBS, "round %d: %d jobs accepted", round,
		             load.accepted);
		t_fleet_wait_done(&f);
		t_check_invariants(f.db);
		base += JOBS * TASKS;
	}
	t_fleet_verify(&f);
	t_fleet_stop(&f);
}

Test(fault_kill, sigkill_a_worker_at_random_moments)
{
	kill_rounds("SIGKILL worker, 5 rounds", NULL, ROUNDS);
}

/*
 * With a prefetch of 64 a process's batches fill up (64 deliveries) and
 * run side by side, on different connections, and their claims meet each
 * other's deliveries inside one process; the kills land among them.
 */
Test(fault_kill, sigkill_a_worker_running_full_batches_side_by_side)
{
	static const char *const env[] = {"BULKREG_WORKER_PREFETCH=64", NULL};
	kill_rounds("SIGKILL worker, prefetch 64", env, 3);
}
