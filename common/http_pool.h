/*
 * http_pool.h - the fixed pool of threads that run the HTTP server's
 * request handlers (common/http.c), so that a handler that blocks (a lock
 * wait, a slow broker) holds up only its own request, never the other
 * connections of an MHD network thread.
 *
 * A bounded FIFO of opaque items (a ring sized at creation: submitting
 * allocates nothing) served by a fixed number of threads, each calling one
 * function per item. Items are borrowed: the pool never frees them.
 *
 * Thread-safe: hp_submit may be called from any thread, also after
 * hp_stop; hp_stop and hp_free from one.
 */
#ifndef BULKREG_HTTP_POOL_H
#define BULKREG_HTTP_POOL_H

#include <stddef.h>

#include "status.h"

typedef struct hp_pool hp_pool;

/* Called on a pool thread once for every submitted item. */
typedef void (*hp_run_fn)(void *ctx, void *item);

/*
 * Starts threads threads that call run(ctx, item); at most capacity items
 * wait at once. BR_NOMEM / BR_IO (a thread could not be started).
 */
br_status hp_new(int threads, size_t capacity, hp_run_fn run, void *ctx, hp_pool **out) BR_MUST_USE;

/*
 * Queues item. BR_TOOBIG when capacity items wait already, BR_STOPPED
 * once hp_stop was called: the item is then not run (the caller answers).
 */
br_status hp_submit(hp_pool *p, void *item) BR_MUST_USE;

/*
 * Refuses new items, lets the threads run every queued item and joins
 * them. Blocks as long as the slowest handler. Accepts NULL; idempotent.
 */
void hp_stop(hp_pool *p);

/* hp_stop, then frees the pool. Accepts NULL. */
void hp_free(hp_pool *p);

#endif
