/*
 * bulkreg-api - the HTTP API process (CONTRACT §5).
 *
 * Start-up: configuration, pools, server; then the main thread waits for
 * SIGTERM/SIGINT and drains: no new connections, requests in flight finish,
 * exit 0. Nothing here is reached by more than the main thread.
 */
#include <stdio.h>
#include <stdlib.h>

#include "app.h"
#include "log.h"
#include "metrics.h"
#include "proc.h"

#define API_THREADS  8
#define API_DRAIN_MS 25000

int main(void)
{
	struct br_config cfg;
	proc_init("bulkreg-api", &cfg);
	proc_block_signals();

	struct api_app app = {.cfg = &cfg};
	http_server *srv = NULL;
	int rc = 1;
	/* One connection per HTTP thread, plus one for scrapes and probes. */
	app.db = db_pool_new(cfg.database_url, API_STATEMENT_TIMEOUT_MS, API_THREADS + 1);
	app.pub = pub_pool_new(cfg.amqp_url, API_THREADS);
	if (!app.db || !app.pub ||
	    ops_init(app.db, cfg.amqp_url, NULL, NULL, &app.ops) != BR_OK) {
		LOG_ERROR("out of memory at start-up");
		goto out;
	}
	struct http_opts opts = {
		.bind = cfg.api_bind,
		.port = cfg.api_port,
		.threads = API_THREADS,
		.max_body = cfg.max_body_bytes,
		.conn_limit = 1024,
		.per_ip_limit = 0,
		.idle_timeout_s = 30,
		.conn_memory = 64 * 1024,
	};
	if (http_start(&opts, api_handle, &app, &srv) != BR_OK)
		goto out;
	LOG_INFO("bulkreg-api listening on %s:%d", cfg.api_bind, cfg.api_port);

	int sig = proc_wait_signal();
	LOG_INFO("signal %d: draining", sig);
	http_stop(srv, API_DRAIN_MS);
	LOG_INFO("bulkreg-api stopped");
	rc = 0;
out:
	ops_free(app.ops);
	pub_pool_free(app.pub);
	db_pool_free(app.db);
	met_shutdown();
	return rc;
}
