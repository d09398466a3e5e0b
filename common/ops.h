/*
 * ops.h - the operational endpoints both processes serve without a token:
 * GET /healthz (alive), GET /readyz (PostgreSQL and a broker node reachable, else
 * 503) and GET /metrics (Prometheus text), plus the metrics docs/openapi.yaml
 * lists, registered once per process.
 *
 * Thread-safe: the handler runs on HTTP pool threads; the ops module's own
 * AMQP connection (for queue gauges and readiness) is behind a mutex.
 */
#ifndef BULKREG_OPS_H
#define BULKREG_OPS_H

#include <stdbool.h>
#include <stdint.h>

#include "db.h"
#include "http.h"
#include "metrics.h"
#include "mq_mgmt.h"
#include "status.h"

/* Metrics shared by both processes (NULL-safe to use before ops_init). */
extern met_counter *ops_tasks_processed; /* {outcome} */
extern met_histogram *ops_task_duration;
extern met_counter *ops_webhook_deliveries; /* {outcome} */

typedef struct ops ops;

/*
 * /readyz answers within OPS_READY_DEADLINE_MS whatever hangs behind it:
 * its checks run on the ops thread, and a check still running then counts
 * as down. The pool a process gives ops_init should be opened with
 * OPS_DB_OPTS, so that a slow database fails a check rather than holds it.
 */
#define OPS_READY_DEADLINE_MS 1500
#define OPS_DB_OPTS                                                     \
	{                                                               \
		.statement_timeout_ms = 2000, .lock_timeout_ms = 1000,  \
		.idle_in_tx_timeout_ms = 10000, .connect_timeout_s = 2, \
	}

/*
 * Extra readiness check of the process (e.g. the worker's consumers are
 * connected); NULL for none. Returns true when ready.
 */
typedef bool (*ops_ready_fn)(void *ctx);

/*
 * Registers the metrics and prepares the endpoints. db is borrowed for
 * readiness and the jobs-in-flight gauge; amqp_url (AMQP_URL) and mgmt_url
 * (BULKREG_MQ_MANAGEMENT_URL, for the queue's members) are copied.
 */
br_status ops_init(db_pool *db, const char *amqp_url, const char *mgmt_url, ops_ready_fn ready,
                   void *ready_ctx, ops **out) BR_MUST_USE;
void ops_free(ops *o);

/*
 * Makes /readyz answer 503 with "broker":"blocked" while blocked(ctx) is
 * true (the API: its publishers are blocked by a broker alarm). Call before
 * serving; blocked must be quick and thread-safe.
 */
void ops_set_blocked(ops *o, ops_ready_fn blocked, void *ctx);

/*
 * Messages and consumers of bulkreg.tasks (stats[0]) and
 * bulkreg.tasks.dead (stats[1]) as the broker reports them now; false when
 * it cannot be asked (stats untouched). For the console (docs/console.md).
 */
bool ops_queues(ops *o, uint32_t stats[2][2]);

/*
 * The members of bulkreg.tasks (its replicas) and how many are online, from
 * the broker's management API (BULKREG_MQ_MANAGEMENT_URL); one reading
 * serves the calls of a few seconds. false when it cannot be asked.
 */
bool ops_queue_members(ops *o, struct mq_members *out);

/*
 * This process's readiness as /readyz reports it, within
 * OPS_READY_DEADLINE_MS: *db_ok, *mq_ok (false also while the broker
 * blocks the process) and *proc_ok. Returns true when all three are.
 */
bool ops_readiness(ops *o, bool *db_ok, bool *mq_ok, bool *proc_ok);

/* Serves req when its path is an ops endpoint; returns false otherwise. */
bool ops_handle(ops *o, struct http_req *req, struct http_resp *resp);

/* Answers 405 with an Allow header. */
void ops_method_not_allowed(struct http_resp *resp, const char *allow);

#endif
