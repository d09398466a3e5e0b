/*
 * test_fault_stuck.c - one stuck participant stalls only itself
 * (docs/operations.md, "A stuck participant"):
 *   held_session_stalls_only_its_tasks  a transaction holds a session's row
 *       (as a frozen process's open transaction would): that session's job
 *       waits, another session's job completes meanwhile; when the holder
 *       goes, the waiting job completes, nothing lost or doubled;
 *   held_session_is_released_by_the_idle_timeout  the holder never comes
 *       back: PostgreSQL ends its idle transaction and the job completes;
 *   frozen_worker_hands_its_messages_over  a worker is stopped (SIGSTOP)
 *       with deliveries in hand: the broker notices its silent connection
 *       and the other worker completes every job; continued, the frozen one
 *       changes nothing.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>

#include "fleet.h"

#define TASKS   50
#define JOBS    10
#define WAIT_MS 120000

TestSuite(fault_stuck, .timeout = 600);

struct job_ref {
	struct t_fleet *f;
	const char *id;
};

static bool job_done(void *ctx)
{
	struct job_ref *j = ctx;
	const char *p[] = {j->id};
	return t_sql_long(j->f->db,
	                  "SELECT count(*) FROM jobs WHERE id = $1 AND status <> 'processing'", 1,
	                  p) == 1;
}

static long processed(struct t_fleet *f, const char *job)
{
	const char *p[] = {job};
	return t_sql_long(f->db, "SELECT total_processed_items FROM jobs WHERE id = $1", 1, p);
}

/* A connection whose open transaction holds session sid's row. */
static PGconn *hold_session(const char *sid)
{
	PGconn *holder = t_db();
	const char *p[] = {sid};
	PQclear(t_sql(holder, "BEGIN", 0, NULL));
	PQclear(t_sql(holder, "SELECT 1 FROM sessions WHERE id = $1 FOR NO KEY UPDATE", 1, p));
	return holder;
}

Test(fault_stuck, held_session_stalls_only_its_tasks)
{
	struct t_fleet f;
	t_fleet_init(&f, "held session", NULL, NULL);
	t_fleet_worker_start(&f, 0, NULL);
	t_fleet_worker_start(&f, 1, NULL);
	char held[37], free_sid[37], stalled[37], other[37];
	t_fleet_session(&f, held);
	t_fleet_session(&f, free_sid);
	PGconn *holder = hold_session(held);
	t_fleet_post_ok(&f, held, "held", TASKS, stalled);
	t_fleet_post_ok(&f, free_sid, "free", TASKS, other);
	struct job_ref o = {&f, other}, s = {&f, stalled};
	cr_assert(t_poll(job_done, &o, WAIT_MS), "another session's job waited for the held one");
	cr_assert_eq(processed(&f, stalled), 0, "a task of the held session ran");
	PQclear(t_sql(holder, "ROLLBACK", 0, NULL));
	PQfinish(holder);
	cr_assert(t_poll(job_done, &s, WAIT_MS), "the held session's job did not resume");
	t_fleet_verify(&f);
	t_fleet_stop(&f);
}

Test(fault_stuck, held_session_is_released_by_the_idle_timeout)
{
	struct t_fleet f;
	t_fleet_init(&f, "held session, holder gone", NULL, NULL);
	t_fleet_worker_start(&f, 0, NULL);
	char held[37], stalled[37];
	t_fleet_session(&f, held);
	/* The workers' and the API's bound, on the holder's connection too. */
	PGconn *holder = t_db();
	PQclear(t_sql(holder, "SET idle_in_transaction_session_timeout = '3s'", 0, NULL));
	const char *p[] = {held};
	PQclear(t_sql(holder, "BEGIN", 0, NULL));
	PQclear(t_sql(holder, "SELECT 1 FROM sessions WHERE id = $1 FOR NO KEY UPDATE", 1, p));
	t_fleet_post_ok(&f, held, "gone", TASKS, stalled);
	struct job_ref s = {&f, stalled};
	cr_assert(t_poll(job_done, &s, WAIT_MS), "the job stayed behind a holder that went idle");
	PQfinish(holder);
	t_fleet_verify(&f);
	t_fleet_stop(&f);
}

static bool some_processed(void *ctx)
{
	return t_fleet_processed(ctx) > 0;
}

Test(fault_stuck, frozen_worker_hands_its_messages_over)
{
	struct t_fleet f;
	t_fleet_init(&f, "frozen worker", NULL, NULL);
	t_fleet_worker_start(&f, 0, NULL);
	t_fleet_worker_start(&f, 1, NULL);
	char sid[JOBS][37];
	for (int i = 0; i < JOBS; i++) {
		char prefix[16];
		snprintf(prefix, sizeof(prefix), "frozen%d", i);
		t_fleet_session(&f, sid[i]);
		t_fleet_post_ok(&f, sid[i], prefix, TASKS, NULL);
	}
	cr_assert(t_poll(some_processed, &f, WAIT_MS));
	cr_assert_eq(kill(f.workers[0].pid, SIGSTOP), 0);
	long at_stop = t_fleet_processed(&f);
	/* More work while it is frozen: the live worker must take it all. */
	for (int i = 0; i < JOBS; i++) {
		char prefix[16];
		snprintf(prefix, sizeof(prefix), "after%d", i);
		t_fleet_post_ok(&f, sid[i], prefix, TASKS, NULL);
	}
	t_fleet_wait_done(&f);
	t_fleet_note(&f, "%ld of %d tasks processed when worker 0 froze;", at_stop,
	             2 * JOBS * TASKS);
	cr_assert_eq(kill(f.workers[0].pid, SIGCONT), 0);
	t_fleet_verify(&f);
	t_fleet_stop(&f);
}
