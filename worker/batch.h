/*
 * batch.h - the batch pass of the worker's consumers: the deliveries of
 * one batch (every consumer's part, batcher.h) registered by ONE
 * process_batch() call in one transaction (sql/functions/batches.sql).
 *
 * It registers each job's tasks in index order from the job's lowest
 * queued one, under the job's row lock, and claims more of the job while
 * BATCH_CLAIM allows. A delivery whose job or session another transaction
 * holds comes back BATCH_PARKED, so no batch ever waits for a lock.
 *
 * Thread-safety: stateless; a call writes only the parts of its batch.
 */
#ifndef BULKREG_BATCH_H
#define BULKREG_BATCH_H

#include "batcher.h"
#include "db.h"
#include "mq.h"
#include "status.h"
#include "taskmsg.h"

/*
 * Tasks one transaction may claim: its deliveries plus the queued rest of
 * their jobs. 64 holds a whole 50-task job; a session's registrations are
 * serialized on its row anyway, so bigger batches share more commits.
 */
#define BATCH_CLAIM 64

/* What became of one delivery of a batch. */
enum batch_state {
	BATCH_PENDING, /* not run yet */
	BATCH_PARKED,  /* its job or session is held by another transaction: offer it again later */
	BATCH_DONE,    /* committed or nothing to do: ack */
	BATCH_REQUEUE, /* raised: nack with requeue, towards x-delivery-limit */
	BATCH_REJECTED, /* unreadable: already nacked to the dead-letter queue */
};

/*
 * One consumer's readable deliveries, its share of a batch (the arg of its
 * struct batcher_share). All arrays are the consumer's; the pass reads d,
 * ids and start_ms and writes state[] of its BATCH_PENDING deliveries.
 */
struct batch_part {
	const struct mq_delivery *d;
	char (*ids)[UUID_LEN + 1];
	unsigned char *state; /* enum batch_state, one per delivery */
	int n;
	long long start_ms;
};

/* What a pass needs of the consumer thread running it; all borrowed. */
struct batch_runner {
	int index;       /* the consumer's number, for log lines; its batcher member */
	int *ready;      /* atomic: cleared while its database is unreachable */
	const int *stop; /* atomic: set once the process stops */
	mq_conn *mq;     /* its AMQP connection */
};

/*
 * Runs list (size deliveries) as one batch on db, retrying serialization
 * failures and a lost connection; then every pending delivery's state is
 * set. A batch of r's own deliveries gives up when r's AMQP connection
 * died (BR_MQ_CONN: the broker has them back), any batch when stopping;
 * BR_DB, BR_DB_RETRY or BR_NOMEM (logged) leave the states pending.
 */
br_status batch_run(const struct batch_runner *r, db_conn *db, struct batcher_share *list,
                    int size) BR_MUST_USE;

/*
 * Fails a dead-lettered task with internal_error in its own transaction,
 * retried like a batch, and counts it. BR_OK, or what batch_run returns.
 */
br_status batch_fail_task(const struct batch_runner *r, db_conn *db,
                          const char *task_id) BR_MUST_USE;

#endif
