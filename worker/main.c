/*
 * bulkreg-worker - the consumer process (README.md; docs/operations.md; docs/guarantees.md).
 *
 * Runs BULKREG_WORKER_CONCURRENCY consumer threads, a webhook deliverer,
 * and /healthz, /readyz, /metrics on BULKREG_WORKER_METRICS_PORT. The main
 * thread waits for SIGTERM/SIGINT, then drains: consumers stop taking
 * deliveries, finish and ack what they hold, and the process exits 0.
 */
#include <stdio.h>
#include <stdlib.h>

#include "db.h"
#include "deliverer.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "ops.h"
#include "proc.h"
#include "sweeper.h"
#include "worker.h"

#define WORKER_OPS_THREADS 2

static const struct db_opts ops_db_opts = OPS_DB_OPTS;

static ops *worker_ops;

static void worker_http(void *ctx, struct http_req *req, struct http_resp *resp)
{
	(void)ctx;
	if (!ops_handle(worker_ops, req, resp))
		http_resp_error(resp, 404, "not_found", "Not found", "No such resource.");
}

int main(void)
{
	struct br_config cfg;
	proc_init("bulkreg-worker", &cfg);
	proc_block_signals();

	struct worker w = {.cfg = &cfg};
	http_server *srv = NULL;
	int rc = 1;
	db_pool *ops_db = db_pool_new(cfg.database_url, &ops_db_opts, 2);
	if (!ops_db || ops_init(ops_db, cfg.amqp_url, cfg.mq_management_url, consumers_ready, &w,
	                        &worker_ops) != BR_OK) {
		LOG_ERROR("out of memory at start-up");
		goto out;
	}
	if (cfg.worker_metrics_port) {
		struct http_opts opts = {
		    .bind = cfg.api_bind,
		    .port = cfg.worker_metrics_port,
		    .threads = WORKER_OPS_THREADS,
		    .max_body = 4096,
		    .conn_limit = 64,
		    .per_ip_limit = 0,
		    .idle_timeout_ms = 30000,
		    .conn_memory = 32 * 1024,
		};
		if (http_start(&opts, worker_http, NULL, &srv) != BR_OK)
			goto out;
	}
	if (consumers_start(&w) != BR_OK || deliverer_start(&w) != BR_OK ||
	    sweeper_start(&w) != BR_OK) {
		LOG_ERROR("cannot start worker threads");
		__atomic_store_n(&w.stop, 1, __ATOMIC_SEQ_CST);
		goto drain;
	}
	LOG_INFO("bulkreg-worker running %d consumer(s), metrics on port %d",
	         cfg.worker_concurrency, cfg.worker_metrics_port);

	int sig = proc_wait_signal();
	LOG_INFO("signal %d: draining", sig);
	__atomic_store_n(&w.stop, 1, __ATOMIC_SEQ_CST);
	rc = 0;
drain:
	consumers_join(&w);
	sweeper_stop(&w);
	deliverer_stop(&w);
	LOG_INFO("bulkreg-worker stopped");
out:
	http_stop(srv, 1000);
	ops_free(worker_ops);
	db_pool_free(ops_db);
	met_shutdown();
	return rc;
}
