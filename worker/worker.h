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

struct batcher;
struct consumer;
struct deliverer;
struct sweeper;

struct worker {
	const struct br_config *cfg;
	int stop; /* atomic: set once on SIGTERM */
	int nconsumers;
	struct consumer *consumers;
	struct batcher *batcher; /* the consumers' next batch */
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
