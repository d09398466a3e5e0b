/*
 * test_fault_broker.c - RabbitMQ going away (issue 6, fault tests 3 and 5;
 * docs/guarantees.md §1 and §5; stranded work in docs/operations.md).
 *
 * Restarted mid-run: queued and unacked messages survive (quorum queue,
 * persistent messages), jobs posted meanwhile are committed and answered
 * 202, and the sweeper publishes them once the broker is back; consumers
 * reconnect and redeliveries change nothing. Stopped while jobs are
 * posted: every POST still answers 202 promptly, and everything completes
 * once it starts again.
 *
 * The broker is stopped and started with scripts/ctl on the test stack;
 * the suite's .init and .fini start both services, so a failed assertion
 * never leaves the stack broken for the tests after it.
 */
#include <signal.h>
#include <stdio.h>

#include <criterion/criterion.h>

#include "fleet.h"

#define TASKS 50
/* A POST that takes longer than this hangs on the broker: the API's own confirm timeout is 10 s. */
#define POST_BOUND_MS 25000
#define WAIT_MS       120000
/* Small jobs, paced: the restart takes 10-40 s and the load spans it. */
#define BACKLOG_JOBS     20
#define RESTART_MAX_JOBS 300
#define RESTART_TASKS    10
#define RESTART_PACE_MS  250

TestSuite(fault_broker, .init = t_fleet_services_up, .fini = t_fleet_services_up, .timeout = 600);

/* Workers slow enough that a backlog is queued when the broker goes. */
static const char *const slow_workers[] = {"BULKREG_WORKER_CONCURRENCY=1",
                                           "BULKREG_WORKER_PREFETCH=1", NULL};

Test(fault_broker, rabbitmq_restarted_mid_run)
{
	struct t_fleet f;
	t_fleet_init(&f, "RabbitMQ restart mid-run", NULL, slow_workers);
	t_fleet_worker_start(&f, 0, NULL);
	t_fleet_worker_start(&f, 1, NULL);
	/* A backlog queued and in flight when the broker goes... */
	char sid[37], prefix[16];
	t_fleet_session(&f, sid);
	for (int i = 0; i < BACKLOG_JOBS; i++) {
		snprintf(prefix, sizeof(prefix), "backlog%d", i);
		t_fleet_post_ok(&f, sid, prefix, TASKS, NULL);
	}
	/* ...and posting all through the restart, and a little after it. */
	struct t_load load;
	t_load_start(&load, &f, "mq", RESTART_MAX_JOBS, RESTART_TASKS, RESTART_PACE_MS);
	cr_assert(t_load_wait_accepted(&load, 2, WAIT_MS), "the load did not start");
	long depth = t_fleet_queue_depth();
	long done = t_fleet_processed(&f);
	int before = __atomic_load_n(&load.accepted, __ATOMIC_SEQ_CST);
	cr_assert_eq(t_ctl("restart", "rabbitmq"), 0, "scripts/ctl restart rabbitmq failed");
	int during = __atomic_load_n(&load.accepted, __ATOMIC_SEQ_CST) - before;
	cr_assert(t_load_wait_accepted(&load, before + during + 3, WAIT_MS),
	          "no job accepted after the restart");
	t_load_stop(&load, false, false);
	t_fleet_note(&f,
	             "restart with %ld tasks processed, %ld queued; %d jobs accepted (202) during"
	             " it, slowest POST %lld ms;",
	             done, depth, during, load.max_latency_ms);
	t_fleet_verify(&f);
	/* Jobs posted while the broker was down can only have been published by a sweeper. */
	int swept = t_fleet_log_count(&f.workers[0], "sweeper: published", NULL) +
	            t_fleet_log_count(&f.workers[1], "sweeper: published", NULL);
	cr_assert_geq(swept, 1, "no sweeper published the jobs posted during the restart");
	t_fleet_note(&f, "sweeper published %d batch(es);", swept);
	t_fleet_stop(&f);
}

static bool sweeper_tried(void *ctx)
{
	struct t_fleet *f = ctx;
	for (int i = 0; i < 2; i++) {
		if (t_fleet_log_count(&f->workers[i], "sweeper: publishing", "failed") > 0)
			return true;
	}
	return false;
}

Test(fault_broker, jobs_posted_while_rabbitmq_is_down)
{
	struct t_fleet f;
	t_fleet_init(&f, "RabbitMQ down, 10 jobs posted", NULL, NULL);
	t_fleet_worker_start(&f, 0, NULL);
	t_fleet_worker_start(&f, 1, NULL);
	char sid[37];
	t_fleet_session(&f, sid);
	cr_assert_eq(t_ctl("stop", "rabbitmq"), 0, "scripts/ctl stop rabbitmq failed");

	long long slowest = 0;
	for (int i = 0; i < 10; i++) {
		char prefix[16];
		long status = 0;
		long long ms = 0;
		snprintf(prefix, sizeof(prefix), "down%d", i);
		bool ok = t_fleet_post(&f, sid, prefix, TASKS, 0, NULL, &status, &ms);
		cr_assert(ok, "POST %d with the broker down answered %ld, not 202", i, status);
		cr_assert_lt(ms, POST_BOUND_MS, "POST %d took %lld ms: hung on the broker", i, ms);
		if (ms > slowest)
			slowest = ms;
	}
	const char *p[] = {f.org.id};
	cr_assert_eq(t_sql_long(f.db,
	                        "SELECT count(*) FROM jobs WHERE organization_id = $1"
	                        " AND published_at IS NULL AND status = 'processing'",
	                        1, p),
	             10, "jobs posted with the broker down should wait unpublished");
	/* The sweeper finds them after its grace and fails to publish them: it must not give up. */
	cr_assert(t_poll(sweeper_tried, &f, WAIT_MS), "no sweeper tried to publish the jobs");
	cr_assert_eq(t_ctl("start", "rabbitmq"), 0, "scripts/ctl start rabbitmq failed");
	t_fleet_note(&f, "slowest POST %lld ms;", slowest);
	t_fleet_verify(&f);
	cr_assert_eq(t_sql_long(f.db,
	                        "SELECT count(*) FROM jobs WHERE organization_id = $1"
	                        " AND published_at IS NULL",
	                        1, p),
	             0, "jobs left unmarked after the sweeper published them");
	t_fleet_stop(&f);
}
