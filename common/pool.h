/*
 * pool.h - a bounded pool of reusable items (PostgreSQL connections in
 * db.c, AMQP publishers in api/publisher.c), with one wait semantics:
 * borrowing waits up to a deadline for an item to come back, opens a new
 * one lazily while fewer than `size` exist, and readies it (a broken
 * connection reconnects) before handing it out.
 *
 * The pool owns its free items and closes them in pool_free; a borrowed
 * item belongs to the borrower until pool_put. Thread-safety: every
 * function may be called from any thread (one mutex per pool).
 */
#ifndef BULKREG_POOL_H
#define BULKREG_POOL_H

#include "status.h"

typedef struct pool pool;

/* What the pool does with its items; ctx is pool_new's. */
struct pool_ops {
	/* Opens a new item into *item; any status but BR_OK frees the slot. */
	br_status (*open)(void *ctx, void **item);
	/* Closes an item (the pool's free ones, in pool_free). */
	void (*close)(void *ctx, void *item);
	/* Readies a borrowed item, without the mutex; on failure it goes back. NULL: none. */
	br_status (*check)(void *ctx, void *item);
	/* Cleans an item being given back, without the mutex. NULL: none. */
	void (*clean)(void *ctx, void *item);
	/* Under the mutex, as an item joins / leaves the free items. NULL: none. */
	void (*freed)(void *ctx, void *item);
	void (*taken)(void *ctx, void *item);
};

/* A pool of at most size items; ops is borrowed for the pool's life. NULL on NOMEM. */
pool *pool_new(int size, const struct pool_ops *ops, void *ctx);

/* Closes the free items and frees the pool; accepts NULL. Borrowed items stay the borrowers'. */
void pool_free(pool *p);

/*
 * Borrows an item, waiting up to wait_ms for one to be free when `size`
 * are out. BR_TIMEOUT when none came back in time; otherwise the status
 * of open or check.
 */
br_status pool_get(pool *p, int wait_ms, void **out) BR_MUST_USE;

/* Gives a borrowed item back (clean first); accepts NULL. */
void pool_put(pool *p, void *item);

/*
 * Calls fn once under the pool's mutex with the free items, items[n - 1]
 * the most recently given back. fn must not call the pool.
 */
void pool_with_free(pool *p, void (*fn)(void *ctx, void *const *items, int n), void *ctx);

#endif
