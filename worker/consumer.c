/*
 * consumer.c - the worker's consumer threads.
 *
 * Each thread opens one AMQP connection, its own, and one PostgreSQL
 * connection, which the process's threads share. It takes a delivery and
 * whatever else the broker already sent (up to the prefetch), and hands
 * them to the process's next batch (batcher.h): the threads of a
 * process run their deliveries together, one batch at a time, so while a
 * batch commits the next gathers what every channel received, and the
 * thread that starts it runs it.
 *
 * A batch is ONE statement, process_batch() (sql/functions/batches.sql), in
 * one transaction with one commit. It registers each job's tasks in index
 * order from the job's lowest queued one, under the job's row lock, and
 * takes more of the job while its claim allows, so a job's tasks are
 * registered together; their own messages later find them done. A
 * delivery whose job or session another transaction holds comes back
 * busy: its thread parks it (unacked, at the front of its receive array)
 * and offers it again with its next batch, so no batch ever waits for a
 * lock. Only after the commit does each thread ack its own deliveries on
 * its own channel, with `multiple` when every task went through. A crash
 * anywhere before the ack leaves the messages unacked: the broker
 * redelivers them and process_batch skips tasks already terminal.
 *
 * Dead-lettered messages (bulkreg.tasks.dead) are the broker giving up on a
 * task after x-delivery-limit deliveries: the task is failed with
 * internal_error and counted like any other, so its job still ends.
 *
 * Thread-safety: a struct consumer is touched only by its thread, except
 * `ready`, which is atomic. The batcher is shared, under its mutex; a
 * struct batch_part belongs to its batch from joining until batcher_join returns.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backoff.h"
#include "batch.h"
#include "batcher.h"
#include "db.h"
#include "fault.h"
#include "log.h"
#include "mq.h"
#include "ops.h"
#include "proc.h"
#include "taskmsg.h"
#include "worker.h"

#define CONSUMER_WAIT_MS 1000
/*
 * A worker that falls silent (frozen, or its host gone) holds its
 * prefetched deliveries until the broker gives up on its connection, after
 * one to two heartbeat intervals without a byte from it: MQ_HEARTBEAT_S (4 s)
 * means they move to another worker within about 8 s. A live worker never
 * falls silent: mq.c's keeper beats for a thread that waits for PostgreSQL.
 * The same heartbeats tell a consumer that its node froze.
 */
#define CONSUMER_HEARTBEAT_S MQ_HEARTBEAT_S
/*
 * A parked delivery (its job or session held by another transaction) is
 * offered again after a backoff from CONSUMER_PARK_MIN_MS doubling to
 * CONSUMER_PARK_MAX_MS, or sooner with the next batch.
 */
#define CONSUMER_PARK_MIN_MS 20
#define CONSUMER_PARK_MAX_MS 1000

struct consumer {
	struct worker *w;
	int index;
	pthread_t thread;
	bool started;
	int ready;       /* atomic */
	bool subscribed; /* consuming on the current AMQP connection */
	mq_conn *mq;
	struct backoff backoff;
	struct batch_runner run; /* what its batches need of it (batch.h) */
};

static bool stopping(const struct consumer *c)
{
	return __atomic_load_n(&c->w->stop, __ATOMIC_SEQ_CST) != 0;
}

/*
 * Connects what is down; subscribes after every new AMQP connection. The
 * database is checked while the consumer is not ready (at start, after a
 * failure); a batch finds a lost connection itself.
 */
static br_status consumer_connect(struct consumer *c)
{
	br_status st = BR_OK;
	if (!__atomic_load_n(&c->ready, __ATOMIC_SEQ_CST)) {
		int slot;
		db_conn *db = batcher_conn_take(c->w->batcher, &slot);
		st = db_ensure(db);
		if (st != BR_OK)
			LOG_WARN("consumer %d: database unavailable: %s", c->index, db_errmsg(db));
		batcher_conn_give(c->w->batcher, slot);
		if (st != BR_OK)
			return st;
	}
	if (mq_is_open(c->mq) && c->subscribed)
		return BR_OK;
	batcher_idle(c->w->batcher, c->index); /* reconnecting may take a while */
	int prefetch = c->w->cfg->worker_prefetch;
	c->subscribed = false;
	st = mq_ensure(c->mq);
	if (st == BR_OK)
		st = mq_consume(c->mq, MQ_QUEUE_TASKS, prefetch);
	if (st == BR_OK)
		st = mq_consume(c->mq, MQ_QUEUE_DEAD, prefetch);
	c->subscribed = st == BR_OK;
	if (st != BR_OK)
		LOG_WARN("consumer %d: broker unavailable: %s", c->index, mq_errmsg(c->mq));
	else
		LOG_INFO("consumer %d: consuming %s", c->index, MQ_QUEUE_TASKS);
	return st;
}

/* Fails dead-lettered tasks with internal_error, one by one, then acks. */
static void handle_dead(struct consumer *c, struct mq_delivery *d)
{
	char task_id[UUID_LEN + 1];
	if (taskmsg_parse(d->body, d->len, task_id) != BR_OK) {
		LOG_ERROR("consumer %d: dropping unreadable dead-lettered message", c->index);
		mq_ack(c->mq, d->tag, false);
		return;
	}
	log_set_task_id(task_id);
	int slot;
	db_conn *db = batcher_conn_take(c->w->batcher, &slot);
	br_status st = batch_fail_task(&c->run, db, task_id);
	if (st == BR_OK) {
		mq_ack(c->mq, d->tag, false);
	} else if (st == BR_DB || st == BR_DB_RETRY || st == BR_NOMEM) {
		/* Back to bulkreg.tasks.dead, to be failed on a later try. */
		LOG_ERROR("failing dead-lettered task: %s", db_errmsg(db));
		mq_nack(c->mq, d->tag, false, true);
	}
	batcher_conn_give(c->w->batcher, slot);
	log_set_task_id(NULL);
}

/*
 * The batcher's runner: runs a batch on the thread of consumer `member`,
 * on the PostgreSQL connection of the slot it was given.
 */
static br_status consumer_run(void *ctx, int member, void *conn, struct batcher_share *list,
                              int size)
{
	struct worker *w = ctx;
	return batch_run(&w->consumers[member].run, conn, list, size);
}

/*
 * Processes the batch's readable deliveries, in the process's next batch,
 * then acks them on this thread's channel. Returns how many were parked:
 * they are moved to the front of d, unacked, for the caller to keep.
 */
static int handle_tasks(struct consumer *c, struct mq_delivery *d, int n, long long start_ms,
                        bool may_ack_multiple)
{
	int parked = 0;
	char(*ids)[UUID_LEN + 1] = calloc((size_t)n, sizeof(*ids));
	unsigned char *state = calloc((size_t)n, 1);
	if (!ids || !state)
		goto out; /* unacked: redelivered after the connection drops */
	int live = 0;
	for (int i = 0; i < n; i++) {
		if (taskmsg_parse(d[i].body, d[i].len, ids[i]) != BR_OK) {
			/* Unreadable: straight to the dead-letter queue. */
			LOG_ERROR("consumer %d: rejecting unreadable message %s", c->index,
			          d[i].message_id);
			mq_nack(c->mq, d[i].tag, false, false);
			state[i] = BATCH_REJECTED;
			continue;
		}
		state[i] = BATCH_PENDING;
		live++;
	}
	if (live == 0)
		goto out;
	struct batch_part part = {.d = d, .ids = ids, .state = state, .n = n, .start_ms = start_ms};
	struct batcher_share sh = {.member = c->index, .arg = &part, .n = live};
	batcher_join(c->w->batcher, &sh);
	if (sh.st != BR_OK) {
		/* Unresolved deliveries go back; committed ones are found done later. */
		if (sh.st == BR_DB || sh.st == BR_DB_RETRY || sh.st == BR_NOMEM) {
			for (int i = 0; i < n; i++) {
				if (state[i] != BATCH_REJECTED)
					mq_nack(c->mq, d[i].tag, false, true);
			}
		}
		goto out;
	}
	FAULT_POINT("worker_after_commit");
	bool all_done = true;
	for (int i = 0; i < n; i++)
		all_done = all_done && state[i] == BATCH_DONE;
	if (all_done && may_ack_multiple) {
		mq_ack(c->mq, d[n - 1].tag, true);
		goto out;
	}
	for (int i = 0; i < n; i++) {
		if (state[i] == BATCH_DONE) {
			mq_ack(c->mq, d[i].tag, false);
		} else if (state[i] == BATCH_REQUEUE) {
			mq_nack(c->mq, d[i].tag, false, true);
		} else if (state[i] == BATCH_PARKED) {
			struct mq_delivery keep = d[i];
			d[i] = d[parked];
			d[parked++] = keep;
		}
	}
out:
	free(state);
	free(ids);
	return parked;
}

/*
 * As handle_tasks, for a batch that may hold dead-lettered deliveries.
 * held_before: deliveries received before d[0] are still unacked (parked).
 */
static int handle_batch(struct consumer *c, struct mq_delivery *d, int n, long long start_ms,
                        bool held_before)
{
	/* Dead-lettered ones first, separately; then the live ones together. */
	int live = 0;
	for (int i = 0; i < n; i++) {
		if (d[i].dead) {
			/* Failing it may wait for the database. */
			batcher_idle(c->w->batcher, c->index);
			handle_dead(c, &d[i]);
			mq_delivery_free(&d[i]);
			continue;
		}
		struct mq_delivery keep = d[i];
		d[i].body = NULL;
		d[live++] = keep;
	}
	/*
	 * One ack with `multiple` covers every outstanding tag up to the last:
	 * only safe when no dead-lettered delivery of the batch is unresolved,
	 * no parked one waits before it, nor one in it (handle_tasks checks).
	 */
	return live ? handle_tasks(c, d, live, start_ms, live == n && !held_before) : 0;
}

/*
 * Receives into batch[parked..max): what already arrived, else waits up to
 * CONSUMER_WAIT_MS, or only until offer_at while deliveries are parked.
 * Returns the new count, or -1 when nothing arrived and no parked delivery
 * is due.
 */
static int receive(struct consumer *c, struct mq_delivery *batch, int parked, int max,
                   long long offer_at)
{
	int n = parked;
	br_status st = BR_TIMEOUT;
	if (n < max) {
		/* What already arrived joins the next batch; otherwise it need not wait for us. */
		st = mq_next(c->mq, 0, &batch[n]);
		if (st != BR_OK) {
			batcher_idle(c->w->batcher, c->index);
			long long wait = parked ? offer_at - proc_now_ms() : CONSUMER_WAIT_MS;
			wait = wait < 0 ? 0 : wait > CONSUMER_WAIT_MS ? CONSUMER_WAIT_MS : wait;
			st = mq_next(c->mq, (int)wait, &batch[n]);
		}
	}
	if (st != BR_OK) {
		if (parked && proc_now_ms() >= offer_at)
			return n;
		if (parked == max) /* no room to receive: wait for the offer */
			proc_sleep_ms(offer_at - proc_now_ms(), &c->w->stop);
		return -1;
	}
	n++;
	/* Whatever the broker already sent joins the batch, without waiting. */
	while (n < max && mq_next(c->mq, 0, &batch[n]) == BR_OK)
		n++;
	return n;
}

static void *consumer_main(void *arg)
{
	struct consumer *c = arg;
	int max = c->w->cfg->worker_prefetch;
	struct mq_delivery *batch = calloc((size_t)max, sizeof(*batch));
	if (!batch) {
		LOG_ERROR("consumer %d: out of memory", c->index);
		return NULL;
	}
	/*
	 * Parked deliveries stay at the front of batch[], unacked. They are
	 * offered again when due (a backoff from CONSUMER_PARK_MIN_MS), not
	 * with every batch: their job or session is held by a transaction that
	 * either commits soon or is ended by idle_in_transaction_session_timeout,
	 * and offering them sooner only costs the database a batch that finds
	 * it still held.
	 */
	int parked = 0;
	long long offer_at = 0;
	struct backoff park;
	backoff_init(&park, CONSUMER_PARK_MIN_MS, CONSUMER_PARK_MAX_MS);
	while (!stopping(c)) {
		if (parked && !mq_is_open(c->mq)) {
			/* The connection that received them is gone: the broker has them back. */
			for (int i = 0; i < parked; i++)
				mq_delivery_free(&batch[i]);
			parked = 0;
		}
		if (consumer_connect(c) != BR_OK) {
			batcher_idle(c->w->batcher, c->index);
			__atomic_store_n(&c->ready, 0, __ATOMIC_SEQ_CST);
			proc_sleep_ms(backoff_next(&c->backoff), &c->w->stop);
			continue;
		}
		backoff_reset(&c->backoff);
		__atomic_store_n(&c->ready, 1, __ATOMIC_SEQ_CST);
		int n = receive(c, batch, parked, max, offer_at);
		if (n < 0)
			continue;
		long long start = proc_now_ms();
		int from = start >= offer_at ? 0 : parked; /* the parked ones only when due */
		int kept = 0;
		if (mq_is_open(c->mq))
			kept = from + handle_batch(c, batch + from, n - from, start, from > 0);
		for (int i = kept; i < n; i++)
			mq_delivery_free(&batch[i]);
		if (kept && (from == 0 || parked == 0)) {
			FAULT_POINT("worker_parked");
			offer_at = proc_now_ms() + backoff_next(&park);
		} else if (!kept) {
			backoff_reset(&park);
		}
		parked = kept;
	}
	for (int i = 0; i < parked; i++)
		mq_delivery_free(&batch[i]);
	batcher_idle(c->w->batcher, c->index);
	free(batch);
	return NULL;
}

/* The consumer's AMQP connection, named "consumer N" on the broker. */
static br_status consumer_open_mq(struct consumer *c)
{
	char role[32];
	snprintf(role, sizeof(role), "consumer %d", c->index);
	const struct mq_opts opts = {
	    .heartbeat_s = CONSUMER_HEARTBEAT_S, .lazy = true, .role = role};
	return mq_open(c->w->cfg->amqp_url, &opts, &c->mq);
}

br_status consumers_start(struct worker *w)
{
	int n = w->cfg->worker_concurrency;
	w->dbs = calloc((size_t)n, sizeof(*w->dbs));
	w->consumers = calloc((size_t)n, sizeof(*w->consumers));
	if (!w->dbs || !w->consumers)
		return BR_NOMEM;
	w->nconsumers = n;
	for (int i = 0; i < n; i++) {
		struct consumer *c = &w->consumers[i];
		c->w = w;
		c->index = i;
		backoff_init(&c->backoff, 100, 10000);
		struct db_opts opts = WORKER_DB_OPTS;
		opts.join_url_base = w->cfg->join_url_base;
		br_status st = db_open(w->cfg->database_url, &opts, true, &w->dbs[i]);
		if (st == BR_OK)
			st = consumer_open_mq(c);
		if (st != BR_OK)
			return st;
		c->run = (struct batch_runner){
		    .index = i, .ready = &c->ready, .stop = &w->stop, .mq = c->mq};
	}
	void **slots = calloc((size_t)n, sizeof(*slots));
	for (int i = 0; slots && i < n; i++)
		slots[i] = w->dbs[i];
	w->batcher = slots ? batcher_new(n, slots, n, BATCH_CLAIM, consumer_run, w) : NULL;
	free(slots);
	if (!w->batcher)
		return BR_NOMEM;
	for (int i = 0; i < n; i++) {
		struct consumer *c = &w->consumers[i];
		if (pthread_create(&c->thread, NULL, consumer_main, c) != 0)
			return BR_NOMEM;
		c->started = true;
	}
	return BR_OK;
}

void consumers_join(struct worker *w)
{
	for (int i = 0; i < w->nconsumers; i++) {
		if (w->consumers[i].started)
			pthread_join(w->consumers[i].thread, NULL);
	}
	/* Closing returns anything still unacked to the queue. */
	for (int i = 0; i < w->nconsumers; i++)
		mq_close(w->consumers[i].mq);
	/* Only now: any thread may have been using any PostgreSQL connection. */
	batcher_free(w->batcher);
	w->batcher = NULL;
	for (int i = 0; w->dbs && i < w->nconsumers; i++)
		db_close(w->dbs[i]);
	free(w->dbs);
	w->dbs = NULL;
	free(w->consumers);
	w->consumers = NULL;
	w->nconsumers = 0;
}

bool consumers_ready(void *arg)
{
	struct worker *w = arg;
	for (int i = 0; i < w->nconsumers; i++) {
		if (!__atomic_load_n(&w->consumers[i].ready, __ATOMIC_SEQ_CST))
			return false;
	}
	return w->nconsumers > 0;
}
