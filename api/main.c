/*
 * bulkreg-api - the HTTP API process (docs/openapi.yaml).
 *
 * Start-up: configuration, pools, server; then the main thread waits for
 * SIGTERM/SIGINT and drains: no new connections, requests in flight finish,
 * exit 0. Nothing here is reached by more than the main thread.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>

#include "app.h"
#include "log.h"
#include "metrics.h"
#include "proc.h"

/*
 * Handler threads, and the connections to PostgreSQL and RabbitMQ they
 * share. A handler blocks while its statements run, so a handler thread
 * serves one request at a time (MHD's network threads never block: they
 * hand complete requests to these, common/http.h). Threads are many more
 * than the database connections: a GET of one resource holds no
 * connection while it waits for its batch (readbatch.h), and the more
 * requests wait, the fewer statements serve them. A request that needs a
 * connection of its own waits for one (API_DB_WAIT_MS).
 */
#define API_THREADS  32
#define API_DB_CONNS 8
#define API_MQ_CONNS 8
#define API_DRAIN_MS 25000

/*
 * HTTP limits (BULKREG_HTTP_*, docs/operations.md): connections in total
 * (fewer when the descriptor limit is lower: API_FD_RESERVE stay for
 * PostgreSQL, AMQP, logs and lingering closes) and per client address,
 * deadlines for a request's head and body, the idle timeout and the budget
 * of request bodies held at once. API_CONN_MEMORY bounds MHD's buffers per
 * connection (request line and headers included): request bodies are
 * copied out of it as they arrive, up to BULKREG_MAX_BODY_BYTES.
 */
#define API_FD_RESERVE  256
#define API_CONN_MEMORY (64 * 1024)
/* Token buckets one API process keeps at most (about 100 bytes each). */
#define API_RL_MAX_KEYS 16384

/* /readyz: the broker blocks our publishers (ops_set_blocked). */
static bool publishers_blocked(void *ctx)
{
	return pub_blocked(ctx);
}

/*
 * want, or what the descriptor limit leaves room for (MHD also accepts
 * HTTP_CONN_SLACK more, to answer them 503).
 */
static unsigned conn_limit(unsigned want)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
		return want;
	unsigned long long need = (unsigned long long)want + HTTP_CONN_SLACK(want) + API_FD_RESERVE;
	if (rl.rlim_cur >= need)
		return want;
	if (rl.rlim_cur <= 2 * API_FD_RESERVE)
		return 64;
	unsigned long long room = rl.rlim_cur - API_FD_RESERVE;
	unsigned fit = (unsigned)((room - 16) * 8 / 9); /* n + n/8 + 16 <= room */
	LOG_WARN("http: descriptor limit %llu allows %u connections, not %u",
	         (unsigned long long)rl.rlim_cur, fit, want);
	return fit;
}

int main(void)
{
	struct br_config cfg;
	proc_init("bulkreg-api", &cfg);
	proc_block_signals();

	struct api_app app = {.cfg = &cfg};
	http_server *srv = NULL;
	int rc = 1;
	const struct db_opts db_opts = {.statement_timeout_ms = API_STATEMENT_TIMEOUT_MS,
	                                .lock_timeout_ms = API_LOCK_TIMEOUT_MS,
	                                .idle_in_tx_timeout_ms = API_IDLE_TX_TIMEOUT_MS,
	                                .join_url_base = cfg.join_url_base};
	static const struct db_opts ops_db_opts = OPS_DB_OPTS;
	app.db = db_pool_new(cfg.database_url, &db_opts, API_DB_CONNS);
	/* Scrapes and probes have their own, so a busy API still answers them. */
	db_pool *ops_db = db_pool_new(cfg.database_url, &ops_db_opts, 1);
	app.pub = pub_pool_new(cfg.amqp_url, API_MQ_CONNS);
	app.reads = rb_new(app.db, API_DB_WAIT_MS);
	if (cfg.rate_limit_enabled)
		app.rl = rl_new(cfg.rate_limit_per_sec, cfg.rate_limit_burst, API_RL_MAX_KEYS);
	if (!app.db || !ops_db || !app.pub || !app.reads || (cfg.rate_limit_enabled && !app.rl) ||
	    ops_init(ops_db, cfg.amqp_url, cfg.mq_management_url, NULL, NULL, &app.ops) != BR_OK) {
		LOG_ERROR("out of memory at start-up");
		goto out;
	}
	ops_set_blocked(app.ops, publishers_blocked, app.pub);
	api_metrics_zero();
	struct http_opts opts = {
	    .bind = cfg.api_bind,
	    .port = cfg.api_port,
	    .threads = API_THREADS,
	    .max_body = cfg.max_body_bytes,
	    .body_budget = cfg.http_body_budget_bytes,
	    .conn_limit = conn_limit(cfg.http_max_connections),
	    .per_ip_limit = cfg.http_max_connections_per_ip,
	    .idle_timeout_ms = cfg.http_idle_timeout_ms,
	    .header_timeout_ms = cfg.http_header_timeout_ms,
	    .body_timeout_ms = cfg.http_body_timeout_ms,
	    .conn_memory = API_CONN_MEMORY,
	    .error = api_http_error,
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
	rl_free(app.rl);
	rb_free(app.reads);
	pub_pool_free(app.pub);
	db_pool_free(app.db);
	db_pool_free(ops_db);
	met_shutdown();
	return rc;
}
