/*
 * readbatch.h - GETs of one resource that arrive together share one
 * statement and one round trip to PostgreSQL.
 *
 * A GET served by an api_read statement (app.h) joins a queue. A request
 * that finds no batch at the database leads: it takes the queued requests
 * for the same statement (at most RB_MAX, oldest first), runs the
 * statement once for all of them on a pooled connection, hands each its
 * row and wakes it. Requests that arrive meanwhile wait and go together in
 * the next batch, as commits do in PostgreSQL's group commit. Nothing
 * waits for a batch to fill: on an idle API each request is a batch of
 * one, run at once.
 *
 * One batch at a time is what makes batches form: a request
 * waits for at most the batch ahead of it. With two at a time, in a
 * 32-connection read load, nearly every request found a free slot and
 * went alone (1.1 requests per statement, against 3.5 with one).
 *
 * Batching changes only how many requests a statement serves: each still
 * gets the row the single statement would have returned, at a snapshot
 * taken after it arrived, and a database failure is each batched
 * request's failure.
 *
 * Thread-safe: one readbatch serves every request thread.
 */
#ifndef BULKREG_API_READBATCH_H
#define BULKREG_API_READBATCH_H

#include <stdbool.h>

#include "db.h"
#include "status.h"
#include "uuid.h"

/* The most requests in one batch. */
#define RB_MAX 32

typedef struct readbatch readbatch;

/*
 * The statement of a batched read takes ($1 text[] of token digests as hex,
 * $2 uuid[] of resource ids) and returns one row per request whose token is
 * known and not revoked: (the request's 1-based position, organization id,
 * token id, the resource or NULL when the organization has no such one).
 */

/* What one request's read found. */
struct rb_row {
	bool authenticated; /* the token is known and not revoked */
	char org_id[UUID_LEN + 1];
	char token_id[UUID_LEN + 1];
	char *resource; /* JSON text, owned by the caller (free); NULL when none */
};

/* What a batcher has done so far, and its queue now. */
struct rb_stats {
	unsigned long statements; /* batches run */
	unsigned long requests;   /* requests they served */
	int waiting;              /* requests queued, not yet in a batch */
	int leaders;              /* batches at the database now: 0 or 1 */
};

/*
 * A batcher borrowing connections from db (not owned), waiting up to
 * db_wait_ms for one. It counts its statements and requests in
 * bulkreg_api_read_statements_total and bulkreg_api_read_requests_total
 * (registered here, so one per process). NULL on NOMEM.
 */
readbatch *rb_new(db_pool *db, int db_wait_ms);

/* Frees; accepts NULL. No rb_read may be running. */
void rb_free(readbatch *rb);

/* A snapshot of rb's counts (for tests and logs). */
void rb_get_stats(readbatch *rb, struct rb_stats *out);

/*
 * Reads the resource id (a UUID) with the token whose SHA-256 is hex (64
 * hex digits) through stmt, batched as above. BR_OK with *out filled (its
 * resource for the caller to free); otherwise the database's failure
 * (BR_DB_CONN, BR_TIMEOUT when no connection freed up, BR_DB, BR_NOMEM)
 * and *out untouched; BR_INVAL when hex or id has the wrong length.
 */
br_status rb_read(readbatch *rb, const db_stmt *stmt, const char *hex, const char *id,
                  struct rb_row *out) BR_MUST_USE;

#endif
