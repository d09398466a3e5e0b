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

#define PUB_CONFIRM_TIMEOUT_MS 10000
/* After a failed connect, requests skip the broker this long (the sweeper publishes). */
#define PUB_BACKOFF_MS 1000

struct pub_node {
	mq_conn *conn;
	struct pub_node *next;
};

struct pub_pool {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	char *url;
	int size, open;
	struct pub_node *free_list;
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
	pthread_mutex_lock(&p->mu);
	n->next = p->free_list;
	p->free_list = n;
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);
}

br_status pub_tasks(pub_pool *p, const struct mq_msg *msgs, size_t n)
{
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
	if (st != BR_OK)
		LOG_WARN("publishing %zu task(s) failed: %s (%s)", n, br_strerror(st),
		         mq_errmsg(node->conn));
	pub_put(p, node);
	return st;
}
