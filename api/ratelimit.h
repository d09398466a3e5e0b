/*
 * ratelimit.h - token buckets keyed by a short string (the API keys them by
 * organization id), for the README's BULKREG_RATE_LIMIT.
 *
 * A bucket holds up to `burst` tokens and refills at `per_sec` tokens a
 * second; a request takes one token or is refused. Buckets live in memory in
 * one process: N API replicas each allow the configured rate, so the fleet
 * allows up to N times it. A bucket that has refilled completely is the same
 * as no bucket, so idle buckets are dropped (on a periodic sweep of each
 * stripe, and whenever a stripe is full); the table never holds more than
 * max_keys buckets (past that the least recently used bucket is dropped).
 *
 * A ratelimit is thread-safe: the table is split into stripes, each with
 * its own mutex, so request threads rarely contend.
 */
#ifndef BULKREG_API_RATELIMIT_H
#define BULKREG_API_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>

#include "status.h"

#define RL_KEY_MAX 64

typedef struct ratelimit ratelimit;

/* What one request learnt from its bucket: the values of the RateLimit-* headers. */
struct rl_result {
	bool allowed;
	long limit;       /* RateLimit-Limit: the burst, the most requests at once */
	long remaining;   /* RateLimit-Remaining: whole tokens left after this request */
	long reset_s;     /* RateLimit-Reset: seconds until the bucket is full again */
	long retry_after; /* Retry-After when refused: seconds until one token (>= 1) */
};

/*
 * A table of buckets of burst tokens refilled at per_sec (> 0) a second,
 * holding at most max_keys buckets (rounded up to a multiple of the stripe
 * count). NULL when out of memory or the arguments are not positive. Free
 * with rl_free.
 */
ratelimit *rl_new(double per_sec, int burst, size_t max_keys);

/* Frees every bucket; accepts NULL. No rl_take may be running. */
void rl_free(ratelimit *rl);

/*
 * Takes one token from key's bucket at time now_ns (CLOCK_MONOTONIC
 * nanoseconds; see rl_now_ns) and fills *out. A new key starts with a full
 * bucket. BR_INVAL when key is empty or longer than RL_KEY_MAX, BR_NOMEM
 * when a new bucket cannot be allocated; *out is written only on BR_OK.
 */
br_status rl_take(ratelimit *rl, const char *key, long long now_ns,
                  struct rl_result *out) BR_MUST_USE;

/* The number of buckets currently held (for tests and metrics). */
size_t rl_count(ratelimit *rl);

/* CLOCK_MONOTONIC in nanoseconds. */
long long rl_now_ns(void);

#endif
