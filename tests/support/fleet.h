/*
 * fleet.h - what the fault tests (tests/e2e/test_fault_*.c) share: a
 * running bulkreg (one API, up to T_FLEET_MAX_WORKERS workers, a webhook
 * receiver subscribed to job.ended) for one fresh organization, a load
 * thread that posts bulk jobs while a fault happens, and the checks every
 * fault scenario ends with (docs/guarantees.md):
 *
 *   - every job of the organization is terminal;
 *   - job and session counters equal the counts of their tasks and people
 *     (t_check_invariants);
 *   - each person is registered once: per session, people = the sum of
 *     total_success of its jobs, and no address (email_key()) or external id
 *     of a person without an address twice; no
 *     task failed except the ones the scenario expects (a redelivered task failing as
 *     already_registered against itself would be a doubled effect);
 *   - exactly one job.ended event per completion, every one delivered to
 *     the receiver (with a stable webhook-id: a duplicate delivery repeats
 *     an id, it never makes a new one);
 *   - nothing left in bulkreg.tasks or bulkreg.tasks.dead.
 *
 * Each scenario prints one summary line on stderr (and appends it to the
 * file named by BULKREG_FAULT_SUMMARY, if set): the fault, how many
 * registrations went through it, how many were lost and how many doubled.
 *
 * Functions abort the test on failure (Criterion) unless they say
 * otherwise. Call them from the thread that runs the test, except
 * t_fleet_post, which the load thread uses too.
 */
#ifndef BULKREG_TEST_FLEET_H
#define BULKREG_TEST_FLEET_H

#include <pthread.h>
#include <stdbool.h>

#include "support.h"

#define T_FLEET_MAX_WORKERS 4
#define T_FLEET_MAX_JOBS    512
#define T_FLEET_NOTE_MAX    512

/* Generous deadlines: the machine is small and shared (no timing assertions). */
#define T_FLEET_DONE_MS  180000 /* every job terminal */
#define T_FLEET_DRAIN_MS 120000 /* queues empty, webhooks delivered */
#define T_FLEET_STOP_MS  60000  /* SIGTERM to exit */

struct t_fleet {
	char name[64]; /* the fault, for the summary line */
	PGconn *db;
	struct t_org org;
	struct t_proc api;
	struct t_proc workers[T_FLEET_MAX_WORKERS];
	const char *const *api_env;    /* extra environment of the API (borrowed) */
	const char *const *worker_env; /* extra environment of every worker (borrowed) */
	t_receiver *rc;
	char hook_id[37];
	char hook_secret[128];
	int expected_failed; /* tasks the scenario means to fail with internal_error */
	char note[T_FLEET_NOTE_MAX];
	char summary[512]; /* set by t_fleet_verify, printed by t_fleet_stop */

	pthread_mutex_t mu; /* guards jobs and njobs (the load thread adds to them) */
	char jobs[T_FLEET_MAX_JOBS][37];
	int njobs;
	long tasks_accepted;
};

/*
 * Defaults of every fault test's processes: no rate limit (the load must
 * not meet 429), a short sweep interval (unpublished jobs are republished
 * after max(2 x interval, 2 s)), short webhook retries.
 */
extern const char *const t_fleet_api_defaults[];
extern const char *const t_fleet_worker_defaults[];

/*
 * A fresh organization, a webhook receiver and job.ended endpoint, and the
 * API (started with api_env after t_fleet_api_defaults). worker_env is kept
 * for t_fleet_worker_start. No worker is started.
 */
void t_fleet_init(struct t_fleet *f, const char *name, const char *const *api_env,
                  const char *const *worker_env);

/*
 * Replaces f's webhook endpoint by one for the current f->rc's URL (e.g. a
 * receiver started with t_receiver_start_on on a chosen port).
 */
void t_fleet_endpoint(struct t_fleet *f);

/* Starts worker i with t_fleet_worker_defaults, f->worker_env, then extra (may be NULL). */
void t_fleet_worker_start(struct t_fleet *f, int i, const char *const *extra);

/*
 * Starts worker i like t_fleet_worker_start but with its metrics port off
 * and without waiting for /readyz: for a worker armed to crash at a fault
 * point, which may die before it would answer. Collect it with t_proc_stop.
 */
void t_fleet_worker_spawn(struct t_fleet *f, int i, const char *const *extra);

/* Starts the API again (after it died) with api_env (replacing t_fleet_init's). */
void t_fleet_api_restart(struct t_fleet *f, const char *const *api_env);

/* Lines of p's log that contain needle and, unless NULL, also and_needle. */
int t_fleet_log_count(const struct t_proc *p, const char *needle, const char *and_needle);

/* Ready messages in bulkreg.tasks, or -1 when the broker cannot be asked. */
long t_fleet_queue_depth(void);

/* Creates a session (unlimited, automatic) in f's organization; id gets 37 bytes. */
void t_fleet_session(struct t_fleet *f, char *sid);

/*
 * Posts a job of n people "<prefix>-<i>@example.com" to session sid, waiting
 * up to timeout_ms (0: 60 s). On 202 records the job (t_fleet_verify checks
 * it) and copies its id into job_id (may be NULL) and returns true.
 * Otherwise returns false with *status the HTTP status (0: no answer) and
 * never aborts the test. *latency_ms (may be NULL) gets the round trip.
 * Thread-safe.
 */
bool t_fleet_post(struct t_fleet *f, const char *sid, const char *prefix, int n, int timeout_ms,
                  char *job_id, long *status, long long *latency_ms);

/*
 * As t_fleet_post, with an Idempotency-Key header (key may be NULL). A job
 * already recorded (a replay) is not recorded again.
 */
bool t_fleet_post_keyed(struct t_fleet *f, const char *sid, const char *prefix, int n,
                        const char *key, int timeout_ms, char *job_id, long *status);

/* As t_fleet_post, but anything but 202 is fatal. */
void t_fleet_post_ok(struct t_fleet *f, const char *sid, const char *prefix, int n, char *job_id);

/* The number of tasks of f's jobs that are terminal (sum of total_processed_items). */
long t_fleet_processed(struct t_fleet *f);

/* Waits until t_fleet_processed reaches n; returns whether it did within timeout_ms. */
bool t_fleet_wait_processed(struct t_fleet *f, long n, int timeout_ms);

/* Waits until every job of f's organization is terminal (fatal after T_FLEET_DONE_MS). */
void t_fleet_wait_done(struct t_fleet *f);

/*
 * The end of every scenario: waits for the work to finish, checks every
 * guarantee listed at the top, and asserts lost = 0 and doubled = 0. The
 * summary line (with f->note) is printed at once when that fails, else by
 * t_fleet_stop, so notes added after the checks still make it.
 */
void t_fleet_verify(struct t_fleet *f);

/*
 * Prints the summary line, SIGTERMs the workers and the API still running
 * and asserts they exit 0, then stops the receiver and closes the database
 * connection.
 */
void t_fleet_stop(struct t_fleet *f);

/* Appends printf-style text to f->note (shown in the summary line). */
void t_fleet_note(struct t_fleet *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Makes sure PostgreSQL and RabbitMQ run (scripts/ctl start): a suite's .init/.fini. */
void t_fleet_services_up(void);

/* ---- load: a thread posting jobs while a fault happens ---- */

struct t_load {
	struct t_fleet *f;
	char sid[37];
	char prefix[32];
	int max_jobs;  /* stop after this many accepted jobs */
	int per_job;   /* tasks per job */
	int pace_ms;   /* pause after each post */
	int stop;      /* atomic: set by t_load_stop */
	int accepted;  /* atomic: jobs answered 202 */
	int refused;   /* atomic: answered 503 (PostgreSQL down) */
	int no_answer; /* atomic: transport failures */
	int other;     /* atomic: any other status: a test failure */
	long last_other;
	long long max_latency_ms;
	pthread_t thread;
	bool running;
};

/*
 * Starts a thread posting jobs of per_job people to a new session, pausing
 * pace_ms after each attempt, until max_jobs were accepted or t_load_stop.
 * Answers other than 202 are counted, never fatal in the thread; t_load_stop
 * asserts that none was unexpected (503 and no answer are allowed only when
 * allow_outage).
 */
void t_load_start(struct t_load *l, struct t_fleet *f, const char *prefix, int max_jobs,
                  int per_job, int pace_ms);

/* Waits until at least n jobs were accepted; returns whether within timeout_ms. */
bool t_load_wait_accepted(struct t_load *l, int n, int timeout_ms);

/*
 * Stops the thread (after the post in flight) or, when wait_all, waits for
 * it to post all max_jobs. Asserts no unexpected answer came back.
 */
void t_load_stop(struct t_load *l, bool wait_all, bool allow_outage);

#endif
