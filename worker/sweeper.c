/*
 * sweeper.c - republishing of stranded work (docs/operations.md, stranded work).
 *
 * The API commits before it publishes, so a crash or a broker outage
 * between the two leaves a job whose published_at is NULL. Every
 * BULKREG_SWEEP_INTERVAL_MS the sweeper, if it holds the advisory lock,
 * publishes the queued tasks of such jobs once they are older than a grace
 * period (the API normally marks them within milliseconds), then marks them.
 * It also republishes tasks left queued far longer than any backlog should
 * last (a purged queue, a lost message). Republishing is harmless:
 * processing skips tasks already terminal.
 *
 * Every worker's sweeper, lock or not, first writes the process's heartbeat
 * (process_heartbeats: whether its consumers are connected), which the
 * operator console shows as the worker's readiness (docs/console.md), and
 * removes it when the worker stops.
 *
 * One thread with its own PostgreSQL and AMQP connections; only `stop`
 * (atomic) is shared.
 */
#include "sweeper.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "db.h"
#include "log.h"
#include "mq.h"
#include "proc.h"
#include "pgarray.h"
#include "taskmsg.h"

/* "bulkreg sweeper" as a lock key. */
#define SWEEP_LOCK_KEY "7263611021"
/* The API marks a job published within milliseconds; give it this long. */
#define SWEEP_GRACE_MIN_MS 2000
/*
 * Confirms of a sweep's batch normally take milliseconds; a node that
 * stopped answering costs one sweep this much, after which the connection
 * moves to the next node and the next sweep publishes the batch again.
 */
#define SWEEP_CONFIRM_TIMEOUT_MS 5000

static const struct mq_opts sweeper_mq_opts = {
    .heartbeat_s = MQ_HEARTBEAT_S, .lazy = true, .role = "sweeper"};

struct sweeper {
	struct worker *w;
	pthread_t thread;
	db_conn *db;
	mq_conn *mq;
	char host[256];
	char id[300];     /* host:pid, the heartbeat's key */
	char started[32]; /* unix seconds */
};

/* The heartbeat, and the rows of processes silent for a day. */
static const db_stmt stmt_heartbeat = {
    "sweep_heartbeat",
    "WITH gone AS (DELETE FROM process_heartbeats WHERE seen_at < now() - interval '1 day')"
    " INSERT INTO process_heartbeats"
    "  (id, kind, host, pid, metrics_port, ready, interval_ms, started_at, seen_at)"
    " VALUES ($1, 'worker', $2, $3::int, $4::int, $5::boolean, $6::int,"
    "  to_timestamp($7::bigint), now())"
    " ON CONFLICT (id) DO UPDATE SET ready = EXCLUDED.ready, metrics_port = EXCLUDED.metrics_port,"
    "  interval_ms = EXCLUDED.interval_ms, started_at = EXCLUDED.started_at, seen_at = now()",
    7};

static const db_stmt stmt_lock = {"sweep_lock", "SELECT pg_try_advisory_lock(" SWEEP_LOCK_KEY ")",
                                  0};
static const db_stmt stmt_unlock = {"sweep_unlock", "SELECT pg_advisory_unlock(" SWEEP_LOCK_KEY ")",
                                    0};
/*
 * Queued tasks of unpublished jobs past the grace period, oldest jobs first.
 * Only processing jobs have queued tasks: they are found through
 * jobs_processing (published_at is in no index, so marking a job published
 * is a HOT update; sql/migrations/001_baseline.sql).
 */
static const db_stmt stmt_unpublished = {
    "sweep_unpublished",
    "SELECT t.id, t.job_id FROM jobs j JOIN tasks t ON t.job_id = j.id"
    " WHERE j.status = 'processing' AND j.published_at IS NULL"
    "   AND j.created_at < now() - $1::int * interval '1 ms'"
    "   AND t.status = 'queued'"
    " ORDER BY j.created_at, t.idx LIMIT 500",
    1};
static const db_stmt stmt_mark_published = {
    "sweep_mark_published",
    "UPDATE jobs SET published_at = now() WHERE id = ANY ($1::uuid[])"
    "   AND published_at IS NULL"
    "   AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.job_id = jobs.id AND t.status = 'queued'"
    "                   AND NOT (t.id = ANY ($2::uuid[])))",
    2};
/*
 * Claims long-queued tasks of published jobs: touching updated_at spaces out
 * repeats. Only processing jobs have queued tasks; they are few and indexed
 * (jobs_processing), and each one's tasks are one range of (job_id, idx).
 */
static const db_stmt stmt_stranded = {
    "sweep_stranded",
    "UPDATE tasks SET updated_at = now() WHERE id IN ("
    "  SELECT q.id FROM jobs j CROSS JOIN LATERAL ("
    "    SELECT t.id FROM tasks t WHERE t.job_id = j.id AND t.status = 'queued'"
    "      AND t.updated_at < now() - $1::bigint * interval '1 ms') q"
    "  WHERE j.status = 'processing' AND j.published_at IS NOT NULL"
    "  LIMIT 500)"
    " RETURNING id, job_id",
    1};

/* Publishes the (task id, job id) rows of res; BR_OK when all were confirmed. */
static br_status publish_rows(struct sweeper *s, PGresult *res)
{
	int n = PQntuples(res);
	struct taskmsg_batch b;
	br_status st = taskmsg_batch_init(&b, (size_t)n);
	for (int i = 0; i < n && st == BR_OK; i++)
		st = taskmsg_batch_add(&b, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1));
	if (st == BR_OK)
		st = mq_ensure(s->mq);
	if (st == BR_OK)
		st = mq_publish(s->mq, MQ_EXCHANGE, MQ_ROUTE_TASKS, b.msgs, b.n,
		                SWEEP_CONFIRM_TIMEOUT_MS);
	taskmsg_batch_free(&b);
	return st;
}

/* The values of column col of res as a PostgreSQL array literal "{a,b,...}". */
static br_status array_of(PGresult *res, int col, char **out)
{
	int n = PQntuples(res);
	size_t total = 0;
	for (int i = 0; i < n; i++)
		total += (size_t)PQgetlength(res, i, col);
	size_t cap = pga_bound((size_t)n, total);
	char *buf = malloc(cap);
	if (!buf)
		return BR_NOMEM;
	struct pga_writer w;
	pga_start(&w, buf, cap);
	for (int i = 0; i < n; i++)
		pga_add(&w, PQgetvalue(res, i, col), (size_t)PQgetlength(res, i, col));
	if (!pga_finish(&w)) {
		free(buf);
		return BR_TOOBIG;
	}
	*out = buf;
	return BR_OK;
}

static void sweep_unpublished(struct sweeper *s)
{
	PGresult *res = NULL;
	char *jobs = NULL, *tasks = NULL;
	char grace[24];
	int g = 2 * s->w->cfg->sweep_interval_ms;
	snprintf(grace, sizeof(grace), "%d", g > SWEEP_GRACE_MIN_MS ? g : SWEEP_GRACE_MIN_MS);
	const char *gp[] = {grace};
	if (db_run(s->db, &stmt_unpublished, gp, &res) != BR_OK || PQntuples(res) == 0)
		goto out;
	br_status st = publish_rows(s, res);
	if (st != BR_OK) {
		LOG_WARN("sweeper: publishing %d stranded task(s) failed: %s", PQntuples(res),
		         mq_errmsg(s->mq));
		goto out;
	}
	if (array_of(res, 1, &jobs) != BR_OK || array_of(res, 0, &tasks) != BR_OK)
		goto out;
	const char *params[] = {jobs, tasks};
	if (db_run(s->db, &stmt_mark_published, params, NULL) != BR_OK)
		goto out;
	LOG_INFO("sweeper: published %d task(s) of unpublished jobs", PQntuples(res));
out:
	free(jobs);
	free(tasks);
	PQclear(res);
}

static void sweep_stranded(struct sweeper *s)
{
	PGresult *res = NULL;
	char after[24];
	snprintf(after, sizeof(after), "%ld", s->w->cfg->stranded_after_ms);
	const char *ap[] = {after};
	if (db_run(s->db, &stmt_stranded, ap, &res) != BR_OK || PQntuples(res) == 0)
		goto out;
	if (publish_rows(s, res) == BR_OK)
		LOG_WARN("sweeper: republished %d task(s) queued for over %ld ms", PQntuples(res),
		         s->w->cfg->stranded_after_ms);
out:
	PQclear(res);
}

static const db_stmt stmt_heartbeat_end = {"sweep_heartbeat_end",
                                           "DELETE FROM process_heartbeats WHERE id = $1", 1};

static void heartbeat(struct sweeper *s)
{
	const struct br_config *cfg = s->w->cfg;
	char pid[24], port[24], interval[24];
	snprintf(pid, sizeof(pid), "%ld", (long)getpid());
	snprintf(port, sizeof(port), "%d", cfg->worker_metrics_port);
	snprintf(interval, sizeof(interval), "%d", cfg->sweep_interval_ms);
	const char *params[] = {
	    s->id,    s->host,   pid, port, consumers_ready(s->w) ? "true" : "false",
	    interval, s->started};
	if (db_ensure(s->db) == BR_OK && db_run(s->db, &stmt_heartbeat, params, NULL) != BR_OK)
		LOG_WARN("sweeper: heartbeat not written: %s", db_errmsg(s->db));
}

static void sweep_once(struct sweeper *s)
{
	PGresult *res = NULL;
	if (db_ensure(s->db) != BR_OK || db_run(s->db, &stmt_lock, NULL, &res) != BR_OK)
		goto out;
	if (strcmp(PQgetvalue(res, 0, 0), "t") != 0)
		goto out; /* another worker process sweeps */
	sweep_unpublished(s);
	sweep_stranded(s);
	if (db_run(s->db, &stmt_unlock, NULL, NULL) != BR_OK)
		db_reset(s->db); /* a lost connection released the lock anyway */
out:
	PQclear(res);
}

static void *sweeper_main(void *arg)
{
	struct sweeper *s = arg;
	const struct br_config *cfg = s->w->cfg;
	while (!__atomic_load_n(&s->w->stop, __ATOMIC_SEQ_CST)) {
		heartbeat(s);
		sweep_once(s);
		proc_sleep_ms(cfg->sweep_interval_ms, &s->w->stop);
	}
	return NULL;
}

br_status sweeper_start(struct worker *w)
{
	struct sweeper *s = calloc(1, sizeof(*s));
	if (!s)
		return BR_NOMEM;
	s->w = w;
	if (gethostname(s->host, sizeof(s->host) - 1) != 0 || !s->host[0])
		snprintf(s->host, sizeof(s->host), "unknown");
	snprintf(s->id, sizeof(s->id), "%s:%ld", s->host, (long)getpid());
	snprintf(s->started, sizeof(s->started), "%lld", (long long)time(NULL));
	static const struct db_opts opts = WORKER_DB_OPTS;
	br_status st = db_open(w->cfg->database_url, &opts, true, &s->db);
	if (st == BR_OK)
		st = mq_open(w->cfg->amqp_url, &sweeper_mq_opts, &s->mq);
	if (st == BR_OK && pthread_create(&s->thread, NULL, sweeper_main, s) != 0)
		st = BR_NOMEM;
	if (st != BR_OK) {
		mq_close(s->mq);
		db_close(s->db);
		free(s);
		return st;
	}
	w->sweeper = s;
	return BR_OK;
}

void sweeper_stop(struct worker *w)
{
	struct sweeper *s = w->sweeper;
	if (!s)
		return;
	pthread_join(s->thread, NULL);
	/* A worker that stops says so; one that dies goes silent (docs/console.md). */
	const char *params[] = {s->id};
	if (db_ensure(s->db) == BR_OK && db_run(s->db, &stmt_heartbeat_end, params, NULL) != BR_OK)
		LOG_WARN("sweeper: heartbeat not removed: %s", db_errmsg(s->db));
	mq_close(s->mq);
	db_close(s->db);
	free(s);
	w->sweeper = NULL;
}
