/*
 * consumer.c - the worker's consumer threads.
 *
 * Each thread owns one AMQP connection and one PostgreSQL connection. It
 * takes a delivery, gathers whatever else the broker already sent (up to
 * the prefetch), and runs the whole batch as ONE statement, process_batch()
 * (sql/003_batches.sql), in one transaction with one commit. That statement
 * also claims the other queued tasks of the batch's jobs, so a job's tasks
 * are registered together instead of in small batches queued on the same
 * session row; their own messages later find them done. Only after the
 * commit does it ack, with `multiple` when every task went through. A crash
 * anywhere before the ack leaves the messages unacked: the broker
 * redelivers them and process_batch skips tasks already terminal.
 *
 * The consumers of one process are siblings. RabbitMQ spreads a job's
 * messages over every consumer, so while one consumer's batch registers a
 * job, its siblings receive that job's other messages. A sibling does not
 * open a transaction of its own to find those tasks busy and wait for them:
 * it waits in memory for the batch, and acks the deliveries whose tasks
 * that batch locked and committed terminal. Anything else goes to the
 * database as before.
 *
 * Dead-lettered messages (bulkreg.tasks.dead) are the broker giving up on a
 * task after x-delivery-limit deliveries: the task is failed with
 * internal_error and counted like any other, so its job still ends.
 *
 * Thread-safety: a struct consumer is touched only by its thread, except
 * `ready`, which is atomic. struct siblings is shared: see its comment.
 */
#include <errno.h>
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
 * Tasks one transaction may claim: its deliveries plus the queued rest of
 * their jobs. 64 holds a whole 50-task job; a session's registrations are
 * serialized on its row anyway, so bigger batches share more commits.
 */
#define CONSUMER_CLAIM 64

/* Longest a sibling waits for another consumer's batch before asking the database. */
#define SIBLING_WAIT_MS (2 * WORKER_STATEMENT_TIMEOUT_MS)

/*
 * One slot per consumer thread: the jobs of the batch it runs, and the
 * tasks that batch locked and committed terminal. gen is odd while a batch
 * runs. A slot's owner writes jobs while gen is even and done while it is
 * odd, and bumps gen under mu; others read a slot only under mu, done only
 * once gen moved to the even value after the one they waited on.
 */
struct slot {
	unsigned long gen;
	int njobs;
	int ndone;
	char (*jobs)[TASKMSG_UUID_LEN + 1]; /* up to the prefetch */
	char (*done)[TASKMSG_UUID_LEN + 1]; /* up to max_done */
};

struct siblings {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int n;
	int max_jobs;
	int max_done;
	struct slot *slots;
};

struct consumer {
	struct worker *w;
	int index;
	pthread_t thread;
	bool started;
	int ready;       /* atomic */
	bool subscribed; /* consuming on the current AMQP connection */
	db_conn *db;
	mq_conn *mq;
	struct backoff backoff;
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

/* Connects what is down; subscribes after every new AMQP connection. */
static br_status consumer_connect(struct consumer *c)
{
	br_status st = db_ensure(c->db);
	if (st != BR_OK) {
		LOG_WARN("consumer %d: database unavailable: %s", c->index, db_errmsg(c->db));
		return st;
	}
	if (mq_is_open(c->mq) && c->subscribed)
		return BR_OK;
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
static br_status run_retrying(struct consumer *c, const db_stmt *stmt, const char *const *params,
                              PGresult **res)
{
	struct backoff b;
	backoff_init(&b, 50, 5000);
	for (int attempt = 0;; attempt++) {
		PGresult *r = NULL;
		br_status st = db_ensure(c->db);
		if (st == BR_OK)
			st = db_cmd(c->db, "BEGIN");
		if (st == BR_OK)
			st = db_run(c->db, stmt, params, res ? &r : NULL);
		if (st == BR_OK) {
			FAULT_POINT("worker_mid_transaction");
			st = db_cmd(c->db, "COMMIT");
		}
		if (st == BR_OK) {
			if (res)
				*res = r;
			return BR_OK;
		}
		PQclear(r);
		db_rollback(c->db);
		if (st == BR_DB || st == BR_NOMEM)
			return st;
		if (stopping(c) && st == BR_DB_CONN)
			return st;
		if (st == BR_DB_RETRY && attempt < CONSUMER_DB_RETRIES)
			continue;
		if (st == BR_DB_RETRY)
			return st;
		__atomic_store_n(&c->ready, 0, __ATOMIC_SEQ_CST);
		LOG_WARN("consumer %d: %s; retrying", c->index, db_errmsg(c->db));
		proc_sleep_ms(backoff_next(&b), NULL);
		if (!mq_is_open(c->mq))
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
	br_status st = run_retrying(c, &stmt_fail, params, NULL);
	if (st == BR_OK) {
		LOG_WARN("task dead-lettered by the broker after its delivery limit (%d): "
		         "failed with internal_error",
		         MQ_DELIVERY_LIMIT);
		count_outcome("internal_error", 0);
		mq_ack(c->mq, d->tag, false);
	} else if (st == BR_DB || st == BR_DB_RETRY || st == BR_NOMEM) {
		/* Back to bulkreg.tasks.dead, to be failed on a later try. */
		LOG_ERROR("failing dead-lettered task: %s", db_errmsg(c->db));
		mq_nack(c->mq, d->tag, false, true);
	}
	log_set_task_id(NULL);
}

/* What became of one delivery of a batch. */
enum delivery_state {
	D_PENDING,  /* not run yet */
	D_SIBLING,  /* its job is in a sibling's running batch: wait for that */
	D_BUSY,     /* its task is held by another transaction: wait for it */
	D_DONE,     /* committed or nothing to do: ack */
	D_REQUEUE,  /* raised: nack with requeue, towards x-delivery-limit */
	D_REJECTED, /* unreadable: already nacked to the dead-letter queue */
};

/*
 * Runs the deliveries in state `from` as one process_batch() call and one
 * transaction (claiming up to `claim` tasks in all; 0 waits for busy tasks
 * instead), then records each delivery's new state. Rows for tasks the
 * batch claimed beyond its deliveries are only counted, and, with `own`,
 * the tasks it registered (locked, and committed terminal) go to own->done.
 */
static br_status run_pass(struct consumer *c, const struct mq_delivery *d,
                          char ids[][TASKMSG_UUID_LEN + 1], unsigned char *state, int n,
                          enum delivery_state from, int claim, long long start_ms, struct slot *own)
{
	int max_done = c->w->siblings->max_done;
	strbuf arr;
	sb_init(&arr, (size_t)n * 40 + 8);
	bool ok = sb_appends(&arr, "{") == BR_OK;
	int count = 0;
	for (int i = 0; i < n && ok; i++) {
		if (state[i] == from)
			ok = sb_appendf(&arr, "%s%s", count++ ? "," : "", ids[i]) == BR_OK;
	}
	if (!ok || sb_appends(&arr, "}") != BR_OK) {
		sb_free(&arr);
		return BR_NOMEM;
	}
	char claim_s[16];
	snprintf(claim_s, sizeof(claim_s), "%d", claim);
	const char *params[] = {sb_str(&arr), claim_s};
	PGresult *res = NULL;
	br_status st = run_retrying(c, &stmt_process, params, &res);
	sb_free(&arr);
	if (st != BR_OK)
		return st;
	double seconds = (double)(proc_now_ms() - start_ms) / 1000.0;
	/* A delivery the result does not mention has nothing left to do. */
	for (int i = 0; i < n; i++) {
		if (state[i] == from)
			state[i] = D_DONE;
	}
	for (int row = 0; row < PQntuples(res); row++) {
		const char *tid = PQgetvalue(res, row, 0);
		const char *outcome = PQgetvalue(res, row, 1);
		enum delivery_state to = D_DONE;
		if (strcmp(outcome, "busy") == 0)
			to = from == D_BUSY ? D_REQUEUE : D_BUSY;
		else if (strcmp(outcome, "error") == 0)
			to = D_REQUEUE;
		else
			count_outcome(outcome, seconds);
		bool registered =
		    strcmp(outcome, "succeeded") == 0 || strcmp(outcome, "failed") == 0;
		if (own && registered && own->ndone < max_done && strlen(tid) == TASKMSG_UUID_LEN)
			memcpy(own->done[own->ndone++], tid, TASKMSG_UUID_LEN + 1);
		for (int i = 0; i < n; i++) {
			if (state[i] != D_REJECTED && strcmp(ids[i], tid) == 0) {
				if (to == D_REQUEUE && strcmp(outcome, "error") == 0)
					LOG_WARN("task %s failed to process (delivery %ld): %s",
					         tid, d[i].delivery_count + 1, db_val(res, row, 2));
				state[i] = (unsigned char)to;
			}
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

static bool has_id(char list[][TASKMSG_UUID_LEN + 1], int n, const char *id)
{
	for (int i = 0; i < n; i++) {
		if (strcmp(list[i], id) == 0)
			return true;
	}
	return false;
}

/*
 * Marks the pending deliveries whose job a sibling's running batch covers
 * D_SIBLING, noting which batch (slot and gen) to wait for. When any
 * delivery is left for the database, opens this consumer's own slot with
 * their jobs and returns it; NULL otherwise.
 */
static struct slot *siblings_begin(struct consumer *c, char jobs[][TASKMSG_UUID_LEN + 1],
                                   unsigned char *state, int *wait_slot, unsigned long *wait_gen,
                                   int n)
{
	struct siblings *sb = c->w->siblings;
	struct slot *own = &sb->slots[c->index];
	int left = 0;
	pthread_mutex_lock(&sb->mu);
	for (int i = 0; i < n; i++) {
		if (state[i] != D_PENDING)
			continue;
		for (int k = 0; k < sb->n && jobs[i][0]; k++) {
			struct slot *s = &sb->slots[k];
			if (k != c->index && (s->gen & 1) && has_id(s->jobs, s->njobs, jobs[i])) {
				state[i] = D_SIBLING;
				wait_slot[i] = k;
				wait_gen[i] = s->gen;
				break;
			}
		}
		left += state[i] == D_PENDING;
	}
	if (left) {
		own->njobs = 0;
		own->ndone = 0;
		for (int i = 0; i < n && own->njobs < sb->max_jobs; i++) {
			if (state[i] == D_PENDING && jobs[i][0] &&
			    !has_id(own->jobs, own->njobs, jobs[i]))
				memcpy(own->jobs[own->njobs++], jobs[i], TASKMSG_UUID_LEN + 1);
		}
		own->gen++;
	}
	pthread_mutex_unlock(&sb->mu);
	return left ? own : NULL;
}

/* Closes this consumer's slot: its done list counts only if the batch committed. */
static void siblings_end(struct consumer *c, struct slot *own, bool committed)
{
	struct siblings *sb = c->w->siblings;
	pthread_mutex_lock(&sb->mu);
	if (!committed)
		own->ndone = 0;
	own->gen++;
	pthread_cond_broadcast(&sb->cv);
	pthread_mutex_unlock(&sb->mu);
}

/*
 * Waits for the sibling batches the D_SIBLING deliveries were noted
 * against. A delivery whose task that batch locked and committed is done:
 * it was queued when locked, and it could not have been queued again for a
 * later run (a retry) while locked, so its message is settled. Any other
 * one (the batch did not take it, failed, or is already followed by the
 * next) is D_BUSY, for the database to decide.
 */
static void siblings_wait(struct consumer *c, char ids[][TASKMSG_UUID_LEN + 1],
                          unsigned char *state, const int *wait_slot, const unsigned long *wait_gen,
                          int n, long long start_ms)
{
	struct siblings *sb = c->w->siblings;
	struct timespec deadline = proc_deadline(SIBLING_WAIT_MS);
	int settled = 0;
	pthread_mutex_lock(&sb->mu);
	for (int i = 0; i < n; i++) {
		if (state[i] != D_SIBLING)
			continue;
		struct slot *s = &sb->slots[wait_slot[i]];
		while (s->gen == wait_gen[i] &&
		       pthread_cond_timedwait(&sb->cv, &sb->mu, &deadline) != ETIMEDOUT)
			;
		bool done = s->gen == wait_gen[i] + 1 && has_id(s->done, s->ndone, ids[i]);
		state[i] = done ? D_DONE : D_BUSY;
		settled += done;
	}
	pthread_mutex_unlock(&sb->mu);
	double seconds = (double)(proc_now_ms() - start_ms) / 1000.0;
	for (int i = 0; i < settled; i++)
		count_outcome("skipped", seconds);
}

/*
 * Processes the batch's readable deliveries, then acks. The first pass
 * claims the rest of their jobs; deliveries whose task another consumer's
 * transaction held are run again once that pass committed, waiting for the
 * holder, and are then normally found done.
 */
static void handle_tasks(struct consumer *c, struct mq_delivery *d, int n, long long start_ms,
                         bool may_ack_multiple)
{
	char(*ids)[TASKMSG_UUID_LEN + 1] = calloc((size_t)n, sizeof(*ids));
	char(*jobs)[TASKMSG_UUID_LEN + 1] = calloc((size_t)n, sizeof(*jobs));
	unsigned char *state = calloc((size_t)n, 1);
	int *wait_slot = calloc((size_t)n, sizeof(*wait_slot));
	unsigned long *wait_gen = calloc((size_t)n, sizeof(*wait_gen));
	if (!ids || !jobs || !state || !wait_slot || !wait_gen)
		goto out; /* unacked: redelivered after the connection drops */
	int live = 0;
	for (int i = 0; i < n; i++) {
		if (taskmsg_parse_ids(d[i].body, d[i].len, ids[i], jobs[i]) != BR_OK) {
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
	int claim = live > CONSUMER_CLAIM ? live : CONSUMER_CLAIM;
	br_status st = BR_OK;
	struct slot *own = siblings_begin(c, jobs, state, wait_slot, wait_gen, n);
	if (own) {
		st = run_pass(c, d, ids, state, n, D_PENDING, claim, start_ms, own);
		siblings_end(c, own, st == BR_OK);
	}
	if (st == BR_OK)
		siblings_wait(c, ids, state, wait_slot, wait_gen, n, start_ms);
	bool busy = false;
	for (int i = 0; i < n && st == BR_OK; i++)
		busy = busy || state[i] == D_BUSY;
	if (st == BR_OK && busy) {
		FAULT_POINT("worker_between_passes");
		st = run_pass(c, d, ids, state, n, D_BUSY, 0, start_ms, NULL);
	}
	if (st != BR_OK) {
		/* Unresolved deliveries go back; committed ones are found done later. */
		if (st == BR_DB || st == BR_DB_RETRY || st == BR_NOMEM) {
			LOG_ERROR("consumer %d: batch of %d failed: %s", c->index, live,
			          db_errmsg(c->db));
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
		if (state[i] == D_DONE)
			mq_ack(c->mq, d[i].tag, false);
		else if (state[i] == D_REQUEUE)
			mq_nack(c->mq, d[i].tag, false, true);
	}
out:
	free(wait_gen);
	free(wait_slot);
	free(state);
	free(jobs);
	free(ids);
}

static void handle_batch(struct consumer *c, struct mq_delivery *d, int n, long long start_ms)
{
	/* Dead-lettered ones first, separately; then the live ones together. */
	int live = 0;
	for (int i = 0; i < n; i++) {
		if (d[i].dead) {
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
	 * only safe when no dead-lettered delivery of the batch is unresolved.
	 */
	if (live)
		handle_tasks(c, d, live, start_ms, live == n);
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
	while (!stopping(c)) {
		if (consumer_connect(c) != BR_OK) {
			__atomic_store_n(&c->ready, 0, __ATOMIC_SEQ_CST);
			proc_sleep_ms(backoff_next(&c->backoff), &c->w->stop);
			continue;
		}
		backoff_reset(&c->backoff);
		__atomic_store_n(&c->ready, 1, __ATOMIC_SEQ_CST);
		br_status st = mq_next(c->mq, CONSUMER_WAIT_MS, &batch[0]);
		if (st != BR_OK)
			continue;
		long long start = proc_now_ms();
		int n = 1;
		/* Whatever the broker already sent joins the batch, without waiting. */
		while (n < max && mq_next(c->mq, 0, &batch[n]) == BR_OK)
			n++;
		if (mq_is_open(c->mq))
			handle_batch(c, batch, n, start);
		for (int i = 0; i < n; i++)
			mq_delivery_free(&batch[i]);
	}
	free(batch);
	return NULL;
}

static void siblings_free(struct siblings *sb)
{
	if (!sb)
		return;
	for (int i = 0; i < sb->n; i++) {
		free(sb->slots[i].jobs);
		free(sb->slots[i].done);
	}
	free(sb->slots);
	pthread_cond_destroy(&sb->cv);
	pthread_mutex_destroy(&sb->mu);
	free(sb);
}

static struct siblings *siblings_new(int n, int prefetch)
{
	struct siblings *sb = calloc(1, sizeof(*sb));
	if (!sb)
		return NULL;
	pthread_mutex_init(&sb->mu, NULL);
	proc_cond_init(&sb->cv);
	sb->max_jobs = prefetch;
	/* A batch's rows: its deliveries, plus what it claimed up to the claim. */
	sb->max_done = prefetch + (prefetch > CONSUMER_CLAIM ? prefetch : CONSUMER_CLAIM);
	sb->slots = calloc((size_t)n, sizeof(*sb->slots));
	if (!sb->slots) {
		siblings_free(sb);
		return NULL;
	}
	sb->n = n;
	for (int i = 0; i < n; i++) {
		sb->slots[i].jobs = calloc((size_t)sb->max_jobs, sizeof(*sb->slots[i].jobs));
		sb->slots[i].done = calloc((size_t)sb->max_done, sizeof(*sb->slots[i].done));
		if (!sb->slots[i].jobs || !sb->slots[i].done) {
			siblings_free(sb);
			return NULL;
		}
	}
	return sb;
}

br_status consumers_start(struct worker *w)
{
	int n = w->cfg->worker_concurrency;
	w->siblings = siblings_new(n, w->cfg->worker_prefetch);
	w->consumers = calloc((size_t)n, sizeof(*w->consumers));
	if (!w->siblings || !w->consumers)
		return BR_NOMEM;
	w->nconsumers = n;
	for (int i = 0; i < n; i++) {
		struct consumer *c = &w->consumers[i];
		c->w = w;
		c->index = i;
		backoff_init(&c->backoff, 100, 10000);
		br_status st =
		    db_open(w->cfg->database_url, WORKER_STATEMENT_TIMEOUT_MS, true, &c->db);
		if (st == BR_OK)
			st = mq_open(w->cfg->amqp_url, MQ_HEARTBEAT_S, true, &c->mq);
		if (st != BR_OK)
			return st;
		if (pthread_create(&c->thread, NULL, consumer_main, c) != 0)
			return BR_NOMEM;
		c->started = true;
	}
	return BR_OK;
}

void consumers_join(struct worker *w)
{
	for (int i = 0; i < w->nconsumers; i++) {
		struct consumer *c = &w->consumers[i];
		if (c->started)
			pthread_join(c->thread, NULL);
		/* Closing returns anything still unacked to the queue. */
		mq_close(c->mq);
		db_close(c->db);
	}
	free(w->consumers);
	w->consumers = NULL;
	w->nconsumers = 0;
	siblings_free(w->siblings);
	w->siblings = NULL;
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
