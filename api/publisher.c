/*
 * publisher.c - pool of confirmed publishers (see publisher.h), on
 * common/pool.c. The free nodes and nblocked are guarded by the pool's
 * mutex; a borrowed mq_conn belongs to its borrower.
 */
#include "publisher.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pool.h"
#include "proc.h"

/*
 * The broker's confirms normally take milliseconds; past this the request
 * stops waiting (the job is committed; the sweeper publishes it later), so
 * a hung broker costs a bulk POST at most this much.
 */
#define PUB_CONFIRM_TIMEOUT_MS 2000
/* After a failed connect, requests skip the broker this long (the sweeper publishes). */
#define PUB_BACKOFF_MS 1000

/* How long a request waits for a free publisher before leaving the job to the sweeper. */
#define PUB_WAIT_MS PUB_CONFIRM_TIMEOUT_MS

struct pub_node {
	mq_conn *conn;
	bool blocked; /* the broker blocked it, as last seen: counted in nblocked while free */
};

struct pub_pool {
	pool *pool; /* of struct pub_node */
	char *url;
	int nblocked; /* free nodes whose connection the broker blocked: under the pool's mutex */
	long long down_until_ms; /* atomic: no connect attempts before this */
};

static br_status node_open(void *ctx, void **item)
{
	pub_pool *p = ctx;
	struct pub_node *n = calloc(1, sizeof(*n));
	const struct mq_opts opts = {.heartbeat_s = MQ_HEARTBEAT_S,
	                             .rpc_timeout_ms = PUB_CONFIRM_TIMEOUT_MS,
	                             .lazy = true,
	                             .role = "publisher"};
	br_status st = n ? mq_open(p->url, &opts, &n->conn) : BR_NOMEM;
	if (st != BR_OK) {
		free(n);
		return st;
	}
	*item = n;
	return BR_OK;
}

static void node_close(void *ctx, void *item)
{
	(void)ctx;
	struct pub_node *n = item;
	mq_close(n->conn);
	free(n);
}

/* Under the pool's mutex: a node joins the free ones. */
static void node_freed(void *ctx, void *item)
{
	pub_pool *p = ctx;
	const struct pub_node *n = item;
	p->nblocked += n->blocked;
}

/* Under the pool's mutex: a node leaves the free ones. */
static void node_taken(void *ctx, void *item)
{
	pub_pool *p = ctx;
	struct pub_node *n = item;
	p->nblocked -= n->blocked;
	n->blocked = false;
}

static const struct pool_ops pub_pool_ops = {
    .open = node_open,
    .close = node_close,
    .freed = node_freed,
    .taken = node_taken,
};

pub_pool *pub_pool_new(const char *url, int size)
{
	pub_pool *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->url = strdup(url);
	p->pool = p->url ? pool_new(size, &pub_pool_ops, p) : NULL;
	if (!p->pool) {
		free(p->url);
		free(p);
		return NULL;
	}
	return p;
}

void pub_pool_free(pub_pool *p)
{
	if (!p)
		return;
	pool_free(p->pool);
	free(p->url);
	free(p);
}

static br_status pub_get(pub_pool *p, struct pub_node **out)
{
	void *item = NULL;
	br_status st = pool_get(p->pool, PUB_WAIT_MS, &item);
	if (st == BR_OK)
		*out = item;
	return st;
}

static void pub_put(pub_pool *p, struct pub_node *n)
{
	/* Still the borrower's: node_freed counts it once it is free. */
	n->blocked = mq_is_blocked(n->conn);
	pool_put(p->pool, n);
}

struct blocked_scan {
	pub_pool *p;
	bool blocked;
};

/* Under the pool's mutex: rereads the blocked free nodes, most recently used first. */
static void scan_blocked(void *ctx, void *const *items, int nfree)
{
	struct blocked_scan *scan = ctx;
	pub_pool *p = scan->p;
	/*
	 * Only a connection the broker blocked hears connection.unblocked:
	 * read what they were sent (a recv each, no waiting).
	 */
	for (int i = nfree - 1; i >= 0 && p->nblocked > 0; i--) {
		struct pub_node *n = items[i];
		if (!n->blocked)
			continue;
		if (mq_poll(n->conn) != BR_OK || !mq_is_blocked(n->conn)) {
			n->blocked = false;
			p->nblocked--;
		}
	}
	scan->blocked = p->nblocked > 0;
}

bool pub_blocked(pub_pool *p)
{
	struct blocked_scan scan = {.p = p};
	pool_with_free(p->pool, scan_blocked, &scan);
	return scan.blocked;
}

br_status pub_tasks(pub_pool *p, const struct mq_msg *msgs, size_t n)
{
	/*
	 * While the broker blocks publishers (a memory or disk alarm), a
	 * publish would only wait: skip it. The job is committed; the sweeper
	 * publishes it once the alarm clears.
	 */
	if (pub_blocked(p))
		return BR_MQ_BLOCKED;
	/*
	 * While the broker is known to be down, answer at once: the job is
	 * committed and the sweeper will publish it, so waiting on connect
	 * timeouts would only delay the client's 202.
	 */
	if (proc_now_ms() < __atomic_load_n(&p->down_until_ms, __ATOMIC_SEQ_CST))
		return BR_MQ_CONN;
	struct pub_node *node = NULL;
	br_status st = pub_get(p, &node);
	if (st != BR_OK)
		return st;
	for (int attempt = 0; attempt < 2; attempt++) {
		bool was_open = mq_is_open(node->conn);
		st = mq_ensure(node->conn);
		if (st != BR_OK) {
			__atomic_store_n(&p->down_until_ms, proc_now_ms() + PUB_BACKOFF_MS,
			                 __ATOMIC_SEQ_CST);
			break;
		}
		st = mq_publish(node->conn, MQ_EXCHANGE, MQ_ROUTE_TASKS, msgs, n,
		                PUB_CONFIRM_TIMEOUT_MS);
		/* Retry once only when a kept connection turned out to be dead. */
		if (st != BR_MQ_CONN || !was_open)
			break;
	}
	if (st != BR_OK && st != BR_MQ_BLOCKED)
		LOG_WARN("publishing %zu task(s) failed: %s (%s)", n, br_strerror(st),
		         mq_errmsg(node->conn));
	pub_put(p, node);
	return st;
}
