/*
 * backoff.c - see backoff.h. No shared state.
 */
#include "backoff.h"

#include <stdlib.h>
#include <time.h>

void backoff_init(struct backoff *b, long base_ms, long cap_ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	b->base_ms = base_ms;
	b->cap_ms = cap_ms;
	b->next_ms = base_ms;
	b->seed = (unsigned)ts.tv_nsec ^ (unsigned)(size_t)b;
}

long backoff_next(struct backoff *b)
{
	long wait = b->next_ms / 2 + (long)(rand_r(&b->seed) % (unsigned)(b->next_ms + 1));
	b->next_ms = b->next_ms * 2 > b->cap_ms ? b->cap_ms : b->next_ms * 2;
	return wait;
}

void backoff_reset(struct backoff *b)
{
	b->next_ms = b->base_ms;
}
