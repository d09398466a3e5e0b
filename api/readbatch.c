/*
 * readbatch.c - one statement for the GETs that arrive together (see
 * readbatch.h).
 *
 * Owns the queue of waiting requests, guarded by one mutex. A request's
 * struct rb_wait lives on its own thread's stack from rb_read's start to
 * its end. The leader that takes it into a batch unlinks it under the
 * mutex; from then on only that leader touches it, and only until it
 * stores RB_DONE in its state (see state_set).
 *
 * Why a batch is worth it: on this kind of short read most of what
 * PostgreSQL spends per statement is the round trip itself (waking the
 * backend, reading the message, the executor's start and end, sending),
 * not the two index lookups. A batch of four costs the server about a
 * third of four single statements.
 */
#include "readbatch.h"

#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"
#include "pgarray.h"
#include "proc.h"

#define RB_HEX_LEN 64

struct rb_wait {
	const db_stmt *stmt;
	const char *hex;
	const char *id;
	struct rb_wait *next; /* queue link */
	bool taken;           /* in a batch: unlinked, its leader answers it */
	atomic_int state;     /* RB_WAITING, RB_NUDGED or RB_DONE (below) */
	br_status st;
	struct rb_row row;
};

struct readbatch {
	pthread_mutex_t mu;
	struct rb_wait *head; /* oldest first */
	struct rb_stats stats;
	db_pool *db; /* borrowed */
	int db_wait_ms;
	met_counter *m_statements, *m_requests;
};

readbatch *rb_new(db_pool *db, int db_wait_ms)
{
	readbatch *rb = calloc(1, sizeof(*rb));
	if (!rb)
		return NULL;
	pthread_mutex_init(&rb->mu, NULL);
	rb->db = db;
	rb->db_wait_ms = db_wait_ms;
	rb->m_statements = met_counter_new("bulkreg_api_read_statements_total",
	                                   "Statements run for batched GETs of one resource.");
	rb->m_requests = met_counter_new("bulkreg_api_read_requests_total",
	                                 "GETs of one resource served by those statements.");
	if (!rb->m_statements || !rb->m_requests) {
		rb_free(rb);
		return NULL;
	}
	return rb;
}

void rb_get_stats(readbatch *rb, struct rb_stats *out)
{
	pthread_mutex_lock(&rb->mu);
	*out = rb->stats;
	out->waiting = 0;
	for (const struct rb_wait *w = rb->head; w; w = w->next)
		out->waiting++;
	pthread_mutex_unlock(&rb->mu);
}

void rb_free(readbatch *rb)
{
	if (!rb)
		return;
	pthread_mutex_destroy(&rb->mu);
	free(rb);
}

/* Unlinks up to RB_MAX queued requests for the head's statement into batch. */
static int take_batch(readbatch *rb, struct rb_wait **batch)
{
	const db_stmt *stmt = rb->head->stmt;
	int n = 0;
	struct rb_wait **pp = &rb->head;
	while (*pp && n < RB_MAX) {
		struct rb_wait *w = *pp;
		if (w->stmt == stmt) {
			*pp = w->next;
			w->next = NULL;
			w->taken = true;
			batch[n++] = w;
		} else {
			pp = &w->next;
		}
	}
	return n;
}

/* Copies a row of the batch's result to the request at its position. */
static br_status fill_row(const PGresult *res, int i, struct rb_wait **batch, int n)
{
	const char *pos = db_val(res, i, 0);
	const char *org = db_val(res, i, 1);
	const char *token = db_val(res, i, 2);
	const char *resource = db_val(res, i, 3);
	char *end = NULL;
	long k = pos ? strtol(pos, &end, 10) : 0;
	if (!pos || *end || k < 1 || k > n || !org || !token || batch[k - 1]->row.authenticated) {
		LOG_ERROR("readbatch: the statement returned a row no request asked for");
		return BR_DB;
	}
	struct rb_row *row = &batch[k - 1]->row;
	if (resource) {
		row->resource = strdup(resource);
		if (!row->resource)
			return BR_NOMEM;
	}
	row->authenticated = true;
	snprintf(row->org_id, sizeof(row->org_id), "%s", org);
	snprintf(row->token_id, sizeof(row->token_id), "%s", token);
	return BR_OK;
}

/*
 * Runs one statement for the n requests of batch and stores each one's row
 * (or the failure, in every request's st). Called without the mutex: the
 * batch is unlinked, and only its leader touches it until it is marked done.
 */
static void run_batch(readbatch *rb, struct rb_wait **batch, int n)
{
	/* "{h,h,...}" and "{id,id,...}": hex digits and UUIDs need no quoting. */
	char hexes[RB_MAX * (RB_HEX_LEN + 1) + 2];
	char ids[RB_MAX * (UUID_LEN + 1) + 2];
	struct pga_writer hw, iw;
	pga_start(&hw, hexes, sizeof(hexes));
	pga_start(&iw, ids, sizeof(ids));
	for (int i = 0; i < n; i++) {
		pga_add(&hw, batch[i]->hex, RB_HEX_LEN);
		pga_add(&iw, batch[i]->id, UUID_LEN);
	}
	const char *params[] = {pga_finish(&hw), pga_finish(&iw)};
	db_conn *c = NULL;
	PGresult *res = NULL;
	/* Validated digests and ids always fit; anything else is refused. */
	br_status st = params[0] && params[1] ? BR_OK : BR_INVAL;
	if (st == BR_OK)
		st = db_pool_get(rb->db, rb->db_wait_ms, &c);
	if (st == BR_OK) {
		st = db_run_read(c, batch[0]->stmt, params, &res);
		if (st != BR_OK)
			LOG_WARN("readbatch: %s for %d requests: %s %s", batch[0]->stmt->name, n,
			         db_sqlstate(c), db_errmsg(c));
		/* The waiters have no connection to ask: a cut-short wait is a timeout. */
		if (st == BR_DB && db_failed_busy(c))
			st = BR_TIMEOUT;
	}
	db_pool_put(rb->db, c);
	for (int i = 0; st == BR_OK && i < PQntuples(res); i++)
		st = fill_row(res, i, batch, n);
	PQclear(res);
	for (int i = 0; i < n; i++) {
		batch[i]->st = st;
		if (st != BR_OK) {
			free(batch[i]->row.resource);
			batch[i]->row.resource = NULL;
		}
	}
}

/*
 * A waiter sleeps on its own state word with a futex rather than on a
 * condition of the queue's mutex: a condition's waiter wakes holding
 * nothing and must take the mutex again, which its leader may still hold,
 * so most waiters would sleep twice per request. The leader sets RB_DONE
 * last, after the row, and never touches the waiter again: the waiter's
 * frame may be gone as soon as it sees RB_DONE. (A wake that reaches an
 * address after its waiter left is harmless: FUTEX_WAKE reads no memory.)
 */
enum {
	RB_WAITING,
	RB_NUDGED,
	RB_DONE
};

static void state_sleep(atomic_int *state, int while_value)
{
	syscall(SYS_futex, state, FUTEX_WAIT_PRIVATE, while_value, NULL, NULL, 0);
}

static void state_set(atomic_int *state, int value)
{
	atomic_store_explicit(state, value, memory_order_release);
	syscall(SYS_futex, state, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* Leads one batch from the queue; called with the mutex, returns without it. */
static bool lead(readbatch *rb, struct rb_wait *me)
{
	struct rb_wait *batch[RB_MAX];
	int n = take_batch(rb, batch);
	rb->stats.leaders++;
	pthread_mutex_unlock(&rb->mu);

	run_batch(rb, batch, n);

	pthread_mutex_lock(&rb->mu);
	rb->stats.leaders--;
	rb->stats.statements++;
	rb->stats.requests += (unsigned long)n;
	/* Whoever waits at the head leads the next batch: it is queued, so alive. */
	if (rb->head)
		state_set(&rb->head->state, RB_NUDGED);
	pthread_mutex_unlock(&rb->mu);

	met_counter_add(rb->m_statements, "", 1);
	met_counter_add(rb->m_requests, "", n);
	bool mine = false;
	for (int i = 0; i < n; i++) {
		if (batch[i] == me)
			mine = true;
		else
			state_set(&batch[i]->state, RB_DONE);
	}
	return mine;
}

br_status rb_read(readbatch *rb, const db_stmt *stmt, const char *hex, const char *id,
                  struct rb_row *out)
{
	if (strlen(hex) != RB_HEX_LEN || strlen(id) != UUID_LEN)
		return BR_INVAL;
	struct rb_wait me = {.stmt = stmt, .hex = hex, .id = id};
	atomic_init(&me.state, RB_WAITING);
	pthread_mutex_lock(&rb->mu);
	struct rb_wait **tail = &rb->head;
	while (*tail)
		tail = &(*tail)->next;
	*tail = &me;
	for (;;) {
		/*
		 * A request already taken into a batch never leads: a nudge meant
		 * for it while it was queued may arrive after another leader took
		 * it, and leading then would keep it from its answer.
		 */
		if (!me.taken && rb->stats.leaders == 0) {
			/* Usually a batch with this request in it, else the oldest ones. */
			if (lead(rb, &me))
				break;
			pthread_mutex_lock(&rb->mu);
			continue;
		}
		/* Sleep until done or nudged to lead; a nudge seen here is used up. */
		int s = RB_NUDGED;
		atomic_compare_exchange_strong(&me.state, &s, RB_WAITING);
		pthread_mutex_unlock(&rb->mu);
		while ((s = atomic_load_explicit(&me.state, memory_order_acquire)) == RB_WAITING)
			state_sleep(&me.state, RB_WAITING);
		if (s == RB_DONE)
			break;
		pthread_mutex_lock(&rb->mu);
	}
	if (me.st == BR_OK)
		*out = me.row;
	return me.st;
}
