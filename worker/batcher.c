/*
 * batcher.c - the cross-thread group commit (see batcher.h).
 *
 * Why one batch at a time: while a batch commits, the next gathers what
 * every channel received, so a process runs one large transaction instead
 * of one small one per thread, all queued on the same session and job
 * rows. With a prefetch big enough to fill batches, full batches (`max`)
 * still run side by side.
 *
 * Why the lowest free slot: one-at-a-time batches then all run on the same
 * PostgreSQL backend, whose caches stay warm. Spreading them over every
 * backend cost PostgreSQL about 40 % more CPU per task.
 *
 * Owns: its mutex, condition variable and arrays; not the connections
 * behind the slots, nor the shares. Thread-safety: everything under mu; a
 * share belongs to its batch from joining until `finished`.
 */
#include "batcher.h"

#include <pthread.h>
#include <stdlib.h>

struct batcher {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	unsigned long forming;       /* number of the batch taking shares */
	struct batcher_share *first; /* its shares, in arrival order */
	struct batcher_share **tail;
	int size;    /* its deliveries */
	int max;     /* a forming batch this big starts at once */
	int running; /* batches running */
	int acking;  /* members whose batch ended and that have not joined or idled since */
	int nmembers;
	bool *member_acking; /* per member, counted in acking */
	int nconns;
	void **conns; /* the slots; the pointers are the caller's */
	bool *in_use;
	batcher_run_fn run;
	void *ctx;
};

batcher *batcher_new(int nmembers, void *const *conns, int nconns, int max, batcher_run_fn run,
                     void *ctx)
{
	if (nmembers < 1 || nconns < 1)
		return NULL;
	batcher *b = calloc(1, sizeof(*b));
	if (!b)
		return NULL;
	pthread_mutex_init(&b->mu, NULL);
	pthread_cond_init(&b->cv, NULL);
	b->tail = &b->first;
	b->max = max;
	b->run = run;
	b->ctx = ctx;
	b->member_acking = calloc((size_t)nmembers, sizeof(*b->member_acking));
	b->conns = calloc((size_t)nconns, sizeof(*b->conns));
	b->in_use = calloc((size_t)nconns, sizeof(*b->in_use));
	if (!b->member_acking || !b->conns || !b->in_use) {
		batcher_free(b);
		return NULL;
	}
	b->nmembers = nmembers;
	b->nconns = nconns;
	for (int i = 0; i < nconns; i++)
		b->conns[i] = conns[i];
	return b;
}

void batcher_free(batcher *b)
{
	if (!b)
		return;
	free(b->member_acking);
	free(b->conns);
	free(b->in_use);
	pthread_cond_destroy(&b->cv);
	pthread_mutex_destroy(&b->mu);
	free(b);
}

/* Under b->mu: takes the free slot of lowest index (there is always one). */
static void *conn_take(batcher *b, int *slot)
{
	int i = 0;
	while (i < b->nconns - 1 && b->in_use[i])
		i++;
	b->in_use[i] = true;
	*slot = i;
	return b->conns[i];
}

void *batcher_conn_take(batcher *b, int *slot)
{
	pthread_mutex_lock(&b->mu);
	void *conn = conn_take(b, slot);
	pthread_mutex_unlock(&b->mu);
	return conn;
}

void batcher_conn_give(batcher *b, int slot)
{
	pthread_mutex_lock(&b->mu);
	b->in_use[slot] = false;
	pthread_mutex_unlock(&b->mu);
}

/* Under b->mu: member has joined or is about to block elsewhere. */
static void unmark(batcher *b, int member)
{
	if (b->member_acking[member]) {
		b->member_acking[member] = false;
		b->acking--;
		pthread_cond_broadcast(&b->cv);
	}
}

void batcher_idle(batcher *b, int member)
{
	pthread_mutex_lock(&b->mu);
	unmark(b, member);
	pthread_mutex_unlock(&b->mu);
}

int batcher_forming(batcher *b)
{
	pthread_mutex_lock(&b->mu);
	int size = b->size;
	pthread_mutex_unlock(&b->mu);
	return size;
}

void batcher_join(batcher *b, struct batcher_share *sh)
{
	pthread_mutex_lock(&b->mu);
	unmark(b, sh->member);
	sh->finished = false;
	sh->next = NULL;
	sh->batch = b->forming;
	*b->tail = sh;
	b->tail = &sh->next;
	b->size += sh->n;
	while (!sh->finished) {
		bool can_start = (b->running == 0 && b->acking == 0) || b->size >= b->max;
		if (sh->batch != b->forming || !can_start) {
			pthread_cond_wait(&b->cv, &b->mu);
			continue;
		}
		struct batcher_share *list = b->first;
		int size = b->size;
		b->forming++;
		b->first = NULL;
		b->tail = &b->first;
		b->size = 0;
		b->running++;
		int slot;
		void *conn = conn_take(b, &slot);
		pthread_mutex_unlock(&b->mu);
		br_status st = b->run(b->ctx, sh->member, conn, list, size);
		pthread_mutex_lock(&b->mu);
		b->in_use[slot] = false;
		b->running--;
		for (struct batcher_share *s = list; s; s = s->next) {
			s->st = st;
			s->finished = true;
			b->member_acking[s->member] = true;
			b->acking++;
		}
		pthread_cond_broadcast(&b->cv);
	}
	pthread_mutex_unlock(&b->mu);
}
