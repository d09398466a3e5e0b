/*
 * batch.c - the batch pass of the worker's consumers (see batch.h).
 *
 * A batch is ONE statement, process_batch() (sql/functions/batches.sql), in
 * one transaction with one commit; this file runs it, retrying what may
 * be retried, and writes each delivery's new state into its consumer's
 * part. The consumers (consumer.c) receive, park and ack; the batcher
 * (batcher.c) decides which thread runs which batch on which connection.
 *
 * Owns nothing between calls. Thread-safety: a call runs on the thread
 * that started the batch; the parts it writes belong to the batch until
 * batcher_join returns to their owners.
 */
#include "batch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backoff.h"
#include "fault.h"
#include "log.h"
#include "ops.h"
#include "proc.h"
#include "pgarray.h"

#define BATCH_DB_RETRIES 20

static const db_stmt stmt_process = {
    "consumer_process",
    "SELECT task_id, outcome, detail, job_ended FROM process_batch($1::uuid[], $2::int)", 2};
static const db_stmt stmt_fail = {"consumer_fail", "SELECT fail_task($1::uuid, 'internal_error')",
                                  1};

static bool stopping(const struct batch_runner *r)
{
	return __atomic_load_n(r->stop, __ATOMIC_SEQ_CST) != 0;
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
static br_status run_retrying(const struct batch_runner *r, db_conn *db, const db_stmt *stmt,
                              const char *const *params, PGresult **res, bool give_up_without_mq)
{
	struct backoff b;
	backoff_init(&b, 50, 5000);
	for (int attempt = 0;; attempt++) {
		PGresult *got = NULL;
		br_status st = db_ensure(db);
		if (st == BR_OK)
			st = db_cmd(db, "BEGIN");
		if (st == BR_OK)
			st = db_run(db, stmt, params, res ? &got : NULL);
		if (st == BR_OK) {
			FAULT_POINT("worker_mid_transaction");
			st = db_cmd(db, "COMMIT");
		}
		if (st == BR_OK) {
			if (res)
				*res = got;
			return BR_OK;
		}
		PQclear(got);
		db_rollback(db);
		if (st == BR_DB || st == BR_NOMEM)
			return st;
		if (stopping(r) && st == BR_DB_CONN)
			return st;
		if (st == BR_DB_RETRY && attempt < BATCH_DB_RETRIES)
			continue;
		if (st == BR_DB_RETRY)
			return st;
		__atomic_store_n(r->ready, 0, __ATOMIC_SEQ_CST);
		LOG_WARN("consumer %d: %s; retrying", r->index, db_errmsg(db));
		proc_sleep_ms(backoff_next(&b), NULL);
		if (give_up_without_mq && !mq_is_open(r->mq))
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

br_status batch_fail_task(const struct batch_runner *r, db_conn *db, const char *task_id)
{
	const char *params[] = {task_id};
	br_status st = run_retrying(r, db, &stmt_fail, params, NULL, true);
	if (st == BR_OK) {
		LOG_WARN("task dead-lettered by the broker after its delivery limit (%d): "
		         "failed with internal_error",
		         MQ_DELIVERY_LIMIT);
		count_outcome("internal_error", 0);
	}
	return st;
}

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
static br_status run_pass(const struct batch_runner *r, db_conn *db, const struct item *it, int n,
                          int claim, long long start_ms, bool give_up_without_mq)
{
	size_t cap = pga_bound((size_t)n, (size_t)n * UUID_LEN);
	char *arr = malloc(cap);
	if (!arr)
		return BR_NOMEM;
	struct pga_writer w;
	pga_start(&w, arr, cap);
	for (int i = 0; i < n; i++)
		pga_add(&w, it[i].id, UUID_LEN);
	if (!pga_finish(&w)) {
		free(arr);
		return BR_NOMEM;
	}
	char claim_s[16];
	snprintf(claim_s, sizeof(claim_s), "%d", claim);
	const char *params[] = {arr, claim_s};
	PGresult *res = NULL;
	br_status st = run_retrying(r, db, &stmt_process, params, &res, give_up_without_mq);
	free(arr);
	if (st != BR_OK)
		return st;
	double seconds = (double)(proc_now_ms() - start_ms) / 1000.0;
	/* A delivery the result does not mention has nothing left to do. */
	for (int i = 0; i < n; i++)
		*it[i].state = BATCH_DONE;
	for (int row = 0; row < PQntuples(res); row++) {
		const char *tid = PQgetvalue(res, row, 0);
		const char *outcome = PQgetvalue(res, row, 1);
		enum batch_state to = BATCH_DONE;
		if (strcmp(outcome, "busy") == 0)
			to = BATCH_PARKED;
		else if (strcmp(outcome, "error") == 0)
			to = BATCH_REQUEUE;
		/* "error" too: docs/operations.md counts it (the message goes back). */
		if (to != BATCH_PARKED)
			count_outcome(outcome, seconds);
		int first = 0, same = items_with_id(it, n, tid, &first);
		for (int i = first; i < first + same; i++) {
			if (to == BATCH_REQUEUE)
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
 * batch_run: one pass that registers the deliveries' tasks and
 * claims more of their jobs (sql/functions/batches.sql). A delivery whose job
 * or session another transaction holds comes back BATCH_PARKED: its thread
 * keeps it and offers it again in a later batch, so nothing here ever
 * waits for a lock.
 */
br_status batch_run(const struct batch_runner *r, db_conn *db, struct batcher_share *list, int size)
{
	struct item *it = calloc((size_t)size, sizeof(*it));
	if (!it)
		return BR_NOMEM;
	int n = 0;
	long long start_ms = ((const struct batch_part *)list->arg)->start_ms;
	bool own = true; /* every delivery came through r's channel */
	for (struct batcher_share *s = list; s; s = s->next) {
		const struct batch_part *p = s->arg;
		for (int i = 0; i < p->n && n < size; i++) {
			if (p->state[i] == BATCH_PENDING)
				it[n++] =
				    (struct item){p->ids[i], &p->state[i], p->d[i].delivery_count};
		}
		start_ms = p->start_ms < start_ms ? p->start_ms : start_ms;
		own = own && s->member == r->index;
	}
	/* Result rows find their deliveries by id. */
	qsort(it, (size_t)n, sizeof(*it), item_cmp);
	/*
	 * Without r's AMQP connection the broker has already redelivered r's
	 * deliveries, so a batch of r's alone may give up; one carrying other
	 * threads' deliveries keeps trying for them.
	 */
	int claim = n > BATCH_CLAIM ? n : BATCH_CLAIM;
	br_status st = run_pass(r, db, it, n, claim, start_ms, own);
	free(it);
	if (st == BR_DB || st == BR_DB_RETRY || st == BR_NOMEM)
		LOG_ERROR("consumer %d: batch of %d deliveries failed: %s", r->index, size,
		          st == BR_NOMEM ? "out of memory" : db_errmsg(db));
	return st;
}
