/*
 * backoff.h - capped exponential backoff with jitter, for reconnect loops.
 * A struct backoff belongs to one thread.
 */
#ifndef BULKREG_BACKOFF_H
#define BULKREG_BACKOFF_H

struct backoff {
	long base_ms;
	long cap_ms;
	long next_ms;
	unsigned seed;
};

/* Starts at base_ms, doubles up to cap_ms. */
void backoff_init(struct backoff *b, long base_ms, long cap_ms);

/* The next wait: next_ms scaled by a random factor in [0.5, 1.5), then doubled. */
long backoff_next(struct backoff *b);

/* After a success: back to base_ms. */
void backoff_reset(struct backoff *b);

#endif
