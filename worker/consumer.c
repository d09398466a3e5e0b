/*
 * consumer.c - the worker's consumer threads.
 *
 * Each thread opens one AMQP connection, its own, and one PostgreSQL
 * connection, which the process's threads share. It takes a delivery and
 * whatever else the broker already sent (up to the prefetch), and hands
 * them to the process's next batch (struct batcher): the threads of a
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
 * `ready`, which is atomic. struct batcher is shared, under its mutex; a
 * struct share belongs to its batch from joining until `finished`.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backoff.h"
#include "db.h"
#include "fault.h"
#include "log.h"
#include "mq.h"
#include "ops.h"
#include "proc.h"
#include "strbuf.h"
#include "taskmsg.h"
#include "worker.h"

#define CONSUMER_WAIT_MS    1000
#define CONSUMER_DB_RETRIES 20
/*
 * A worker that falls silent (frozen, or its host gone) holds its
 * prefetched deliveries until the broker gives up on its connection, after
 * one to two heartbeat intervals without a byte from it: 5 s means they
 * move to another worker within about 10 s. A live worker never falls
 * silent: mq.c's keeper beats for a thread that waits for PostgreSQL.
 */
#define CONSUMER_HEARTBEAT_S 5
/*
 * Tasks one transaction may claim: its deliveries plus the queued rest of
 * their jobs. 64 holds a whole 50-task job; a session's registrations are
 * serialized on its row anyway, so bigger batches share more commits.
 */
#define CONSUMER_CLAIM 64
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
	bool acking;     /* its batch ended, it has not received since: under batcher.mu */
	mq_conn *mq;
	struct backoff backoff;
};

/*
 * One thread's readable deliveries, handed to the process's next batch.
 * Whoever runs the batch writes state[] and st, then sets finished under
 * the batcher's mutex; the owner reads them only after that.
 */
struct share {
	struct consumer *owner; /* whose channel acks them */
	const struct mq_delivery *d;
	char (*ids)[TASKMSG_UUID_LEN + 1];
	unsigned char *state;
	int n;
	long long start_ms;
	unsigned long batch; /* the number of the batch it joined */
	bool finished;
	br_status st;
	struct share *next;
};

/*
 * The consumers of one process send their deliveries to PostgreSQL
 * together: a thread with deliveries adds them to the forming batch and
 * waits. The forming batch starts when no batch of the process runs and
 * every thread whose batch just ended has joined it or found nothing more
 * to receive (so it gathers what the whole process holds), or at once when
 * it holds CONSUMER_CLAIM deliveries; one of its threads runs it. So while
 * a batch commits, the next gathers what every channel received, and a
 * process runs one large transaction instead of one small one per thread,
 * all queued on the same session and job rows. With a prefetch big enough
 * to fill batches, full batches still run side by side.
 *
 * The threads' PostgreSQL connections are shared the same way: whatever
 * needs one takes the free connection of lowest index, so one-at-a-time
 * batches all run on the same backend, whose caches stay warm. Spreading
 * them over every backend cost PostgreSQL about 40 % more CPU per task.
 */
struct batcher {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	unsigned long forming; /* number of the batch taking shares */
	struct share *first;   /* its shares, in arrival order */
	struct share **tail;
	int size;    /* its deliveries */
	int running; /* batches running */
	int acking;  /* consumers whose batch ended and that have not received since */
	int nconns;
	db_conn **conns; /* one opened per consumer, shared by all; owned here */
	bool *in_use;
};

static const db_stmt stmt_process = {
    "consumer_process",
    "SELECT task_id, outcome, detail, job_ended FROM process_batch($1::uuid[], $2::int)", 2};
static const db_stmt stmt_fail = {"consumer_fail", "SELECT fail_task($1::uuid, 'internal_error')",
                                  1};

static bool stopping(const struct consumer *c)
{
	return __atomic_load_n(&c->w->stop, __ATOMIC_SEQ_CST) != 0;
}

/* Takes the free connection of lowest index (there is always one). */
static db_conn *conn_take(struct batcher *b, int *slot)
{
	int i = 0;
	while (i < b->nconns - 1 && b->in_use[i])
		i++;
	b->in_use[i] = true;
	*slot = i;
	return b->conns[i];
}

/* conn_take for a consumer that does not hold the batcher's mutex. */
static db_conn *conn_lock_take(struct batcher *b, int *slot)
{
	pthread_mutex_lock(&b->mu);
	db_conn *db = conn_take(b, slot);
	pthread_mutex_unlock(&b->mu);
	return db;
}

static void conn_give(struct batcher *b, int slot)
{
	pthread_mutex_lock(&b->mu);
	b->in_use[slot] = false;
	pthread_mutex_unlock(&b->mu);
}

/* Under b->mu: c has received since its batch ended, or is about to wait. */
static void batcher_unmark(struct batcher *b, struct consumer *c)
{
	if (c->acking) {
		c->acking = false;
		b->acking--;
		pthread_cond_broadcast(&b->cv);
	}
}

/*
 * Called before a consumer may block (waiting for the broker, reconnecting,
 * failing dead-lettered tasks): the forming batch stops waiting for it.
 */
static void batcher_idle(struct consumer *c)
{
	struct batcher *b = c->w->batcher;
	pthread_mutex_lock(&b->mu);
	batcher_unmark(b, c);
	pthread_mutex_unlock(&b->mu);
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
		db_conn *db = conn_lock_take(c->w->batcher, &slot);
		st = db_ensure(db);
		if (st != BR_OK)
			LOG_WARN("consumer %d: database unavailable: %s", c->index, db_errmsg(db));
		conn_give(c->w->batcher, slot);
		if (st != BR_OK)
			return st;
	}
	if (mq_is_open(c->mq) && c->subscribed)
		return BR_OK;
	batcher_idle(c); /* reconnecting may take a while */
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

/*
 * Runs stmt in its own transaction until it commits, retrying serialization
 * failures and deadlocks at once and lost connections after a backoff. A
 * commit whose outcome is unknown (the connection died) is simply run
 * again: processing is idempotent. Gives up when stopping (the deliveries
 * stay unacked and return to the queue), when the AMQP connection died
 * meanwhile (the broker has already redelivered them), or on any other
 * error.
 */
static br_status run_retrying(struct consumer *c, db_conn *db, const db_stmt *stmt,
                              const char *const *params, PGresult **res, bool give_up_without_mq)
{
	struct backoff b;
	backoff_init(&b, 50, 5000);
	for (int attempt = 0;; attempt++) {
		PGresult *r = NULL;
		br_status st = db_ensure(db);
		if (st == BR_OK)
			st = db_cmd(db, "BEGIN");
		if (st == BR_OK)
			st = db_run(db, stmt, params, res ? &r : NULL);
		if (st == BR_OK) {
			FAULT_POINT("worker_mid_transaction");
			st = db_cmd(db, "COMMIT");
		}
		if (st == BR_OK) {
			if (res)
				*res = r;
			return BR_OK;
		}
		PQclear(r);
		db_rollback(db);
		if (st == BR_DB || st == BR_NOMEM)
			return st;
		if (stopping(c) && st == BR_DB_CONN)
			return st;
		if (st == BR_DB_RETRY && attempt < CONSUMER_DB_RETRIES)
			continue;
		if (st == BR_DB_RETRY)
			return st;
		__atomic_store_n(&c->ready, 0, __ATOMIC_SEQ_CST);
		LOG_WARN("consumer %d: %s; retrying", c->index, db_errmsg(db));
		proc_sleep_ms(backoff_next(&b), NULL);
		if (give_up_without_mq && !mq_is_open(c->mq))
			return BR_MQ_CONN;
	}
}

static void count_outcome(const char *outcome, double seconds)
{
	char labels[64];
	snprintf(labels, sizeof(labels), "outcome=\"%s\"", outcome);
	met_counter_add(ops_tasks_processed, labels, 1);
	met_histogram_observe(ops_task_duration, seconds);
}

/* Fails dead-lettered tasks with internal_error, one by one, then acks. */
static void handle_dead(struct consumer *c, struct mq_delivery *d)
{
	char task_id[TASKMSG_UUID_LEN + 1];
	if (taskmsg_parse(d->body, d->len, task_id) != BR_OK) {
		LOG_ERROR("consumer %d: dropping unreadable dead-lettered message", c->index);
		mq_ack(c->mq, d->tag, false);
		return;
	}
	log_set_task_id(task_id);
	const char *params[] = {task_id};
	int slot;
	db_conn *db = conn_lock_take(c->w->batcher, &slot);
	br_status st = run_retrying(c, db, &stmt_fail, params, NULL, true);
	if (st == BR_OK) {
		LOG_WARN("task dead-lettered by the broker after its delivery limit (%d): "
		         "failed with internal_error",
		         MQ_DELIVERY_LIMIT);
		count_outcome("internal_error", 0);
		mq_ack(c->mq, d->tag, false);
	} else if (st == BR_DB || st == BR_DB_RETRY || st == BR_NOMEM) {
		/* Back to bulkreg.tasks.dead, to be failed on a later try. */
		LOG_ERROR("failing dead-lettered task: %s", db_errmsg(db));
		mq_nack(c->mq, d->tag, false, true);
	}
	conn_give(c->w->batcher, slot);
	log_set_task_id(NULL);
}

/* What became of one delivery of a batch. */
enum delivery_state {
	D_PENDING,  /* not run yet */
	D_PARKED,   /* its job or session is held by another transaction: offer it again later */
	D_DONE,     /* committed or nothing to do: ack */
	D_REQUEUE,  /* raised: nack with requeue, towards x-delivery-limit */
	D_REJECTED, /* unreadable: already nacked to the dead-letter queue */
};

/* One delivery of a running batch, pointing into its share. */
struct item {
	const char *id;
	unsigned char *state;
	long delivery_count;
};

static int item_cmp(const void *a, const void *b)
{
	return strcmp(((const struct item *)a)->id, ((const struct item *)b)->id);
}

/*
 * The items of it[0..n), sorted by id, whose id is tid: *first and the
 * count (a task delivered twice has two). bsearch lands on any of them.
 */
static int items_with_id(const struct item *it, int n, const char *tid, int *first)
{
	struct item key = {.id = tid};
	const struct item *hit = bsearch(&key, it, (size_t)n, sizeof(*it), item_cmp);
	if (!hit)
		return 0;
	int lo = (int)(hit - it), hi = lo + 1;
	while (lo > 0 && strcmp(it[lo - 1].id, tid) == 0)
		lo--;
	while (hi < n && strcmp(it[hi].id, tid) == 0)
		hi++;
	*first = lo;
	return hi - lo;
}

/*
 * Runs the items (sorted by id) as one process_batch() call and one
 * transaction, claiming up to `claim` tasks in all, then records each
 * item's new state. Rows for tasks the batch claimed beyond its deliveries
 * are only counted.
 */
static br_status run_pass(struct consumer *c, db_conn *db, const struct item *it, int n, int claim,
                          long long start_ms, bool give_up_without_mq)
{
	strbuf arr;
	sb_init(&arr, (size_t)n * 40 + 8);
	bool ok = sb_appends(&arr, "{") == BR_OK;
	for (int i = 0; i < n && ok; i++)
		ok = sb_appendf(&arr, "%s%s", i ? "," : "", it[i].id) == BR_OK;
	if (!ok || sb_appends(&arr, "}") != BR_OK) {
		sb_free(&arr);
		return BR_NOMEM;
	}
	char claim_s[16];
	snprintf(claim_s, sizeof(claim_s), "%d", claim);
	const char *params[] = {sb_str(&arr), claim_s};
	PGresult *res = NULL;
	br_status st = run_retrying(c, db, &stmt_process, params, &res, give_up_without_mq);
	sb_free(&arr);
	if (st != BR_OK)
		return st;
	double seconds = (double)(proc_now_ms() - start_ms) / 1000.0;
	/* A delivery the result does not mention has nothing left to do. */
	for (int i = 0; i < n; i++)
		*it[i].state = D_DONE;
	for (int row = 0; row < PQntuples(res); row++) {
		const char *tid = PQgetvalue(res, row, 0);
		const char *outcome = PQgetvalue(res, row, 1);
		enum delivery_state to = D_DONE;
		if (strcmp(outcome, "busy") == 0)
			to = D_PARKED;
		else if (strcmp(outcome, "error") == 0)
			to = D_REQUEUE;
		else
			count_outcome(outcome, seconds);
		int first = 0, same = items_with_id(it, n, tid, &first);
		for (int i = first; i < first + same; i++) {
			if (to == D_REQUEUE)
				LOG_WARN("task %s failed to process (delivery %ld): %s", tid,
				         it[i].delivery_count + 1, db_val(res, row, 2));
			*it[i].state = (unsigned char)to;
		}
		if (strcmp(db_val(res, row, 3) ? db_val(res, row, 3) : "f", "t") == 0) {
			log_set_task_id(tid);
			LOG_INFO("job ended");
			log_set_task_id(NULL);
		}
	}
	PQclear(res);
	return BR_OK;
}

/*
 * Runs one batch on db: one pass that registers the deliveries' tasks and
 * claims more of their jobs (sql/functions/batches.sql). A delivery whose job
 * or session another transaction holds comes back D_PARKED: its thread
 * keeps it and offers it again in a later batch, so nothing here ever
 * waits for a lock.
 */
static br_status run_batch(struct consumer *c, db_conn *db, struct share *list, int size)
{
	struct item *it = calloc((size_t)size, sizeof(*it));
	if (!it)
		return BR_NOMEM;
	int n = 0;
	long long start_ms = list->start_ms;
	bool own = true; /* every delivery came through c's channel */
	for (struct share *s = list; s; s = s->next) {
		for (int i = 0; i < s->n && n < size; i++) {
			if (s->state[i] == D_PENDING)
				it[n++] =
				    (struct item){s->ids[i], &s->state[i], s->d[i].delivery_count};
		}
		start_ms = s->start_ms < start_ms ? s->start_ms : start_ms;
		own = own && s->owner == c;
	}
	/* Result rows find their deliveries by id. */
	qsort(it, (size_t)n, sizeof(*it), item_cmp);
	/*
	 * Without c's AMQP connection the broker has already redelivered c's
	 * deliveries, so a batch of c's alone may give up; one carrying other
	 * threads' deliveries keeps trying for them.
	 */
	int claim = n > CONSUMER_CLAIM ? n : CONSUMER_CLAIM;
	br_status st = run_pass(c, db, it, n, claim, start_ms, own);
	free(it);
	return st;
}

/*
 * Adds sh (live deliveries) to the forming batch and returns once a batch
 * carrying it has run, having run it on this thread's connection if it
 * started here. The forming batch starts when no batch runs and every
 * consumer whose batch just ended has joined it or found nothing more to
 * receive, so that it gathers what the whole process holds; or at once when
 * it is full.
 */
static void batcher_join(struct consumer *c, struct share *sh, int live)
{
	struct batcher *b = c->w->batcher;
	pthread_mutex_lock(&b->mu);
	batcher_unmark(b, c);
	sh->batch = b->forming;
	*b->tail = sh;
	b->tail = &sh->next;
	b->size += live;
	while (!sh->finished) {
		bool can_start = (b->running == 0 && b->acking == 0) || b->size >= CONSUMER_CLAIM;
		if (sh->batch != b->forming || !can_start) {
			pthread_cond_wait(&b->cv, &b->mu);
			continue;
		}
		struct share *list = b->first;
		int size = b->size;
		b->forming++;
		b->first = NULL;
		b->tail = &b->first;
		b->size = 0;
		b->running++;
		int slot;
		db_conn *db = conn_take(b, &slot);
		pthread_mutex_unlock(&b->mu);
		br_status st = run_batch(c, db, list, size);
		if (st == BR_DB || st == BR_DB_RETRY || st == BR_NOMEM)
			LOG_ERROR("consumer %d: batch of %d deliveries failed: %s", c->index, size,
			          st == BR_NOMEM ? "out of memory" : db_errmsg(db));
		pthread_mutex_lock(&b->mu);
		b->in_use[slot] = false;
		b->running--;
		for (struct share *s = list; s; s = s->next) {
			s->st = st;
			s->finished = true;
			s->owner->acking = true;
			b->acking++;
		}
		pthread_cond_broadcast(&b->cv);
	}
	pthread_mutex_unlock(&b->mu);
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
	char(*ids)[TASKMSG_UUID_LEN + 1] = calloc((size_t)n, sizeof(*ids));
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
			state[i] = D_REJECTED;
			continue;
		}
		state[i] = D_PENDING;
		live++;
	}
	if (live == 0)
		goto out;
	struct share sh = {
	    .owner = c, .d = d, .ids = ids, .state = state, .n = n, .start_ms = start_ms};
	batcher_join(c, &sh, live);
	if (sh.st != BR_OK) {
		/* Unresolved deliveries go back; committed ones are found done later. */
		if (sh.st == BR_DB || sh.st == BR_DB_RETRY || sh.st == BR_NOMEM) {
			for (int i = 0; i < n; i++) {
				if (state[i] != D_REJECTED)
					mq_nack(c->mq, d[i].tag, false, true);
			}
		}
		goto out;
	}
	FAULT_POINT("worker_after_commit");
	bool all_done = true;
	for (int i = 0; i < n; i++)
		all_done = all_done && state[i] == D_DONE;
	if (all_done && may_ack_multiple) {
		mq_ack(c->mq, d[n - 1].tag, true);
		goto out;
	}
	for (int i = 0; i < n; i++) {
		if (state[i] == D_DONE) {
			mq_ack(c->mq, d[i].tag, false);
		} else if (state[i] == D_REQUEUE) {
			mq_nack(c->mq, d[i].tag, false, true);
		} else if (state[i] == D_PARKED) {
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

/* As handle_tasks, for a batch that may hold dead-lettered deliveries. */
static int handle_batch(struct consumer *c, struct mq_delivery *d, int n, long long start_ms)
{
	/* Dead-lettered ones first, separately; then the live ones together. */
	int live = 0;
	for (int i = 0; i < n; i++) {
		if (d[i].dead) {
			batcher_idle(c); /* failing it may wait for the database */
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
	 * only safe when no dead-lettered delivery of the batch is unresolved
	 * (nor a parked one, which handle_tasks checks).
	 */
	return live ? handle_tasks(c, d, live, start_ms, live == n) : 0;
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
	 * Parked deliveries stay at the front of batch[], unacked, and join
	 * every later batch; with nothing new they are offered again after a
	 * backoff. Their job or session is held by a transaction that either
	 * commits soon or is ended by idle_in_transaction_session_timeout.
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
			batcher_idle(c);
			__atomic_store_n(&c->ready, 0, __ATOMIC_SEQ_CST);
			proc_sleep_ms(backoff_next(&c->backoff), &c->w->stop);
			continue;
		}
		backoff_reset(&c->backoff);
		__atomic_store_n(&c->ready, 1, __ATOMIC_SEQ_CST);
		int n = parked;
		br_status st = BR_TIMEOUT;
		if (n < max) {
			/* What already arrived joins the next batch; otherwise it need not wait for
			 * us. */
			st = mq_next(c->mq, 0, &batch[n]);
			if (st != BR_OK) {
				batcher_idle(c);
				long long wait =
				    parked ? offer_at - proc_now_ms() : CONSUMER_WAIT_MS;
				wait = wait < 0                  ? 0
				       : wait > CONSUMER_WAIT_MS ? CONSUMER_WAIT_MS
				                                 : wait;
				st = mq_next(c->mq, (int)wait, &batch[n]);
			}
		}
		if (st == BR_OK) {
			n++;
		} else if (!parked || proc_now_ms() < offer_at) {
			if (parked == max) /* no room to receive: wait for the offer */
				proc_sleep_ms(offer_at - proc_now_ms(), &c->w->stop);
			continue;
		}
		long long start = proc_now_ms();
		/* Whatever the broker already sent joins the batch, without waiting. */
		while (n < max && mq_next(c->mq, 0, &batch[n]) == BR_OK)
			n++;
		parked = mq_is_open(c->mq) ? handle_batch(c, batch, n, start) : 0;
		for (int i = parked; i < n; i++)
			mq_delivery_free(&batch[i]);
		if (parked) {
			FAULT_POINT("worker_parked");
			offer_at = proc_now_ms() + backoff_next(&park);
		} else {
			backoff_reset(&park);
		}
	}
	for (int i = 0; i < parked; i++)
		mq_delivery_free(&batch[i]);
	batcher_idle(c);
	free(batch);
	return NULL;
}

static void batcher_free(struct batcher *b)
{
	if (!b)
		return;
	for (int i = 0; i < b->nconns; i++)
		db_close(b->conns[i]);
	free(b->conns);
	free(b->in_use);
	pthread_cond_destroy(&b->cv);
	pthread_mutex_destroy(&b->mu);
	free(b);
}

static struct batcher *batcher_new(int nconns)
{
	struct batcher *b = calloc(1, sizeof(*b));
	if (!b)
		return NULL;
	pthread_mutex_init(&b->mu, NULL);
	pthread_cond_init(&b->cv, NULL);
	b->tail = &b->first;
	b->conns = calloc((size_t)nconns, sizeof(*b->conns));
	b->in_use = calloc((size_t)nconns, sizeof(*b->in_use));
	if (!b->conns || !b->in_use) {
		batcher_free(b);
		return NULL;
	}
	b->nconns = nconns;
	return b;
}

br_status consumers_start(struct worker *w)
{
	int n = w->cfg->worker_concurrency;
	w->batcher = batcher_new(n);
	w->consumers = calloc((size_t)n, sizeof(*w->consumers));
	if (!w->batcher || !w->consumers)
		return BR_NOMEM;
	w->nconsumers = n;
	for (int i = 0; i < n; i++) {
		struct consumer *c = &w->consumers[i];
		c->w = w;
		c->index = i;
		backoff_init(&c->backoff, 100, 10000);
		static const struct db_opts opts = WORKER_DB_OPTS;
		br_status st = db_open(w->cfg->database_url, &opts, true, &w->batcher->conns[i]);
		if (st == BR_OK)
			st = mq_open(w->cfg->amqp_url, CONSUMER_HEARTBEAT_S, true, &c->mq);
		if (st != BR_OK)
			return st;
	}
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
	free(w->consumers);
	w->consumers = NULL;
	w->nconsumers = 0;
	/* Only now: any thread may have been using any PostgreSQL connection. */
	batcher_free(w->batcher);
	w->batcher = NULL;
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
