/*
 * test_readyz.c - docs/operations.md /readyz and docs/guarantees.md §5: when PostgreSQL or
 * RabbitMQ goes away, bulkreg-api and bulkreg-worker stay alive, /healthz
 * stays 200 and /readyz turns 503; when the service comes back, /readyz
 * returns to 200 on its own; SIGTERM then makes both exit 0.
 *
 * The services are stopped and started with scripts/ctl on the test stack
 * (BULKREG_LOCAL_DIR). Every test starts and ends by making sure both are
 * running, so a failed assertion never leaves the stack broken for the
 * tests after it.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>

#include "support.h"

#define READY_TIMEOUT_MS    30000  /* a healthy stack answers 200 by then */
#define DOWN_TIMEOUT_MS     30000  /* an outage shows as 503 by then */
#define RECOVERY_TIMEOUT_MS 120000 /* reconnect backoff is capped well below this */
#define PROBE_TIMEOUT_MS    15000
#define STOP_TIMEOUT_MS     30000
#define OUTAGE_HOLD_MS      5000

static void services_up(void)
{
	int pg = t_ctl("start", "postgres");
	int mq = t_ctl("start", "rabbitmq");
	cr_assert(pg == 0 && mq == 0, "scripts/ctl start: postgres %d, rabbitmq %d", pg, mq);
}

struct probe {
	char url[128];
	long want;
	long last;
};

static bool probe_is(void *ctx)
{
	struct probe *p = ctx;
	p->last = t_http_status(p->url, PROBE_TIMEOUT_MS);
	return p->last == p->want;
}

/* Waits until path answers want on every process; reports the laggard. */
static void await_status(struct t_proc *const *procs, int n, const char *path, long want,
                         int timeout_ms, const char *when)
{
	long long deadline = t_now_ms() + timeout_ms;
	for (int i = 0; i < n; i++) {
		struct probe p = {.want = want};
		snprintf(p.url, sizeof(p.url), "%s%s", procs[i]->url, path);
		long long left = deadline - t_now_ms();
		bool ok = t_poll(probe_is, &p, left > 0 ? (int)left : 0);
		if (!ok)
			t_proc_print_log(procs[i], 30);
		cr_assert(ok, "%s: %s answered %ld, not %ld, within %d ms", when, p.url, p.last,
		          want, timeout_ms);
	}
}

static void assert_alive(struct t_proc *const *procs, int n, const char *when)
{
	for (int i = 0; i < n; i++) {
		bool alive = t_proc_alive(procs[i]);
		if (!alive)
			t_proc_print_log(procs[i], 40);
		cr_assert(alive, "%s: %s died (exit status %d)", when, procs[i]->log_path,
		          procs[i]->exit_status);
		char url[128];
		snprintf(url, sizeof(url), "%s/healthz", procs[i]->url);
		long st = t_http_status(url, PROBE_TIMEOUT_MS);
		cr_assert_eq(st, 200, "%s: %s answered %ld", when, url, st);
	}
}

/* One outage of service ("postgres" or "rabbitmq") seen by an API and a worker. */
static void outage(const char *service)
{
	struct t_proc api, worker;
	t_api_start(&api, NULL);
	t_worker_start(&worker, NULL);
	struct t_proc *const procs[] = {&api, &worker};
	char when[64];

	await_status(procs, 2, "/readyz", 200, READY_TIMEOUT_MS, "before the outage");

	cr_assert_eq(t_ctl("stop", service), 0, "scripts/ctl stop %s failed", service);
	snprintf(when, sizeof(when), "%s stopped", service);
	await_status(procs, 2, "/readyz", 503, DOWN_TIMEOUT_MS, when);
	/* For a while (reconnect attempts and their backoff): alive, healthy, unready. */
	long long until = t_now_ms() + OUTAGE_HOLD_MS;
	do {
		assert_alive(procs, 2, when);
		await_status(procs, 2, "/readyz", 503, 0, when);
	} while (t_now_ms() < until);

	cr_assert_eq(t_ctl("start", service), 0, "scripts/ctl start %s failed", service);
	snprintf(when, sizeof(when), "%s restarted", service);
	await_status(procs, 2, "/readyz", 200, RECOVERY_TIMEOUT_MS, when);
	assert_alive(procs, 2, when);

	int w = t_proc_stop(&worker, SIGTERM, STOP_TIMEOUT_MS);
	int a = t_proc_stop(&api, SIGTERM, STOP_TIMEOUT_MS);
	cr_expect_eq(w, 0, "the worker exited %d on SIGTERM", w);
	cr_expect_eq(a, 0, "the API exited %d on SIGTERM", a);

	PGconn *db = t_db();
	t_check_invariants(db);
	PQfinish(db);
}

TestSuite(readyz, .init = services_up, .fini = services_up, .timeout = 600);

Test(readyz, postgres_outage)
{
	outage("postgres");
}

Test(readyz, rabbitmq_outage)
{
	outage("rabbitmq");
}
