/*
 * mq_keeper.c - the process's AMQP heartbeat keeper (see mq.h).
 *
 * rabbitmq-c services heartbeats only inside its own calls; a consumer
 * thread waiting for PostgreSQL would otherwise fall silent and the broker
 * would close its connection, returning its deliveries mid-batch.
 *
 * Owns the keeper thread and its list of connections (not the
 * connections). Thread-safety: see below.
 */
#include "mq_internal.h"

#include <pthread.h>
#include <string.h>

#include "log.h"
#include "proc.h"

/* How often the keeper looks at the connections it keeps alive. */
#define MQ_KEEPER_TICK_MS 500

/*
 * ---- the keeper ----
 *
 * One thread per process, running while any connection with heartbeats
 * is open: every MQ_KEEPER_TICK_MS it sends a heartbeat frame on each
 * connection that made no library call for half its heartbeat interval
 * and whose owner is not inside a call right now (trylock: an owner inside
 * a call is either waiting in rabbitmq-c, which sends heartbeats itself,
 * or about to return). RabbitMQ declares a connection dead after about
 * two intervals without a byte from it, so a busy owner never gets there.
 * keep_mu guards the list; a connection's own mutex is only ever tried
 * under it, so the two cannot deadlock.
 */
static pthread_mutex_t keep_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t keep_cv;
static pthread_once_t keep_once = PTHREAD_ONCE_INIT;
static mq_conn *keep_list;
static bool keep_running;

static void mq_keep_beat(mq_conn *c, long long now)
{
	if (pthread_mutex_trylock(&c->mu) != 0)
		return;
	if (c->st && now - c->last_call_ms >= c->heartbeat_s * 500LL) {
		amqp_frame_t hb;
		memset(&hb, 0, sizeof(hb));
		hb.frame_type = AMQP_FRAME_HEARTBEAT;
		hb.channel = 0;
		int rc = amqp_send_frame(c->st, &hb);
		if (rc != AMQP_STATUS_OK)
			(void)mq_fail(c, BR_MQ_CONN, "heartbeat", amqp_error_string2(rc));
		c->last_call_ms = now;
	}
	pthread_mutex_unlock(&c->mu);
}

static void *mq_keeper(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&keep_mu);
	while (keep_list) {
		long long now = mq_now_ms();
		for (mq_conn *c = keep_list; c; c = c->keep_next)
			mq_keep_beat(c, now);
		struct timespec deadline = proc_deadline(MQ_KEEPER_TICK_MS);
		pthread_cond_timedwait(&keep_cv, &keep_mu, &deadline);
	}
	keep_running = false;
	pthread_mutex_unlock(&keep_mu);
	return NULL;
}

static void mq_keep_init(void)
{
	proc_cond_init(&keep_cv);
}

void mq_keep(mq_conn *c)
{
	pthread_once(&keep_once, mq_keep_init);
	pthread_mutex_lock(&keep_mu);
	c->keep_next = keep_list;
	keep_list = c;
	if (!keep_running) {
		pthread_t t;
		pthread_attr_t attr;
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		keep_running = pthread_create(&t, &attr, mq_keeper, NULL) == 0;
		pthread_attr_destroy(&attr);
		if (!keep_running)
			LOG_WARN("no AMQP keeper thread: idle connections rely on their owners");
	}
	pthread_mutex_unlock(&keep_mu);
}

void mq_unkeep(mq_conn *c)
{
	pthread_mutex_lock(&keep_mu);
	for (mq_conn **p = &keep_list; *p; p = &(*p)->keep_next) {
		if (*p == c) {
			*p = c->keep_next;
			break;
		}
	}
	pthread_cond_signal(&keep_cv);
	pthread_mutex_unlock(&keep_mu);
}
