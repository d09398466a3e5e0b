/*
 * deliverer.h - the worker's webhook deliverer: sends due webhook
 * deliveries from the outbox (webhook_deliveries), off the task path.
 */
#ifndef BULKREG_WORKER_DELIVERER_H
#define BULKREG_WORKER_DELIVERER_H

#include "status.h"
#include "worker.h"

/* Starts the deliverer thread; sets w->deliverer. */
br_status deliverer_start(struct worker *w) BR_MUST_USE;

/*
 * Stops it once w->stop is set: attempts in progress are finished or given
 * up (their lease expires and another worker retries), then joins and
 * frees. Accepts a worker whose deliverer never started.
 */
void deliverer_stop(struct worker *w);

#endif
