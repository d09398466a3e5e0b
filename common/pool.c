/*
 * pool.c - a bounded pool with a deadline (see pool.h).
 *
 * The free items are a stack: the most recently used item goes out first,
 * so an idle pool keeps using the same few (warm) connections. Owns the
 * stack and the free items. Thread-safety: under mu; opening, checking
 * and cleaning an item happen outside it.
 */
#include "pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "proc.h"

struct pool {
	pthread_mutex_t mu;
	pthread_cond_t cv; /* an item came back, or a slot freed */
	const struct pool_ops *ops;
	void *ctx;
	int size;     /* most items */
	int open;     /* items that exist (free or borrowed), or are being opened */
	int nfree;    /* free items, in items[0..nfree) */
	void **items; /* size entries */
};

pool *pool_new(int size, const struct pool_ops *ops, void *ctx)
{
	if (size < 1)
		return NULL;
	pool *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->items = calloc((size_t)size, sizeof(*p->items));
	if (!p->items) {
		free(p);
		return NULL;
	}
	pthread_mutex_init(&p->mu, NULL);
	proc_cond_init(&p->cv);
	p->ops = ops;
	p->ctx = ctx;
	p->size = size;
	return p;
}

void pool_free(pool *p)
{
	if (!p)
		return;
	while (p->nfree > 0)
		p->ops->close(p->ctx, p->items[--p->nfree]);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->cv);
	free(p->items);
	free(p);
}

br_status pool_get(pool *p, int wait_ms, void **out)
{
	struct timespec deadline = proc_deadline(wait_ms);
	void *item = NULL;
	bool create = false;
	pthread_mutex_lock(&p->mu);
	while (p->nfree == 0 && p->open >= p->size) {
		if (pthread_cond_timedwait(&p->cv, &p->mu, &deadline) == ETIMEDOUT)
			break;
	}
	if (p->nfree > 0) {
		item = p->items[--p->nfree];
		if (p->ops->taken)
			p->ops->taken(p->ctx, item);
	} else if (p->open < p->size) {
		p->open++;
		create = true;
	}
	pthread_mutex_unlock(&p->mu);
	if (!item && !create)
		return BR_TIMEOUT;
	if (create) {
		br_status st = p->ops->open(p->ctx, &item);
		if (st != BR_OK) {
			pthread_mutex_lock(&p->mu);
			p->open--;
			pthread_cond_signal(&p->cv);
			pthread_mutex_unlock(&p->mu);
			return st;
		}
	}
	if (p->ops->check) {
		br_status st = p->ops->check(p->ctx, item);
		if (st != BR_OK) {
			pool_put(p, item);
			return st;
		}
	}
	*out = item;
	return BR_OK;
}

void pool_put(pool *p, void *item)
{
	if (!item)
		return;
	if (p->ops->clean)
		p->ops->clean(p->ctx, item);
	pthread_mutex_lock(&p->mu);
	/* Never more than size exist, so there is always room. */
	p->items[p->nfree++] = item;
	if (p->ops->freed)
		p->ops->freed(p->ctx, item);
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);
}

void pool_with_free(pool *p, void (*fn)(void *ctx, void *const *items, int n), void *ctx)
{
	pthread_mutex_lock(&p->mu);
	fn(ctx, p->items, p->nfree);
	pthread_mutex_unlock(&p->mu);
}
