/*
 * http_pool.c - fixed pool of handler threads over a ring of items (see
 * http_pool.h).
 *
 * Owns its threads and the ring; the items are the caller's. One mutex
 * guards the ring and the stopping flag; idle threads wait on one
 * condition variable, and a submit wakes one of them.
 */
#include "http_pool.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "log.h"

struct hp_pool {
	hp_run_fn run;
	void *ctx;
	pthread_mutex_t mu;
	pthread_cond_t ready;
	void **ring;
	size_t cap, head, count;
	bool stopping;
	int nthreads; /* started */
	pthread_t *threads;
};

static void *hp_main(void *arg)
{
	hp_pool *p = arg;
	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (p->count == 0 && !p->stopping)
			pthread_cond_wait(&p->ready, &p->mu);
		if (p->count == 0)
			break; /* stopping, and nothing is left to run */
		void *item = p->ring[p->head];
		p->head = (p->head + 1) % p->cap;
		p->count--;
		pthread_mutex_unlock(&p->mu);
		p->run(p->ctx, item);
		pthread_mutex_lock(&p->mu);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

br_status hp_new(int threads, size_t capacity, hp_run_fn run, void *ctx, hp_pool **out)
{
	if (threads < 1 || capacity < 1)
		return BR_INVAL;
	hp_pool *p = calloc(1, sizeof(*p));
	if (!p)
		return BR_NOMEM;
	p->run = run;
	p->ctx = ctx;
	p->cap = capacity;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->ready, NULL);
	p->ring = calloc(capacity, sizeof(*p->ring));
	p->threads = calloc((size_t)threads, sizeof(*p->threads));
	if (!p->ring || !p->threads) {
		hp_free(p);
		return BR_NOMEM;
	}
	for (int i = 0; i < threads; i++) {
		if (pthread_create(&p->threads[i], NULL, hp_main, p) != 0) {
			LOG_ERROR("http: cannot start handler thread %d of %d", i + 1, threads);
			hp_free(p);
			return BR_IO;
		}
		p->nthreads++;
	}
	*out = p;
	return BR_OK;
}

br_status hp_submit(hp_pool *p, void *item)
{
	br_status st = BR_OK;
	pthread_mutex_lock(&p->mu);
	if (p->stopping) {
		st = BR_STOPPED;
	} else if (p->count == p->cap) {
		st = BR_TOOBIG;
	} else {
		p->ring[(p->head + p->count) % p->cap] = item;
		p->count++;
		pthread_cond_signal(&p->ready);
	}
	pthread_mutex_unlock(&p->mu);
	return st;
}

void hp_stop(hp_pool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	p->stopping = true;
	pthread_cond_broadcast(&p->ready);
	pthread_mutex_unlock(&p->mu);
	for (int i = 0; i < p->nthreads; i++)
		pthread_join(p->threads[i], NULL);
	p->nthreads = 0;
}

void hp_free(hp_pool *p)
{
	if (!p)
		return;
	hp_stop(p);
	pthread_cond_destroy(&p->ready);
	pthread_mutex_destroy(&p->mu);
	free(p->threads);
	free(p->ring);
	free(p);
}
