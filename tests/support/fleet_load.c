/*
 * fleet_load.c - the fault tests' load thread (see fleet.h): posts bulk jobs
 * through t_fleet_post while a fault happens. Its counters are atomics
 * written by the thread and read by the test; max_latency_ms and last_other
 * are read only after t_load_stop joined it.
 */
#include "fleet.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include <criterion/criterion.h>

#define LOAD_POST_MS        60000
#define LOAD_RETRY_PAUSE_MS 100

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static void *load_main(void *arg)
{
	struct t_load *l = arg;
	/* Bounded, so a dead API cannot keep the thread (and t_load_stop) forever. */
	int max_attempts = l->max_jobs * 10 + 100;
	for (int n = 0; n < max_attempts && !__atomic_load_n(&l->stop, __ATOMIC_SEQ_CST) &&
	                __atomic_load_n(&l->accepted, __ATOMIC_SEQ_CST) < l->max_jobs;
	     n++) {
		char prefix[64];
		snprintf(prefix, sizeof(prefix), "%s-j%d", l->prefix, n);
		long status = 0;
		long long latency = 0;
		bool ok = t_fleet_post(l->f, l->sid, prefix, l->per_job, LOAD_POST_MS, NULL,
		                       &status, &latency);
		if (latency > l->max_latency_ms)
			l->max_latency_ms = latency;
		if (ok) {
			__atomic_add_fetch(&l->accepted, 1, __ATOMIC_SEQ_CST);
		} else if (status == 503) {
			__atomic_add_fetch(&l->refused, 1, __ATOMIC_SEQ_CST);
		} else if (status == 0) {
			__atomic_add_fetch(&l->no_answer, 1, __ATOMIC_SEQ_CST);
		} else {
			l->last_other = status;
			__atomic_add_fetch(&l->other, 1, __ATOMIC_SEQ_CST);
		}
		if (l->pace_ms > 0 || !ok)
			sleep_ms(l->pace_ms > 0 ? l->pace_ms : LOAD_RETRY_PAUSE_MS);
	}
	return NULL;
}

void t_load_start(struct t_load *l, struct t_fleet *f, const char *prefix, int max_jobs,
                  int per_job, int pace_ms)
{
	memset(l, 0, sizeof(*l));
	l->f = f;
	snprintf(l->prefix, sizeof(l->prefix), "%s", prefix);
	l->max_jobs = max_jobs;
	l->per_job = per_job;
	l->pace_ms = pace_ms;
	t_fleet_session(f, l->sid);
	cr_assert_eq(pthread_create(&l->thread, NULL, load_main, l), 0, "pthread_create");
	l->running = true;
}

struct accepted_wait {
	struct t_load *l;
	int n;
};

static bool accepted_reached(void *ctx)
{
	struct accepted_wait *w = ctx;
	return __atomic_load_n(&w->l->accepted, __ATOMIC_SEQ_CST) >= w->n;
}

bool t_load_wait_accepted(struct t_load *l, int n, int timeout_ms)
{
	struct accepted_wait w = {l, n};
	return t_poll(accepted_reached, &w, timeout_ms);
}

void t_load_stop(struct t_load *l, bool wait_all, bool allow_outage)
{
	if (!l->running)
		return;
	if (!wait_all)
		__atomic_store_n(&l->stop, 1, __ATOMIC_SEQ_CST);
	pthread_join(l->thread, NULL);
	l->running = false;
	cr_assert_eq(l->other, 0, "%d bulk POST(s) answered unexpectedly (last: %ld)", l->other,
	             l->last_other);
	if (!allow_outage)
		cr_assert(l->refused == 0 && l->no_answer == 0,
		          "%d bulk POST(s) answered 503, %d got no answer", l->refused,
		          l->no_answer);
}
