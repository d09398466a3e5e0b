/*
 * publisher.c - pool of confirmed publishers (see publisher.h). The free
 * list is guarded by a mutex; a borrowed mq_conn belongs to its borrower.
 */
#include "publisher.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "proc.h"

/*
 * The broker's confirms normally take milliseconds; past this the request
 * stops waiting (the job is committed; the sweeper publishes it later), so
 * a hung broker costs a bulk POST at most this much.
 */
#define PUB_CONFIRM_TIMEOUT_MS 2000
/* After a failed connect, requests skip the broker this long (the sweeper publishes). */
#define PUB_BACKOFF_MS 1000

struct pub_node {
	mq_conn *conn;
	bool blocked; /* the broker blocked it, as last seen: counted in nblocked */
	struct pub_node *next;
};

struct pub_pool {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	char *url;
	int size, open;
	struct pub_node *free_list;
	int nblocked;            /* free nodes whose connection the broker blocked */
	long long down_until_ms; /* atomic: no connect attempts before this */
};

pub_pool *pub_pool_new(const char *url, int size)
{
	pub_pool *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->url = strdup(url);
	if (!p->url) {
		free(p);
		return NULL;
	}
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	p->size = size;
	return p;
}

void pub_pool_free(pub_pool *p)
{
	if (!p)
		return;
	while (p->free_list) {
		struct pub_node *n = p->free_list;
		p->free_list = n->next;
		mq_close(n->conn);
		free(n);
	}
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->cv);
	free(p->url);
	free(p);
}

static br_status pub_get(pub_pool *p, struct pub_node **out)
{
	struct pub_node *n = NULL;
	pthread_mutex_lock(&p->mu);
	while (!p->free_list && p->open >= p->size)
		pthread_cond_wait(&p->cv, &p->mu);
	if (p->free_list) {
		n = p->free_list;
		p->free_list = n->next;
		p->nblocked -= n->blocked;
		n->blocked = false;
	} else {
		p->open++;
	}
	pthread_mutex_unlock(&p->mu);
	if (!n) {
		n = calloc(1, sizeof(*n));
		br_status st = n ? mq_open(p->url, MQ_HEARTBEAT_S, true, &n->conn) : BR_NOMEM;
		if (st != BR_OK) {
			free(n);
			pthread_mutex_lock(&p->mu);
			p->open--;
			pthread_cond_signal(&p->cv);
			pthread_mutex_unlock(&p->mu);
			return st;
		}
	}
	*out = n;
	return BR_OK;
}

static void pub_put(pub_pool *p, struct pub_node *n)
{
	bool blocked = mq_is_blocked(n->conn);
	pthread_mutex_lock(&p->mu);
	n->blocked = blocked;
	p->nblocked += blocked;
	n->next = p->free_list;
	p->free_list = n;
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);
}

bool pub_blocked(pub_pool *p)
{
	pthread_mutex_lock(&p->mu);
	/*
	 * Only a connection the broker blocked hears connection.unblocked:
	 * read what they were sent (a recv each, no waiting).
	 */
	for (struct pub_node *n = p->free_list; n && p->nblocked > 0; n = n->next) {
		if (!n->blocked)
			continue;
		if (mq_poll(n->conn) != BR_OK || !mq_is_blocked(n->conn)) {
			n->blocked = false;
			p->nblocked--;
		}
	}
	bool blocked = p->nblocked > 0;
	pthread_mutex_unlock(&p->mu);
	return blocked;
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
