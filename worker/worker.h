/*
 * worker.h - the worker process's shared state and its parts: consumer
 * threads (consumer.c), the webhook deliverer (deliverer.c) and the
 * operational HTTP endpoints (served through common/ops.c).
 *
 * struct worker is filled by main before any thread starts; afterwards only
 * the atomic fields change.
 */
#ifndef BULKREG_WORKER_H
#define BULKREG_WORKER_H

#include <pthread.h>
#include <stdbool.h>

#include "config.h"
#include "status.h"

#define WORKER_STATEMENT_TIMEOUT_MS 30000
#define WORKER_MAX_THREADS          256
/*
 * Bounds of every worker PostgreSQL connection (db.h). A batch waiting for
 * a row another transaction holds gives up after WORKER_LOCK_TIMEOUT_MS,
 * well before its statement timeout, and is retried (BR_DB_RETRY) with its
 * deliveries kept; a worker frozen inside a transaction (SIGSTOP, a stuck
 * host) loses it and its row locks after WORKER_IDLE_TX_TIMEOUT_MS
 * (docs/operations.md).
 */
#define WORKER_LOCK_TIMEOUT_MS    10000
#define WORKER_IDLE_TX_TIMEOUT_MS 10000
#define WORKER_DB_OPTS                                               \
	{                                                            \
		.statement_timeout_ms = WORKER_STATEMENT_TIMEOUT_MS, \
		.lock_timeout_ms = WORKER_LOCK_TIMEOUT_MS,           \
		.idle_in_tx_timeout_ms = WORKER_IDLE_TX_TIMEOUT_MS,  \
	}

struct batcher;
struct consumer;
struct db_conn;
struct deliverer;
struct sweeper;

struct worker {
	const struct br_config *cfg;
	int stop; /* atomic: set once on SIGTERM */
	int nconsumers;
	struct consumer *consumers;
	struct batcher *batcher; /* the consumers' next batch (batcher.h) */
	struct db_conn **dbs;    /* one per consumer, shared by all through the batcher */
	struct deliverer *deliverer;
	struct sweeper *sweeper;
};

/* Starts cfg->worker_concurrency consumer threads. */
br_status consumers_start(struct worker *w) BR_MUST_USE;

/*
 * Waits for every consumer to finish and ack what it holds (they stop
 * taking deliveries once w->stop is set), then frees them.
 */
void consumers_join(struct worker *w);

/* True when every consumer is connected to PostgreSQL and the broker. */
bool consumers_ready(void *w);

#endif
