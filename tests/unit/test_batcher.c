/*
 * test_batcher.c - the worker's cross-thread group commit (worker/batcher.h)
 * driven from several threads with fake runners: no PostgreSQL, the
 * connection slots are plain pointers. Covers joining, the start rule (no
 * batch starts while one runs or while a member whose batch just ended has
 * neither joined nor idled), the cut at `max` deliveries, connection slots
 * (lowest free index, never one slot to two users) and a failing runner.
 *
 * Waits poll a condition with a deadline; a runner that would wait for
 * ever gives up after WAIT_MS and the test fails.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <criterion/criterion.h>

#include "batcher.h"
#include "proc.h"

#define WAIT_MS   10000
#define MAX_SLOTS 8
#define MAX_RUNS  4096
#define MAX_SHARE 8

/* One member's deliveries, as the fake runner sees them. */
struct fake {
	bool block; /* the runner waits for the gate before finishing */
	atomic_int runs;
	int run; /* the index of the run that carried it, under E.mu */
};

/* What the runner saw of one batch. */
struct run {
	int member;
	int slot;
	int size;
	int nshares;
	int members[MAX_SHARE];
};

struct env {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool gate;                  /* opens the blocked runners */
	bool timed_out;             /* a blocked runner gave up */
	br_status status[MAX_RUNS]; /* what run k returns */
	struct run runs[MAX_RUNS];
	int nruns;
	int running;
	int max_running;
	int slot_base[MAX_SLOTS]; /* the slots are &slot_base[i] */
	atomic_int slot_busy[MAX_SLOTS];
	atomic_int shared_slot; /* a slot was given to two users at once */
	atomic_long deliveries;
};

static struct env E;

static void env_init(void)
{
	memset(&E, 0, sizeof(E));
	pthread_mutex_init(&E.mu, NULL);
	proc_cond_init(&E.cv);
}

static void env_fini(void)
{
	pthread_cond_destroy(&E.cv);
	pthread_mutex_destroy(&E.mu);
}

static int slot_of(void *conn)
{
	return (int)((int *)conn - E.slot_base);
}

/* Marks slot busy; notes when it already was. */
static void slot_enter(int slot)
{
	if (atomic_exchange(&E.slot_busy[slot], 1) != 0)
		atomic_store(&E.shared_slot, 1);
}

static void slot_leave(int slot)
{
	atomic_store(&E.slot_busy[slot], 0);
}

static br_status fake_run(void *ctx, int member, void *conn, struct batcher_share *list, int size)
{
	if (ctx != &E)
		return BR_INVAL;
	int slot = slot_of(conn);
	slot_enter(slot);
	bool block = false;
	pthread_mutex_lock(&E.mu);
	int k = E.nruns < MAX_RUNS ? E.nruns++ : MAX_RUNS - 1;
	struct run *r = &E.runs[k];
	*r = (struct run){.member = member, .slot = slot, .size = size};
	for (struct batcher_share *s = list; s; s = s->next) {
		struct fake *f = s->arg;
		atomic_fetch_add(&f->runs, 1);
		f->run = k;
		atomic_fetch_add(&E.deliveries, s->n);
		block = block || f->block;
		if (r->nshares < MAX_SHARE)
			r->members[r->nshares] = s->member;
		r->nshares++;
	}
	E.running++;
	E.max_running = E.running > E.max_running ? E.running : E.max_running;
	pthread_cond_broadcast(&E.cv);
	struct timespec deadline = proc_deadline(WAIT_MS);
	while (block && !E.gate && !E.timed_out) {
		if (pthread_cond_timedwait(&E.cv, &E.mu, &deadline) != 0)
			E.timed_out = true;
	}
	E.running--;
	br_status st = E.status[k];
	pthread_mutex_unlock(&E.mu);
	slot_leave(slot);
	return st;
}

static batcher *new_batcher(int nmembers, int nconns, int max)
{
	void *slots[MAX_SLOTS];
	for (int i = 0; i < nconns; i++)
		slots[i] = &E.slot_base[i];
	batcher *b = batcher_new(nmembers, slots, nconns, max, fake_run, &E);
	cr_assert_not_null(b);
	return b;
}

/* A member thread joining once. */
struct joiner {
	pthread_t thread;
	batcher *b;
	struct fake fake;
	struct batcher_share sh;
};

static void *join_main(void *arg)
{
	struct joiner *j = arg;
	batcher_join(j->b, &j->sh);
	return NULL;
}

static void start_joiner(struct joiner *j, batcher *b, int member, int n, bool block)
{
	memset(j, 0, sizeof(*j));
	j->b = b;
	j->fake.block = block;
	j->sh = (struct batcher_share){.member = member, .arg = &j->fake, .n = n, .st = BR_INVAL};
	cr_assert_eq(pthread_create(&j->thread, NULL, join_main, j), 0);
}

static void finish_joiner(struct joiner *j)
{
	cr_assert_eq(pthread_join(j->thread, NULL), 0);
}

static int nruns(void)
{
	pthread_mutex_lock(&E.mu);
	int n = E.nruns;
	pthread_mutex_unlock(&E.mu);
	return n;
}

static int running(void)
{
	pthread_mutex_lock(&E.mu);
	int n = E.running;
	pthread_mutex_unlock(&E.mu);
	return n;
}

static void open_gate(void)
{
	pthread_mutex_lock(&E.mu);
	E.gate = true;
	pthread_cond_broadcast(&E.cv);
	pthread_mutex_unlock(&E.mu);
}

/* Polls until *what() == want, for at most WAIT_MS. */
static bool poll_until(int (*what)(void *), void *arg, int want)
{
	long long deadline = proc_now_ms() + WAIT_MS;
	while (what(arg) != want) {
		if (proc_now_ms() > deadline)
			return false;
		struct timespec ms = {0, 1000000};
		nanosleep(&ms, NULL);
	}
	return true;
}

static int forming_of(void *b)
{
	return batcher_forming(b);
}

static int running_of(void *unused)
{
	(void)unused;
	return running();
}

TestSuite(batcher, .init = env_init, .fini = env_fini);

Test(batcher, one_member_runs_its_share_on_slot_zero)
{
	batcher *b = new_batcher(1, 2, 64);
	struct fake f = {0};
	struct batcher_share sh = {.member = 0, .arg = &f, .n = 3, .st = BR_INVAL};
	batcher_join(b, &sh);
	cr_assert_eq(sh.st, BR_OK);
	cr_assert_eq(nruns(), 1);
	cr_assert_eq(E.runs[0].member, 0);
	cr_assert_eq(E.runs[0].slot, 0);
	cr_assert_eq(E.runs[0].size, 3);
	cr_assert_eq(E.runs[0].nshares, 1);
	cr_assert_eq(atomic_load(&f.runs), 1);
	/* Alone, its next share starts at once: joining clears its own mark. */
	batcher_join(b, &sh);
	cr_assert_eq(nruns(), 2);
	batcher_free(b);
}

/*
 * While a batch runs, the next gathers; when it ends, the next waits for
 * the member whose batch ended (it may have more to add) until it idles.
 * The runner's failure is every share's status.
 */
Test(batcher, next_batch_gathers_and_waits_for_the_acking_member)
{
	batcher *b = new_batcher(3, 3, 64);
	E.status[1] = BR_DB;
	struct joiner a, m1, m2;
	start_joiner(&a, b, 0, 1, true);
	cr_assert(poll_until(running_of, NULL, 1));
	start_joiner(&m1, b, 1, 1, false);
	cr_assert(poll_until(forming_of, b, 1));
	start_joiner(&m2, b, 2, 2, false);
	cr_assert(poll_until(forming_of, b, 3));
	cr_assert_eq(nruns(), 1, "a batch started while another ran");

	open_gate();
	finish_joiner(&a);
	cr_assert_eq(a.sh.st, BR_OK);
	/* Member 0 has neither joined again nor idled: nothing may start. */
	cr_assert_eq(nruns(), 1, "a batch started before the acking member idled");
	cr_assert_eq(batcher_forming(b), 3);

	batcher_idle(b, 0);
	finish_joiner(&m1);
	finish_joiner(&m2);
	cr_assert_eq(nruns(), 2);
	struct run *r = &E.runs[1];
	cr_assert_eq(r->nshares, 2);
	cr_assert_eq(r->members[0], 1, "shares run in arrival order");
	cr_assert_eq(r->members[1], 2);
	cr_assert_eq(r->size, 3);
	cr_assert_eq(r->slot, 0, "the first batch gave its slot back");
	cr_assert_eq(m1.sh.st, BR_DB);
	cr_assert_eq(m2.sh.st, BR_DB);
	cr_assert_eq(atomic_load(&m1.fake.runs), 1);
	cr_assert_eq(atomic_load(&m2.fake.runs), 1);
	cr_assert_not(E.timed_out);
	batcher_free(b);
}

/* A forming batch that reaches `max` starts at once, beside the running one. */
Test(batcher, full_batch_starts_while_another_runs)
{
	batcher *b = new_batcher(3, 3, 4);
	struct joiner a, m1, m2;
	start_joiner(&a, b, 0, 1, true);
	cr_assert(poll_until(running_of, NULL, 1));
	start_joiner(&m1, b, 1, 2, false);
	cr_assert(poll_until(forming_of, b, 2));
	cr_assert_eq(nruns(), 1, "a batch under max started while another ran");
	start_joiner(&m2, b, 2, 2, false);
	/* Both return while the first batch is still blocked. */
	finish_joiner(&m1);
	finish_joiner(&m2);
	cr_assert_eq(running(), 1);
	cr_assert_eq(nruns(), 2);
	cr_assert_eq(E.runs[1].size, 4);
	cr_assert_eq(E.runs[1].nshares, 2);
	cr_assert_eq(E.runs[1].slot, 1, "slot 0 is taken by the running batch");
	cr_assert_eq(E.max_running, 2);
	open_gate();
	finish_joiner(&a);
	cr_assert_eq(a.sh.st, BR_OK);
	cr_assert_not(E.timed_out);
	batcher_free(b);
}

Test(batcher, conn_take_gives_the_lowest_free_slot)
{
	batcher *b = new_batcher(1, 3, 64);
	int s0, s1, s2, again;
	cr_assert_eq(slot_of(batcher_conn_take(b, &s0)), 0);
	cr_assert_eq(slot_of(batcher_conn_take(b, &s1)), 1);
	cr_assert_eq(s0, 0);
	cr_assert_eq(s1, 1);
	batcher_conn_give(b, s0);
	cr_assert_eq(slot_of(batcher_conn_take(b, &again)), 0);
	cr_assert_eq(slot_of(batcher_conn_take(b, &s2)), 2);
	batcher_conn_give(b, again);
	batcher_conn_give(b, s1);
	batcher_conn_give(b, s2);
	/* A batch takes its slot the same way. */
	batcher_conn_take(b, &s0);
	struct fake f = {0};
	struct batcher_share sh = {.member = 0, .arg = &f, .n = 1};
	batcher_join(b, &sh);
	cr_assert_eq(E.runs[0].slot, 1);
	batcher_conn_give(b, s0);
	batcher_free(b);
}

/* Many members, many joins: every share runs once, no slot is ever shared. */
#define STRESS_MEMBERS 4
#define STRESS_JOINS   300

struct stresser {
	pthread_t thread;
	batcher *b;
	int member;
	struct fake fakes[STRESS_JOINS];
	br_status st[STRESS_JOINS];
	long sent;
};

static void *stress_main(void *arg)
{
	struct stresser *s = arg;
	for (int i = 0; i < STRESS_JOINS; i++) {
		struct batcher_share sh = {
		    .member = s->member, .arg = &s->fakes[i], .n = 1 + (i + s->member) % 5};
		s->sent += sh.n;
		batcher_join(s->b, &sh);
		s->st[i] = sh.st;
		if (i % 7 == s->member) {
			/* Work of its own between batches, on a slot of its own. */
			batcher_idle(s->b, s->member);
			int slot;
			int at = slot_of(batcher_conn_take(s->b, &slot));
			slot_enter(at);
			slot_leave(at);
			batcher_conn_give(s->b, slot);
		}
	}
	batcher_idle(s->b, s->member);
	return NULL;
}

Test(batcher, stress_every_share_runs_once_on_an_exclusive_slot, .timeout = 120)
{
	for (int k = 0; k < MAX_RUNS; k++)
		E.status[k] = k % 3 == 0 ? BR_DB_RETRY : BR_OK;
	batcher *b = new_batcher(STRESS_MEMBERS, STRESS_MEMBERS, 8);
	struct stresser *s = calloc(STRESS_MEMBERS, sizeof(*s));
	cr_assert_not_null(s);
	for (int m = 0; m < STRESS_MEMBERS; m++) {
		s[m].b = b;
		s[m].member = m;
		cr_assert_eq(pthread_create(&s[m].thread, NULL, stress_main, &s[m]), 0);
	}
	long sent = 0;
	for (int m = 0; m < STRESS_MEMBERS; m++) {
		cr_assert_eq(pthread_join(s[m].thread, NULL), 0);
		sent += s[m].sent;
	}
	cr_assert_not(atomic_load(&E.shared_slot), "a slot was given to two users at once");
	cr_assert_eq(atomic_load(&E.deliveries), sent);
	cr_assert_lt(E.nruns, MAX_RUNS);
	int shares = 0;
	for (int k = 0; k < E.nruns; k++)
		shares += E.runs[k].nshares;
	cr_assert_eq(shares, STRESS_MEMBERS * STRESS_JOINS);
	for (int m = 0; m < STRESS_MEMBERS; m++) {
		for (int i = 0; i < STRESS_JOINS; i++) {
			cr_assert_eq(atomic_load(&s[m].fakes[i].runs), 1);
			cr_assert_eq(s[m].st[i], E.status[s[m].fakes[i].run],
			             "a share did not get its batch's status");
		}
	}
	cr_assert_leq(E.max_running, STRESS_MEMBERS);
	free(s);
	batcher_free(b);
}
