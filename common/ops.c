/*
 * ops.c - /healthz, /readyz, /metrics and the process-wide metrics (see
 * ops.h). Global state: the shared metric handles, set once by ops_init.
 *
 * /readyz's checks run on the ops thread ("probe"), one at a time, for
 * every request that arrived meanwhile; a request waits for the probe up to
 * OPS_READY_DEADLINE_MS and then answers without it, naming the part still
 * being checked as down: a hung PostgreSQL or broker (a statement or an
 * RPC that never returns) cannot hold a probe request, only the probe.
 * The probe state is guarded by pr_mu.
 */
#include "ops.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mq.h"
#include "mq_mgmt.h"
#include "proc.h"

#define OPS_DB_WAIT_MS 3000
/*
 * The probe's broker connection gives a node that does not answer this
 * long up and moves to the next: with one retry, a frozen node still
 * leaves time to answer /readyz from another node within the deadline.
 */
#define OPS_MQ_RPC_MS 600
/* How long /metrics waits for the management API (all nodes together). */
#define OPS_MGMT_MS       1500
#define OPS_MGMT_REUSE_MS 1000

met_counter *ops_tasks_processed;
met_histogram *ops_task_duration;
met_counter *ops_webhook_deliveries;

/* How long ops_free waits for a probe stuck on a hung service. */
#define OPS_STOP_WAIT_MS 3000

enum ops_phase {
	OPS_IDLE,
	OPS_DB,
	OPS_MQ
};

struct ops {
	db_pool *db;
	ops_ready_fn ready;
	void *ready_ctx;
	ops_ready_fn blocked; /* true while the broker blocks the process's publishers */
	void *blocked_ctx;
	pthread_mutex_t mq_mu;
	mq_conn *mq; /* guarded by mq_mu */
	pthread_mutex_t mgmt_mu;
	mq_mgmt *mgmt;             /* NULL when BULKREG_MQ_MANAGEMENT_URL is off */
	struct mq_members members; /* as last read, under mgmt_mu */
	bool members_ok;
	long long members_at_ms;

	pthread_mutex_t pr_mu;
	pthread_cond_t pr_cv;
	pthread_t prober;
	bool prober_started;
	bool stop;                 /* under pr_mu */
	unsigned long asked, done; /* probe generations, under pr_mu */
	enum ops_phase phase;      /* what the running probe checks, under pr_mu */
	bool db_ok, mq_ok;         /* as last checked, under pr_mu */
};

static const db_stmt stmt_ping = {"ops_ping", "SELECT 1", 0};
static const db_stmt stmt_in_flight = {"ops_jobs_in_flight",
                                       "SELECT count(*) FROM jobs WHERE status = 'processing'", 0};

/* Queue depth and consumers of both queues; false when the broker is down. */
static bool ops_queue_stats(ops *o, uint32_t stats[2][2])
{
	static const char *const queues[2] = {MQ_QUEUE_TASKS, MQ_QUEUE_DEAD};
	bool ok = true;
	pthread_mutex_lock(&o->mq_mu);
	for (int i = 0; i < 2 && ok; i++) {
		br_status st = BR_MQ_CONN;
		/* Once more on a fresh connection if the kept one went stale. */
		for (int attempt = 0; attempt < 2 && st == BR_MQ_CONN; attempt++) {
			st = mq_ensure(o->mq);
			if (st == BR_OK)
				st = mq_queue_stats(o->mq, queues[i], &stats[i][0], &stats[i][1]);
		}
		ok = st == BR_OK;
	}
	pthread_mutex_unlock(&o->mq_mu);
	return ok;
}

static br_status gauge_queues(void *ctx, strbuf *out)
{
	uint32_t s[2][2];
	if (!ops_queue_stats(ctx, s))
		return BR_OK; /* no sample beats a wrong one */
	br_status st = sb_appendf(out,
	                          "bulkreg_queue_messages{queue=\"%s\"} %u\n"
	                          "bulkreg_queue_messages{queue=\"%s\"} %u\n",
	                          MQ_QUEUE_TASKS, s[0][0], MQ_QUEUE_DEAD, s[1][0]);
	return st;
}

static br_status gauge_consumers(void *ctx, strbuf *out)
{
	uint32_t s[2][2];
	if (!ops_queue_stats(ctx, s))
		return BR_OK;
	return sb_appendf(out,
	                  "bulkreg_queue_consumers{queue=\"%s\"} %u\n"
	                  "bulkreg_queue_consumers{queue=\"%s\"} %u\n",
	                  MQ_QUEUE_TASKS, s[0][1], MQ_QUEUE_DEAD, s[1][1]);
}

/*
 * Members of bulkreg.tasks from the management API, read once for both
 * gauges of one scrape (a second read within OPS_MGMT_REUSE_MS reuses it).
 */
bool ops_queue_members(ops *o, struct mq_members *out)
{
	if (!o->mgmt)
		return false;
	pthread_mutex_lock(&o->mgmt_mu);
	long long now = proc_now_ms();
	if (now - o->members_at_ms > OPS_MGMT_REUSE_MS) {
		o->members_ok = mq_mgmt_members(o->mgmt, MQ_QUEUE_TASKS, OPS_MGMT_MS, &o->members,
		                                NULL, 0) == BR_OK;
		o->members_at_ms = proc_now_ms();
	}
	bool ok = o->members_ok;
	*out = o->members;
	pthread_mutex_unlock(&o->mgmt_mu);
	return ok;
}

/* Absent (no sample) while the management API cannot be asked. */
static br_status gauge_members(void *ctx, strbuf *out)
{
	struct mq_members m;
	if (!ops_queue_members(ctx, &m))
		return BR_OK;
	return sb_appendf(out, "bulkreg_queue_members{queue=\"%s\"} %d\n", MQ_QUEUE_TASKS,
	                  m.members);
}

static br_status gauge_members_online(void *ctx, strbuf *out)
{
	struct mq_members m;
	if (!ops_queue_members(ctx, &m))
		return BR_OK;
	return sb_appendf(out, "bulkreg_queue_members_online{queue=\"%s\"} %d\n", MQ_QUEUE_TASKS,
	                  m.online);
}

static br_status gauge_in_flight(void *ctx, strbuf *out)
{
	ops *o = ctx;
	db_conn *db = NULL;
	PGresult *res = NULL;
	br_status st = db_pool_get(o->db, OPS_DB_WAIT_MS, &db);
	if (st == BR_OK)
		st = db_run_read(db, &stmt_in_flight, NULL, &res);
	db_pool_put(o->db, db);
	if (st != BR_OK)
		return BR_OK;
	st = sb_appendf(out, "bulkreg_jobs_in_flight %s\n", PQgetvalue(res, 0, 0));
	PQclear(res);
	return st;
}

static void *ops_prober(void *arg);

/*
 * Every label value a counter can take exists from the start at 0, so a
 * rate() or increase() over a series that has not happened yet is 0, not
 * absent (docs/operations.md, Metrics).
 */
static const char *const task_outcomes[] = {"succeeded", "failed", "skipped",
                                            "missing",   "error",  "internal_error"};
static const char *const webhook_outcomes[] = {"success", "failure", "failed_permanently"};

static void counter_zero(met_counter *c, const char *const *outcomes, size_t n)
{
	char labels[64];
	for (size_t i = 0; i < n; i++) {
		snprintf(labels, sizeof(labels), "outcome=\"%s\"", outcomes[i]);
		met_counter_add(c, labels, 0);
	}
}

/*
 * The deployment-wide gauges describe the broker's queues and the database,
 * not the process: every process exports the same value (so any one process
 * answers for the deployment, and losing one loses no alert). Summed over
 * processes they count each consumer once per process: aggregate them with
 * max(), as their HELP says.
 */
#define OPS_SHARED \
	" Deployment-wide: every process exports the same value; aggregate with max(), not sum()."

static br_status ops_metrics_init(ops *o)
{
	br_status st = http_metrics_init();
	if (st != BR_OK)
		return st;
	http_metrics_zero("/healthz", 200);
	http_metrics_zero("/readyz", 200);
	http_metrics_zero("/readyz", 503);
	http_metrics_zero("/metrics", 200);
	ops_tasks_processed = met_counter_new("bulkreg_tasks_processed_total",
	                                      "Tasks finished by workers, by outcome.");
	ops_task_duration =
	    met_histogram_new("bulkreg_task_duration_seconds",
	                      "Time from a task's delivery to the commit of its result.");
	ops_webhook_deliveries = met_counter_new("bulkreg_webhook_deliveries_total",
	                                         "Webhook delivery attempts, by outcome.");
	if (!ops_tasks_processed || !ops_task_duration || !ops_webhook_deliveries)
		return BR_NOMEM;
	counter_zero(ops_tasks_processed, task_outcomes,
	             sizeof(task_outcomes) / sizeof(task_outcomes[0]));
	counter_zero(ops_webhook_deliveries, webhook_outcomes,
	             sizeof(webhook_outcomes) / sizeof(webhook_outcomes[0]));
	st = met_gauge_register("bulkreg_queue_messages", "Messages ready in a queue." OPS_SHARED,
	                        gauge_queues, o);
	if (st == BR_OK)
		st = met_gauge_register(
		    "bulkreg_queue_consumers",
		    "Consumers of a queue, as the broker counts them." OPS_SHARED, gauge_consumers,
		    o);
	if (st == BR_OK)
		st = met_gauge_register(
		    "bulkreg_queue_members",
		    "Nodes holding a replica of the quorum queue (management API; absent while it"
		    " cannot be asked)." OPS_SHARED,
		    gauge_members, o);
	if (st == BR_OK)
		st = met_gauge_register("bulkreg_queue_members_online",
		                        "Replicas of the quorum queue on running nodes (management"
		                        " API; absent while it cannot be asked)." OPS_SHARED,
		                        gauge_members_online, o);
	if (st == BR_OK)
		st =
		    met_gauge_register("bulkreg_jobs_in_flight",
		                       "Jobs still processing, in the whole deployment." OPS_SHARED,
		                       gauge_in_flight, o);
	return st;
}

br_status ops_init(db_pool *db, const char *amqp_url, const char *mgmt_url, ops_ready_fn ready,
                   void *ready_ctx, ops **out)
{
	ops *o = calloc(1, sizeof(*o));
	if (!o)
		return BR_NOMEM;
	o->db = db;
	o->ready = ready;
	o->ready_ctx = ready_ctx;
	pthread_mutex_init(&o->mq_mu, NULL);
	pthread_mutex_init(&o->mgmt_mu, NULL);
	o->members_at_ms = -OPS_MGMT_REUSE_MS - 1;
	pthread_mutex_init(&o->pr_mu, NULL);
	proc_cond_init(&o->pr_cv);
	const struct mq_opts mo = {.heartbeat_s = MQ_HEARTBEAT_S,
	                           .rpc_timeout_ms = OPS_MQ_RPC_MS,
	                           .lazy = true,
	                           .role = "probe"};
	br_status st = mq_open(amqp_url, &mo, &o->mq);
	if (st == BR_OK)
		st = mq_mgmt_new(mgmt_url, amqp_url, &o->mgmt);
	if (st == BR_OK) {
		o->prober_started = pthread_create(&o->prober, NULL, ops_prober, o) == 0;
		st = o->prober_started ? BR_OK : BR_NOMEM;
	}
	if (st == BR_OK)
		st = ops_metrics_init(o);
	if (st != BR_OK) {
		ops_free(o);
		return st;
	}
	*out = o;
	return BR_OK;
}

void ops_set_blocked(ops *o, ops_ready_fn blocked, void *ctx)
{
	o->blocked = blocked;
	o->blocked_ctx = ctx;
}

void ops_free(ops *o)
{
	if (!o)
		return;
	if (o->prober_started) {
		struct timespec deadline = proc_deadline(OPS_STOP_WAIT_MS);
		pthread_mutex_lock(&o->pr_mu);
		o->stop = true;
		pthread_cond_broadcast(&o->pr_cv);
		bool stuck = false;
		while (o->phase != OPS_IDLE && !stuck)
			stuck =
			    pthread_cond_timedwait(&o->pr_cv, &o->pr_mu, &deadline) == ETIMEDOUT;
		pthread_mutex_unlock(&o->pr_mu);
		if (stuck) {
			/*
			 * The probe waits on a hung service and may come back
			 * any time: leave it everything it uses. The process
			 * is exiting.
			 */
			LOG_WARN("readiness probe still waiting on a hung service at exit");
			pthread_detach(o->prober);
			return;
		}
		pthread_join(o->prober, NULL);
	}
	mq_close(o->mq);
	mq_mgmt_free(o->mgmt);
	pthread_mutex_destroy(&o->mgmt_mu);
	pthread_mutex_destroy(&o->mq_mu);
	pthread_mutex_destroy(&o->pr_mu);
	pthread_cond_destroy(&o->pr_cv);
	free(o);
}

void ops_method_not_allowed(struct http_resp *resp, const char *allow)
{
	http_resp_error(resp, 405, "method_not_allowed", "Method not allowed",
	                "This resource does not support that method.");
	if (http_resp_header(resp, "Allow", "%s", allow) != BR_OK)
		LOG_WARN("Allow header lost");
}

/* Runs a probe whenever one is asked for; see the top of the file. */
static void *ops_prober(void *arg)
{
	ops *o = arg;
	pthread_mutex_lock(&o->pr_mu);
	while (!o->stop) {
		if (o->done == o->asked) {
			pthread_cond_wait(&o->pr_cv, &o->pr_mu);
			continue;
		}
		unsigned long gen = o->asked;
		o->phase = OPS_DB;
		pthread_mutex_unlock(&o->pr_mu);
		db_conn *db = NULL;
		bool db_ok = db_pool_get(o->db, OPS_DB_WAIT_MS, &db) == BR_OK &&
		             db_run_read(db, &stmt_ping, NULL, NULL) == BR_OK;
		db_pool_put(o->db, db);
		pthread_mutex_lock(&o->pr_mu);
		o->db_ok = db_ok;
		o->phase = OPS_MQ;
		pthread_mutex_unlock(&o->pr_mu);
		uint32_t s[2][2];
		bool mq_ok = ops_queue_stats(o, s);
		pthread_mutex_lock(&o->pr_mu);
		o->mq_ok = mq_ok;
		o->phase = OPS_IDLE;
		o->done = gen;
		pthread_cond_broadcast(&o->pr_cv);
	}
	pthread_mutex_unlock(&o->pr_mu);
	return NULL;
}

/* Asks the probe for a fresh check and waits for it up to the deadline. */
static void ops_check(ops *o, bool *db_ok, bool *mq_ok, bool *blocked, bool *proc_ok)
{
	struct timespec deadline = proc_deadline(OPS_READY_DEADLINE_MS);
	pthread_mutex_lock(&o->pr_mu);
	unsigned long want = ++o->asked;
	pthread_cond_broadcast(&o->pr_cv);
	bool late = false;
	while (o->done < want && !late)
		late = pthread_cond_timedwait(&o->pr_cv, &o->pr_mu, &deadline) == ETIMEDOUT;
	/* A check still running past the deadline is a service not answering. */
	*db_ok = o->db_ok && !(late && o->phase == OPS_DB);
	*mq_ok = o->mq_ok && !(late && o->phase == OPS_MQ);
	pthread_mutex_unlock(&o->pr_mu);
	*blocked = *mq_ok && o->blocked && o->blocked(o->blocked_ctx);
	*proc_ok = !o->ready || o->ready(o->ready_ctx);
}

bool ops_readiness(ops *o, bool *db_ok, bool *mq_ok, bool *proc_ok)
{
	bool blocked;
	ops_check(o, db_ok, mq_ok, &blocked, proc_ok);
	*mq_ok = *mq_ok && !blocked;
	return *db_ok && *mq_ok && *proc_ok;
}

bool ops_queues(ops *o, uint32_t stats[2][2])
{
	uint32_t s[2][2];
	if (!ops_queue_stats(o, s))
		return false;
	memcpy(stats, s, sizeof(s));
	return true;
}

static void ops_readyz(ops *o, struct http_resp *resp)
{
	bool db_ok, mq_ok, blocked, proc_ok;
	ops_check(o, &db_ok, &mq_ok, &blocked, &proc_ok);
	bool ok = db_ok && mq_ok && !blocked && proc_ok;
	char body[128];
	snprintf(body, sizeof(body),
	         "{\"status\":\"%s\",\"database\":\"%s\",\"broker\":\"%s\",\"process\":\"%s\"}",
	         ok ? "ready" : "unavailable", db_ok ? "up" : "down",
	         blocked ? "blocked"
	         : mq_ok ? "up"
	                 : "down",
	         proc_ok ? "up" : "down");
	http_resp_json(resp, ok ? 200 : 503, body);
}

bool ops_handle(ops *o, struct http_req *req, struct http_resp *resp)
{
	const char *path = req->path;
	if (strcmp(path, "/healthz") != 0 && strcmp(path, "/readyz") != 0 &&
	    strcmp(path, "/metrics") != 0)
		return false;
	req->route = path;
	if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0) {
		ops_method_not_allowed(resp, "GET, HEAD");
		return true;
	}
	if (path[1] == 'h') {
		http_resp_json(resp, 200, "{\"status\":\"ok\"}");
	} else if (path[1] == 'r') {
		ops_readyz(o, resp);
	} else {
		resp->status = 200;
		resp->content_type = "text/plain; version=0.0.4";
		if (met_render(&resp->body) != BR_OK)
			http_resp_error(resp, 500, "internal_error", "Internal error",
			                "The metrics could not be rendered.");
	}
	return true;
}
