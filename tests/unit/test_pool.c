/*
 * test_pool.c - the bounded pool with a deadline (common/pool.h) over fake
 * items: lazy opening up to size, the deadline, a waiter handed a returned
 * item, a failed open freeing its slot, a failed check returning the item,
 * the hooks, and closing.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "pool.h"
#include "proc.h"

struct item {
	int id;
};

struct env {
	int opened, closed, cleaned, freed, taken;
	bool fail_open, fail_check;
	int checked;
};

static br_status fake_open(void *ctx, void **out)
{
	struct env *e = ctx;
	if (e->fail_open)
		return BR_DB_CONN;
	struct item *it = calloc(1, sizeof(*it));
	if (!it)
		return BR_NOMEM;
	it->id = ++e->opened;
	*out = it;
	return BR_OK;
}

static void fake_close(void *ctx, void *item)
{
	struct env *e = ctx;
	e->closed++;
	free(item);
}

static br_status fake_check(void *ctx, void *item)
{
	(void)item;
	struct env *e = ctx;
	e->checked++;
	return e->fail_check ? BR_DB_CONN : BR_OK;
}

static void fake_clean(void *ctx, void *item)
{
	(void)item;
	((struct env *)ctx)->cleaned++;
}

static void fake_freed(void *ctx, void *item)
{
	(void)item;
	((struct env *)ctx)->freed++;
}

static void fake_taken(void *ctx, void *item)
{
	(void)item;
	((struct env *)ctx)->taken++;
}

static const struct pool_ops ops = {
    .open = fake_open,
    .close = fake_close,
    .check = fake_check,
    .clean = fake_clean,
    .freed = fake_freed,
    .taken = fake_taken,
};

static struct item *get(pool *p, int wait_ms, br_status want)
{
	void *item = NULL;
	cr_assert_eq(pool_get(p, wait_ms, &item), want);
	return item;
}

Test(pool, opens_lazily_up_to_size_then_times_out)
{
	struct env e = {0};
	pool *p = pool_new(2, &ops, &e);
	cr_assert_not_null(p);
	cr_assert_eq(e.opened, 0, "opened before anyone asked");
	struct item *a = get(p, 0, BR_OK);
	struct item *b = get(p, 0, BR_OK);
	cr_assert_eq(e.opened, 2);
	cr_assert_neq(a, b);
	long long t0 = proc_now_ms();
	cr_assert_null(get(p, 100, BR_TIMEOUT));
	cr_assert_geq(proc_now_ms() - t0, 90, "gave up before the deadline");
	cr_assert_eq(e.opened, 2, "opened past size");
	pool_put(p, a);
	pool_put(p, b);
	cr_assert_eq(e.cleaned, 2);
	cr_assert_eq(e.freed, 2);
	/* The most recently returned goes out first, without opening. */
	cr_assert_eq(get(p, 0, BR_OK), b);
	cr_assert_eq(e.taken, 1);
	cr_assert_eq(e.opened, 2);
	pool_put(p, b);
	pool_free(p);
	cr_assert_eq(e.closed, 2);
}

struct waiter {
	pool *p;
	void *item;
	br_status st;
};

static void *wait_main(void *arg)
{
	struct waiter *w = arg;
	w->st = pool_get(w->p, 10000, &w->item);
	return NULL;
}

Test(pool, a_waiter_gets_the_item_given_back)
{
	struct env e = {0};
	pool *p = pool_new(1, &ops, &e);
	struct item *a = get(p, 0, BR_OK);
	struct waiter w = {.p = p, .st = BR_INVAL};
	pthread_t t;
	cr_assert_eq(pthread_create(&t, NULL, wait_main, &w), 0);
	pool_put(p, a);
	cr_assert_eq(pthread_join(t, NULL), 0);
	cr_assert_eq(w.st, BR_OK);
	cr_assert_eq(w.item, a);
	cr_assert_eq(e.opened, 1);
	pool_put(p, w.item);
	pool_free(p);
	cr_assert_eq(e.closed, 1);
}

Test(pool, a_failed_open_frees_its_slot)
{
	struct env e = {.fail_open = true};
	pool *p = pool_new(1, &ops, &e);
	cr_assert_null(get(p, 0, BR_DB_CONN));
	e.fail_open = false;
	struct item *a = get(p, 0, BR_OK);
	cr_assert_eq(a->id, 1);
	pool_put(p, a);
	pool_free(p);
}

Test(pool, a_failed_check_gives_the_item_back)
{
	struct env e = {0};
	pool *p = pool_new(1, &ops, &e);
	struct item *a = get(p, 0, BR_OK);
	pool_put(p, a);
	e.fail_check = true;
	cr_assert_null(get(p, 0, BR_DB_CONN));
	cr_assert_eq(e.cleaned, 2, "the failed item was not cleaned on its way back");
	e.fail_check = false;
	/* Size 1: the failed item came back, or this would time out. */
	cr_assert_eq(get(p, 0, BR_OK), a);
	cr_assert_eq(e.opened, 1);
	pool_put(p, a);
	pool_free(p);
}

struct seen {
	int n;
	void *items[4];
};

static void see(void *ctx, void *const *items, int n)
{
	struct seen *s = ctx;
	s->n = n;
	for (int i = 0; i < n && i < 4; i++)
		s->items[i] = items[i];
}

Test(pool, with_free_sees_the_free_items_most_recent_last)
{
	struct env e = {0};
	pool *p = pool_new(3, &ops, &e);
	struct item *a = get(p, 0, BR_OK), *b = get(p, 0, BR_OK), *c = get(p, 0, BR_OK);
	pool_put(p, b);
	pool_put(p, a);
	struct seen s = {0};
	pool_with_free(p, see, &s);
	cr_assert_eq(s.n, 2);
	cr_assert_eq(s.items[0], b);
	cr_assert_eq(s.items[1], a);
	pool_put(p, c);
	pool_free(p);
	cr_assert_eq(e.closed, 3);
}

Test(pool, refuses_an_empty_size)
{
	struct env e = {0};
	cr_assert_null(pool_new(0, &ops, &e));
	pool_free(NULL);
}
