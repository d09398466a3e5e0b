/*
 * ratelimit.c - striped, bounded table of token buckets (see ratelimit.h).
 *
 * Owns every bucket. RL_STRIPES stripes, each a chained hash table of
 * RL_SLOTS slots behind its own mutex; a key always maps to one stripe, so
 * a take locks exactly one mutex. Tokens are kept as a double and refilled
 * lazily from the time elapsed since the bucket was last touched, so no
 * timer thread is needed.
 */
#include "ratelimit.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RL_STRIPES  16
#define RL_SLOTS    256
#define RL_SWEEP_NS (60LL * 1000000000LL)
/* Rounding slack so that 0.9999999 tokens short of full reads as full. */
#define RL_EPSILON 1e-9

struct rl_bucket {
	struct rl_bucket *next;
	uint64_t hash;
	long long last_ns; /* when tokens was last brought up to date */
	double tokens;
	char key[RL_KEY_MAX + 1];
};

struct rl_stripe {
	pthread_mutex_t mu;
	struct rl_bucket *slots[RL_SLOTS];
	size_t count;
	long long swept_ns;
};

struct ratelimit {
	double per_sec;
	double burst;
	size_t max_per_stripe;
	struct rl_stripe stripes[RL_STRIPES];
};

long long rl_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* FNV-1a: keys are organization ids, not attacker-chosen, so no keyed hash is needed. */
static uint64_t rl_hash(const char *s, size_t len)
{
	uint64_t h = 1469598103934665603ULL;
	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 1099511628211ULL;
	}
	return h;
}

ratelimit *rl_new(double per_sec, int burst, size_t max_keys)
{
	if (!(per_sec > 0) || burst < 1 || max_keys < 1)
		return NULL;
	ratelimit *rl = calloc(1, sizeof(*rl));
	if (!rl)
		return NULL;
	rl->per_sec = per_sec;
	rl->burst = burst;
	rl->max_per_stripe = (max_keys + RL_STRIPES - 1) / RL_STRIPES;
	for (int i = 0; i < RL_STRIPES; i++)
		pthread_mutex_init(&rl->stripes[i].mu, NULL);
	return rl;
}

void rl_free(ratelimit *rl)
{
	if (!rl)
		return;
	for (int i = 0; i < RL_STRIPES; i++) {
		struct rl_stripe *st = &rl->stripes[i];
		for (int s = 0; s < RL_SLOTS; s++) {
			struct rl_bucket *b = st->slots[s];
			while (b) {
				struct rl_bucket *next = b->next;
				free(b);
				b = next;
			}
		}
		pthread_mutex_destroy(&st->mu);
	}
	free(rl);
}

/* Brings b's tokens up to now_ns. */
static void refill(const ratelimit *rl, struct rl_bucket *b, long long now_ns)
{
	if (now_ns > b->last_ns) {
		double add = (double)(now_ns - b->last_ns) / 1e9 * rl->per_sec;
		b->tokens = fmin(rl->burst, b->tokens + add);
		b->last_ns = now_ns;
	}
}

/* True when b would be full by now_ns: dropping it changes nothing. */
static bool is_idle(const ratelimit *rl, const struct rl_bucket *b, long long now_ns)
{
	double elapsed = now_ns > b->last_ns ? (double)(now_ns - b->last_ns) / 1e9 : 0;
	return b->tokens + elapsed * rl->per_sec >= rl->burst - RL_EPSILON;
}

/* Drops the stripe's idle buckets. Called with the stripe locked. */
static void sweep(const ratelimit *rl, struct rl_stripe *st, long long now_ns)
{
	for (int s = 0; s < RL_SLOTS; s++) {
		struct rl_bucket **link = &st->slots[s];
		while (*link) {
			struct rl_bucket *b = *link;
			if (is_idle(rl, b, now_ns)) {
				*link = b->next;
				free(b);
				st->count--;
			} else {
				link = &b->next;
			}
		}
	}
	st->swept_ns = now_ns;
}

/* Drops the least recently used bucket of a full stripe. Called locked. */
static void evict_lru(struct rl_stripe *st)
{
	struct rl_bucket **oldest = NULL;
	for (int s = 0; s < RL_SLOTS; s++) {
		for (struct rl_bucket **link = &st->slots[s]; *link; link = &(*link)->next) {
			if (!oldest || (*link)->last_ns < (*oldest)->last_ns)
				oldest = link;
		}
	}
	if (oldest) {
		struct rl_bucket *b = *oldest;
		*oldest = b->next;
		free(b);
		st->count--;
	}
}

/* Finds or makes key's bucket; NULL when out of memory. Called locked. */
static struct rl_bucket *lookup(const ratelimit *rl, struct rl_stripe *st, const char *key,
                                size_t len, uint64_t h, long long now_ns)
{
	struct rl_bucket **slot = &st->slots[(h / RL_STRIPES) % RL_SLOTS];
	for (struct rl_bucket *b = *slot; b; b = b->next) {
		if (b->hash == h && strcmp(b->key, key) == 0)
			return b;
	}
	if (st->count >= rl->max_per_stripe) {
		sweep(rl, st, now_ns);
		if (st->count >= rl->max_per_stripe)
			evict_lru(st);
	}
	struct rl_bucket *b = calloc(1, sizeof(*b));
	if (!b)
		return NULL;
	memcpy(b->key, key, len + 1);
	b->hash = h;
	b->tokens = rl->burst;
	b->last_ns = now_ns;
	b->next = *slot;
	*slot = b;
	st->count++;
	return b;
}

/* Whole seconds needed to gain `tokens` tokens, rounded up. */
static long seconds_for(const ratelimit *rl, double tokens)
{
	if (tokens <= RL_EPSILON)
		return 0;
	double s = ceil(tokens / rl->per_sec - RL_EPSILON);
	return s < 1 ? 1 : s > 86400.0 * 365 ? 86400L * 365 : (long)s;
}

br_status rl_take(ratelimit *rl, const char *key, long long now_ns, struct rl_result *out)
{
	size_t len = strlen(key);
	if (len == 0 || len > RL_KEY_MAX)
		return BR_INVAL;
	uint64_t h = rl_hash(key, len);
	struct rl_stripe *st = &rl->stripes[h % RL_STRIPES];
	pthread_mutex_lock(&st->mu);
	if (now_ns - st->swept_ns > RL_SWEEP_NS)
		sweep(rl, st, now_ns);
	struct rl_bucket *b = lookup(rl, st, key, len, h, now_ns);
	if (!b) {
		pthread_mutex_unlock(&st->mu);
		return BR_NOMEM;
	}
	refill(rl, b, now_ns);
	struct rl_result r = {.limit = (long)rl->burst};
	r.allowed = b->tokens >= 1.0 - RL_EPSILON;
	if (r.allowed)
		b->tokens = fmax(0.0, b->tokens - 1.0);
	r.remaining = (long)floor(b->tokens + RL_EPSILON);
	r.reset_s = seconds_for(rl, rl->burst - b->tokens);
	r.retry_after = r.allowed ? 0 : seconds_for(rl, 1.0 - b->tokens);
	if (!r.allowed && r.retry_after < 1)
		r.retry_after = 1;
	pthread_mutex_unlock(&st->mu);
	*out = r;
	return BR_OK;
}

size_t rl_count(ratelimit *rl)
{
	size_t n = 0;
	for (int i = 0; i < RL_STRIPES; i++) {
		pthread_mutex_lock(&rl->stripes[i].mu);
		n += rl->stripes[i].count;
		pthread_mutex_unlock(&rl->stripes[i].mu);
	}
	return n;
}
