/*
 * outbox.h - the webhook outbox as the deliverer sees it: the PostgreSQL
 * side of webhook delivery (webhook_deliveries, webhook_attempts) and the
 * LISTEN on bulkreg_webhooks, over one connection that it owns. The HTTP
 * side (libcurl) is deliverer.c's.
 *
 * Claims take a lease (locked_until), so several worker processes never
 * send the same attempt at once. A lost connection is retried after a
 * capped backoff (outbox_ready); until then outbox_down is true.
 *
 * Thread-safety: an outbox belongs to one thread.
 */
#ifndef BULKREG_WORKER_OUTBOX_H
#define BULKREG_WORKER_OUTBOX_H

#include <stdbool.h>

#include "db.h"
#include "status.h"

typedef struct outbox outbox;

/* One claimed delivery; every string is borrowed for the callback's call. */
struct outbox_row {
	const char *delivery_id;
	const char *event_id;
	const char *job_id;
	const char *endpoint_id;
	const char *payload;
	const char *url;
	const char *secret;
	int attempts; /* attempts before this one */
};

/* One finished attempt to record; borrowed. */
struct outbox_attempt {
	const char *delivery_id;
	int attempts;            /* before this one: the claimed count */
	long long start_unix_ms; /* attempted_at */
	long http_status;        /* 0 when no response */
	long duration_ms;
	const char *error; /* NULL when it succeeded */
	const char *state; /* the delivery's next status: pending, succeeded, failed */
	long wait_ms;      /* until the next attempt when pending, else -1 */
	bool gone;         /* the receiver answered 410 Gone: disable endpoint_id */
	const char *endpoint_id;
};

/*
 * Opens the outbox on a lazily connected PostgreSQL connection to url
 * with opts. BR_NOMEM or BR_INVAL; *out is freed with outbox_close.
 */
br_status outbox_open(const char *url, const struct db_opts *opts, outbox **out) BR_MUST_USE;
void outbox_close(outbox *o);

/*
 * Connects when down (not before the backoff allows) and LISTENs on a new
 * connection, then true. *listened is set when a new LISTEN was issued:
 * whatever was notified before it is unknown, so the caller claims.
 */
bool outbox_ready(outbox *o, bool *listened);

/* True after a lost connection, until outbox_ready reconnects. */
bool outbox_down(const outbox *o);

/* When outbox_ready may try again (monotonic ms), while down. */
long long outbox_retry_at(const outbox *o);

/*
 * Notes a failed statement: BR_DB_CONN marks the outbox down (backoff
 * before reconnecting); anything else is logged.
 */
void outbox_failed(outbox *o, br_status st);

/* Reads what the server sent; true when a delivery was notified. */
bool outbox_notified(outbox *o);

/* The socket of the LISTENing connection, or -1. */
int outbox_fd(outbox *o);

/* True when the connection is believed usable (at shutdown). */
bool outbox_usable(outbox *o);

/*
 * Claims up to limit due deliveries with a lease of lease_ms, at most one
 * per endpoint and only at endpoints with no attempt in flight (each
 * claimed endpoint is leased too), organizations in turn; calls take for
 * each; *got receives how many were claimed. A db_run status on failure
 * (nothing claimed).
 */
br_status outbox_claim(outbox *o, int limit, int lease_ms,
                       void (*take)(void *ctx, const struct outbox_row *row), void *ctx,
                       int *got) BR_MUST_USE;

/*
 * Records an attempt and moves its delivery to a->state, if its attempt
 * count is still the claimed one (another worker may have recorded it
 * after the lease expired: the attempt is kept all the same), and gives the
 * endpoint's lease back. When a->gone, then disables the endpoint and fails
 * its pending deliveries.
 */
br_status outbox_record(outbox *o, const struct outbox_attempt *a) BR_MUST_USE;

/*
 * Milliseconds until the next delivery that nobody leases becomes due:
 * *due_ms, or *found false when there is none.
 */
br_status outbox_next_due(outbox *o, bool *found, long *due_ms) BR_MUST_USE;

/* Gives the lease of a claimed, unsent delivery back at once. */
br_status outbox_release(outbox *o, const char *delivery_id, int attempts) BR_MUST_USE;

#endif
