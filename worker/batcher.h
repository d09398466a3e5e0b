/*
 * batcher.h - the cross-thread group commit of a worker process.
 *
 * The consumer threads of one process send their deliveries to PostgreSQL
 * together: a thread with deliveries adds its share to the forming batch
 * and waits. The forming batch starts when no batch runs and every member
 * whose batch just ended has joined it or found nothing more to receive
 * (batcher_idle), so that it gathers what the whole process holds; or at
 * once when it holds `max` deliveries. The member that starts it runs it,
 * through the runner given to batcher_new, on the free connection slot of
 * lowest index; the other members of the batch wait until it finished.
 *
 * The batcher knows nothing of PostgreSQL or AMQP: connection slots are
 * opaque pointers it hands out (never one slot to two users at once), and
 * a share carries an opaque pointer to its member's deliveries, read only
 * by the runner.
 *
 * Thread-safety: every function may be called from any member thread; the
 * handle's state is under its mutex. A member is one thread at a time.
 */
#ifndef BULKREG_BATCHER_H
#define BULKREG_BATCHER_H

#include <stdbool.h>

#include "status.h"

typedef struct batcher batcher;

/*
 * One member's deliveries in a batch, owned by the member (on its stack,
 * say) and lent to the batcher from batcher_join until it returns. The
 * runner may write what arg points to; the batcher writes st.
 */
struct batcher_share {
	int member;   /* the thread that joined it, 0 .. nmembers - 1 */
	void *arg;    /* its deliveries: the runner's business */
	int n;        /* how many deliveries it brings towards `max` */
	br_status st; /* the runner's status for its batch, once batcher_join returned */
	/* the batcher's own, under its mutex */
	unsigned long batch;
	bool finished;
	struct batcher_share *next;
};

/*
 * Runs one batch: list (in arrival order, linked by next) holds `size`
 * deliveries in all. member is the thread running it, conn the connection
 * slot it was given. Called without the batcher's mutex. Its status becomes
 * every share's st.
 */
typedef br_status (*batcher_run_fn)(void *ctx, int member, void *conn, struct batcher_share *list,
                                    int size);

/*
 * A batcher for nmembers threads sharing nconns connection slots
 * (conns[0..nconns), copied; the pointers stay the caller's, who closes
 * them after batcher_free), starting a batch at once from max deliveries.
 * Every member must be able to take a slot at the same time: nconns is at
 * least the number of threads that may hold one. NULL when out of memory.
 */
batcher *batcher_new(int nmembers, void *const *conns, int nconns, int max, batcher_run_fn run,
                     void *ctx);

/* Frees the batcher (accepts NULL); no member may be inside a call. */
void batcher_free(batcher *b);

/*
 * Adds sh (sh->member, sh->arg, sh->n set by the caller) to the forming
 * batch and returns once a batch carrying it has run, having run it on
 * this thread if it started here. sh->st then holds the runner's status.
 */
void batcher_join(batcher *b, struct batcher_share *sh);

/*
 * Called by a member before it may block elsewhere (waiting for the
 * broker, reconnecting, a statement of its own): the forming batch stops
 * waiting for it.
 */
void batcher_idle(batcher *b, int member);

/*
 * Takes the free connection slot of lowest index, for use outside a batch;
 * *slot receives its index for batcher_conn_give. Never blocks.
 */
void *batcher_conn_take(batcher *b, int *slot);
void batcher_conn_give(batcher *b, int slot);

/* Deliveries in the forming batch (for tests and metrics). */
int batcher_forming(batcher *b);

#endif
