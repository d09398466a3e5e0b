/*
 * test_ratelimit.c - api/ratelimit.c's token buckets on a controlled
 * clock: burst then refusal, Retry-After and RateLimit-* arithmetic,
 * refill, independent keys, key validation, idle-bucket eviction under the
 * memory bound, and exact accounting when threads race on one key.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>

#include "ratelimit.h"

#define SEC 1000000000LL

static struct rl_result take(ratelimit *rl, const char *key, long long now)
{
	struct rl_result r;
	cr_assert_eq(rl_take(rl, key, now, &r), BR_OK);
	return r;
}

Test(ratelimit, burst_then_refusal_then_refill)
{
	ratelimit *rl = rl_new(5.0, 5, 100);
	cr_assert_not_null(rl);
	long long t = 1000 * SEC;
	for (long i = 0; i < 5; i++) {
		struct rl_result r = take(rl, "org", t);
		cr_assert(r.allowed);
		cr_assert_eq(r.limit, 5);
		cr_assert_eq(r.remaining, 4 - i);
		/* (i + 1) tokens short of full, 5 a second: under a second. */
		cr_assert_eq(r.reset_s, 1);
		cr_assert_eq(r.retry_after, 0);
	}
	struct rl_result r = take(rl, "org", t);
	cr_assert_not(r.allowed);
	cr_assert_eq(r.remaining, 0);
	cr_assert_eq(r.retry_after, 1);
	cr_assert_eq(r.reset_s, 1);
	/* 200 ms later exactly one token is back. */
	r = take(rl, "org", t + SEC / 5);
	cr_assert(r.allowed);
	cr_assert_eq(r.remaining, 0);
	r = take(rl, "org", t + SEC / 5);
	cr_assert_not(r.allowed);
	/* Long idle: full again, never more than the burst. */
	r = take(rl, "org", t + 3600 * SEC);
	cr_assert(r.allowed);
	cr_assert_eq(r.remaining, 4);
	rl_free(rl);
}

Test(ratelimit, slow_rates_round_seconds_up)
{
	/* 50 a minute, burst 10: a token every 1.2 s. */
	ratelimit *rl = rl_new(50.0 / 60.0, 10, 100);
	long long t = 5 * SEC;
	for (int i = 0; i < 10; i++)
		cr_assert(take(rl, "k", t).allowed);
	struct rl_result r = take(rl, "k", t);
	cr_assert_not(r.allowed);
	cr_assert_eq(r.retry_after, 2); /* 1.2 s rounds up */
	cr_assert_eq(r.reset_s, 12);    /* 10 tokens at 1.2 s */
	r = take(rl, "k", t + SEC);     /* 0.83 of a token: still refused */
	cr_assert_not(r.allowed);
	cr_assert_eq(r.retry_after, 1);
	cr_assert(take(rl, "k", t + 1200 * 1000000LL).allowed);
	rl_free(rl);
}

Test(ratelimit, keys_are_independent_and_validated)
{
	ratelimit *rl = rl_new(1.0, 2, 100);
	long long t = SEC;
	cr_assert(take(rl, "a", t).allowed);
	cr_assert(take(rl, "a", t).allowed);
	cr_assert_not(take(rl, "a", t).allowed);
	struct rl_result r = take(rl, "b", t);
	cr_assert(r.allowed);
	cr_assert_eq(r.remaining, 1);
	char long_key[RL_KEY_MAX + 2];
	memset(long_key, 'x', sizeof(long_key) - 1);
	long_key[sizeof(long_key) - 1] = '\0';
	cr_assert_eq(rl_take(rl, long_key, t, &r), BR_INVAL);
	cr_assert_eq(rl_take(rl, "", t, &r), BR_INVAL);
	long_key[RL_KEY_MAX] = '\0';
	cr_assert_eq(rl_take(rl, long_key, t, &r), BR_OK);
	cr_assert_null(rl_new(0, 1, 1));
	cr_assert_null(rl_new(1, 0, 1));
	rl_free(rl);
	rl_free(NULL);
}

Test(ratelimit, memory_is_bounded_and_idle_buckets_go)
{
	/* 16 stripes of at most 2 buckets. */
	ratelimit *rl = rl_new(1.0, 3, 32);
	long long t = SEC;
	char key[32];
	for (int i = 0; i < 1000; i++) {
		snprintf(key, sizeof(key), "org-%d", i);
		cr_assert(take(rl, key, t).allowed);
	}
	cr_assert_leq(rl_count(rl), 32);
	/* Busy buckets past the bound evict the least recently used: still bounded. */
	for (int i = 0; i < 1000; i++) {
		snprintf(key, sizeof(key), "busy-%d", i);
		take(rl, key, t + i);
	}
	cr_assert_leq(rl_count(rl), 32);
	rl_free(rl);
}

Test(ratelimit, idle_buckets_are_swept)
{
	ratelimit *rl = rl_new(1.0, 3, 1600); /* 100 a stripe: no eviction here */
	long long t = SEC;
	char key[32];
	for (int i = 0; i < 50; i++) {
		snprintf(key, sizeof(key), "early-%d", i);
		take(rl, key, t);
	}
	cr_assert_eq(rl_count(rl), 50);
	/* Two minutes on, every early bucket is full again: the stripes' sweeps drop them. */
	for (int i = 0; i < 200; i++) {
		snprintf(key, sizeof(key), "late-%d", i);
		take(rl, key, t + 120 * SEC);
	}
	cr_assert_eq(rl_count(rl), 200);
	rl_free(rl);
}

struct hammer {
	ratelimit *rl;
	long long now;
	int allowed;
};

static void *hammer_main(void *arg)
{
	struct hammer *h = arg;
	for (int i = 0; i < 1000; i++) {
		struct rl_result r;
		if (rl_take(h->rl, "shared", h->now, &r) == BR_OK && r.allowed)
			h->allowed++;
	}
	return NULL;
}

Test(ratelimit, racing_threads_share_one_bucket_exactly)
{
	ratelimit *rl = rl_new(1.0, 250, 100);
	struct hammer h[8];
	pthread_t th[8];
	for (int i = 0; i < 8; i++) {
		h[i] = (struct hammer){rl, 10 * SEC, 0};
		cr_assert_eq(pthread_create(&th[i], NULL, hammer_main, &h[i]), 0);
	}
	int total = 0;
	for (int i = 0; i < 8; i++) {
		pthread_join(th[i], NULL);
		total += h[i].allowed;
	}
	cr_assert_eq(total, 250, "%d of 8000 allowed at one instant with a burst of 250", total);
	rl_free(rl);
}
