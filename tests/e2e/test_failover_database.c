/*
 * test_failover_database.c - the PostgreSQL primary dies (SIGKILL of its
 * whole process tree) mid-run and its synchronous standby is promoted
 * (issue 20; docs/operations.md, "Running with a PostgreSQL standby";
 * docs/guarantees.md §1, §2, §5).
 *
 * Every process is given the multi-host DATABASE_URL of scripts/standby
 * (the primary, then the standby, target_session_attrs=read-write). The
 * API and the workers lose every connection at once; until the promotion
 * libpq refuses the standby as read-only, after it every new connection
 * lands there. Nothing a client was told is committed may be missing
 * (synchronous replication), nothing may be done twice, and the stall
 * after the promotion is printed and bounded.
 *
 * Each test gets a fresh standby (.init: scripts/standby start) and leaves
 * the test stack with one server on its port, as it found it (.fini): after
 * a failover the promoted standby takes the old primary's place
 * (scripts/standby adopt: the old primary's data, which may hold commits
 * nobody was told about, is discarded, as after a real failover), else the
 * standby is dropped; so the tests after this one run as usual.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <criterion/criterion.h>

#include "db.h"
#include "fleet.h"

#define TASKS   50
#define JOBS    60
#define WAIT_MS 120000
/* How long the primary stays dead before the promotion: the switchover window. */
#define DOWN_MS 2000
/*
 * The bound on the stall after the promotion: connections are re-made at
 * once (the dead host refuses at once), workers retry with a backoff
 * capped at 5 s. Generous for a small shared machine; the figure is printed.
 */
#define STALL_BOUND_MS 30000

static char primary_url[512]; /* the test stack's own DATABASE_URL */
static char multi_url[512];   /* primary, then standby */
static char standby_url[512]; /* the standby alone */
static int standby_port;
static bool promoted; /* the standby was promoted: .fini adopts it */

static void standby_up(void)
{
	t_fleet_services_up();
	snprintf(primary_url, sizeof(primary_url), "%s", t_database_url());
	cr_assert_eq(t_standby("start", NULL, 0), 0, "scripts/standby start failed");
	multi_url[0] = '\0';
	cr_assert_eq(t_standby("url", multi_url, sizeof(multi_url)), 0,
	             "scripts/standby url failed");
	multi_url[strcspn(multi_url, "\n")] = '\0';
	/* postgresql://bulkreg@127.0.0.1:P1,127.0.0.1:P2/bulkreg?... */
	const char *comma = strchr(multi_url, ',');
	const char *slash = comma ? strchr(comma, '/') : NULL;
	const char *colon = comma ? strchr(comma, ':') : NULL;
	cr_assert(slash && colon && colon < slash, "not a two-host URL: %s", multi_url);
	standby_port = (int)strtol(colon + 1, NULL, 10);
	snprintf(standby_url, sizeof(standby_url), "postgresql://bulkreg@%.*s/bulkreg",
	         (int)(slash - comma - 1), comma + 1);
	/* Everything this process starts or opens (t_db, the API, workers, admin) follows it. */
	cr_assert_eq(setenv("DATABASE_URL", multi_url, 1), 0, "setenv");
}

static void standby_down(void)
{
	const char *action = promoted ? "adopt" : "drop";
	int rc = t_standby(action, NULL, 0);
	if (rc != 0)
		(void)t_standby("drop", NULL, 0); /* then at least the old primary comes back */
	if (primary_url[0])
		setenv("DATABASE_URL", primary_url, 1);
	t_fleet_services_up();
	cr_assert_eq(rc, 0, "scripts/standby %s failed", action);
}

TestSuite(failover_database, .init = standby_up, .fini = standby_down, .timeout = 600);

/* The port of the server f's connection reached. */
static long server_port(PGconn *db)
{
	return t_sql_long(db, "SELECT inet_server_port()", 0, NULL);
}

/*
 * A connection that reaches a standby (a URL without target_session_attrs,
 * or a switchover in progress) gets 25006 for every write: that is a lost
 * connection to re-make, never a failed request.
 */
Test(failover_database, write_refused_by_standby_is_transient)
{
	struct db_opts o = {.connect_timeout_s = 2, .stateless = true};
	db_conn *c = NULL;
	cr_assert_eq(db_open(standby_url, &o, false, &c), BR_OK, "cannot reach the standby");
	static const db_stmt write = {"failover_write",
	                              "UPDATE jobs SET status = status WHERE false", 0};
	br_status st = db_run(c, &write, NULL, NULL);
	cr_expect_eq(st, BR_DB_CONN, "a write on a standby: %s, not a lost connection",
	             br_strerror(st));
	cr_expect_str_eq(db_sqlstate(c), "25006", "SQLSTATE %s (%s)", db_sqlstate(c), db_errmsg(c));
	cr_expect_null(db_pg(c), "the connection to the standby was kept");
	cr_assert_eq(db_ensure(c), BR_OK, "cannot reconnect to the standby");
	st = db_begin(c);
	if (st == BR_OK)
		st = db_cmd(c, "CREATE TABLE failover_never (i int)");
	cr_expect_eq(st, BR_DB_CONN, "CREATE TABLE on a standby: %s", br_strerror(st));
	db_close(c);

	/* The API given the standby alone answers 503 unavailable, never 500. */
	char env_url[600];
	snprintf(env_url, sizeof(env_url), "DATABASE_URL=%s", standby_url);
	const char *env[] = {env_url, "BULKREG_RATE_LIMIT=0", NULL};
	struct t_org org;
	t_org_new(&org); /* on the primary; the standby replays it within moments */
	struct t_proc api;
	t_api_start(&api, env);
	char url[256];
	snprintf(url, sizeof(url), "%s/v1/sessions", api.url);
	long long deadline = t_now_ms() + WAIT_MS;
	struct t_resp r;
	for (;;) {
		t_http(&r, "POST", url, org.token,
		       "{\"data\":{\"type\":\"sessions\",\"attributes\":{\"title\":\"RO\"}}}",
		       NULL);
		if (r.status != 401 || t_now_ms() > deadline)
			break;
		t_resp_free(&r); /* the token is not replayed yet */
		struct timespec ts = {0, 100 * 1000000L};
		nanosleep(&ts, NULL);
	}
	cr_expect_eq(r.status, 503, "POST on a read-only database: %ld %s", r.status, r.body);
	cr_expect(r.body && strstr(r.body, "\"code\":\"unavailable\""), "not unavailable: %s",
	          r.body);
	cr_expect_not_null(t_resp_header(&r, "Retry-After"), "503 without Retry-After");
	t_resp_free(&r);
	cr_expect_eq(t_proc_stop(&api, SIGTERM, T_FLEET_STOP_MS), 0, "the API did not exit 0");
}

/* Workers slow enough that work is in flight and queued when the primary dies. */
static const char *const slow_workers[] = {"BULKREG_WORKER_CONCURRENCY=2",
                                           "BULKREG_WORKER_PREFETCH=4", NULL};

struct progress {
	struct t_fleet *f;
	struct t_load *load;
	int accepted;
	long processed;
};

static bool accepted_more(void *ctx)
{
	struct progress *p = ctx;
	return __atomic_load_n(&p->load->accepted, __ATOMIC_SEQ_CST) > p->accepted;
}

static bool processed_more(void *ctx)
{
	struct progress *p = ctx;
	return t_fleet_processed(p->f) > p->processed;
}

/* Tasks in the database of the jobs that were answered 202. */
static long accepted_tasks(struct t_fleet *f)
{
	long n = 0;
	for (int i = 0; i < f->njobs; i++) {
		const char *p[] = {f->jobs[i]};
		n += t_sql_long(f->db, "SELECT count(*) FROM tasks WHERE job_id = $1", 1, p);
	}
	return n;
}

Test(failover_database, primary_killed_standby_promoted_mid_run)
{
	struct t_fleet f;
	t_fleet_init(&f, "PostgreSQL failover", NULL, slow_workers);
	cr_assert_eq(server_port(f.db), strtol(strrchr(primary_url, ':') + 1, NULL, 10),
	             "the multi-host URL did not reach the primary first");
	/*
	 * A backlog first, then the workers: the primary dies as soon as they
	 * have committed something, so batches are in flight (transactions
	 * open, commits unanswered) and tasks queued when it goes.
	 */
	struct t_load load;
	t_load_start(&load, &f, "fo", JOBS, TASKS, 100);
	cr_assert(t_load_wait_accepted(&load, 10, WAIT_MS), "the load did not start");
	t_fleet_worker_start(&f, 0, NULL);
	t_fleet_worker_start(&f, 1, NULL);
	cr_assert(t_fleet_wait_processed(&f, 1, WAIT_MS), "the workers processed nothing");
	long depth = t_fleet_queue_depth();
	long done = t_fleet_processed(&f);

	long long t_kill = t_now_ms();
	cr_assert_eq(t_standby("kill-primary", NULL, 0), 0, "scripts/standby kill-primary failed");
	long long t_killed = t_now_ms(); /* the script returns once the postmaster is gone */
	struct timespec down = {DOWN_MS / 1000, (DOWN_MS % 1000) * 1000000L};
	nanosleep(&down, NULL); /* the fault's duration, not a synchronisation */
	struct progress p = {&f, &load, __atomic_load_n(&load.accepted, __ATOMIC_SEQ_CST), 0};
	long long t_promote = t_now_ms();
	cr_assert_eq(t_standby("promote", NULL, 0), 0, "scripts/standby promote failed");
	promoted = true;
	long long t_promoted = t_now_ms();
	p.processed = t_fleet_processed(&f); /* f.db reconnects to the promoted standby */
	cr_assert_eq(server_port(f.db), standby_port, "not on the promoted standby");
	char *sync = t_sql_text(f.db, "SHOW synchronous_standby_names", 0, NULL);
	cr_expect_str_eq(sync, "", "the new primary waits for a synchronous standby: %s", sync);
	free(sync);

	bool api_back = t_poll(accepted_more, &p, STALL_BOUND_MS);
	long long api_stall = t_now_ms() - t_promoted;
	bool work_back = t_poll(processed_more, &p, STALL_BOUND_MS);
	long long work_stall = t_now_ms() - t_promoted;
	fprintf(stderr,
	        "failover: primary killed (scripts/standby kill-primary took %lld ms), promoted"
	        " %lld ms later (pg_ctl promote took %lld ms); first 202 %lld ms after the"
	        " promotion, first task processed %lld ms after\n",
	        t_killed - t_kill, t_promote - t_killed, t_promoted - t_promote, api_stall,
	        work_stall);
	cr_expect(api_back, "no job accepted within %d ms of the promotion", STALL_BOUND_MS);
	cr_expect(work_back, "no task processed within %d ms of the promotion", STALL_BOUND_MS);

	/* POSTs refused (503) or unanswered during the switchover were never promised. */
	t_load_stop(&load, true, true);
	t_fleet_note(
	    &f,
	    "kill with %ld tasks processed, %ld queued; promoted after %lld ms; stall after"
	    " promotion: API %lld ms, workers %lld ms; POSTs: %d accepted, %d refused (503),"
	    " %d unanswered, max latency %lld ms;",
	    done, depth, t_promoted - t_killed, api_stall, work_stall, load.accepted, load.refused,
	    load.no_answer, load.max_latency_ms);
	t_fleet_verify(&f);
	long tasks = accepted_tasks(&f);
	cr_expect_eq(tasks, f.tasks_accepted, "the 202 jobs hold %ld tasks, %ld were accepted",
	             tasks, f.tasks_accepted);
	/* Every process went on by itself: ready again, and it exits 0 on SIGTERM (t_fleet_stop).
	 */
	char url[128];
	snprintf(url, sizeof(url), "%s/readyz", f.api.url);
	cr_expect_eq(t_http_status(url, 5000), 200, "the API is not ready after the failover");
	for (int i = 0; i < 2; i++) {
		snprintf(url, sizeof(url), "%s/readyz", f.workers[i].url);
		cr_expect_eq(t_http_status(url, 5000), 200,
		             "worker %d is not ready after the failover", i);
	}
	t_fleet_stop(&f);
}
