/*
 * publisher.h - the API's pool of confirmed AMQP publishers.
 *
 * Each request thread borrows one mq_conn (one AMQP connection per thread
 * at a time), publishes a batch, waits for the broker's confirms and gives
 * it back. A failure on a connection that may have gone stale is retried
 * once on a fresh connection; a duplicate publish is harmless because task
 * processing is idempotent.
 */
#ifndef BULKREG_API_PUBLISHER_H
#define BULKREG_API_PUBLISHER_H

#include <stddef.h>

#include "mq.h"
#include "status.h"

typedef struct pub_pool pub_pool;

/* A pool of up to size connections to url, opened on demand. NULL on NOMEM. */
pub_pool *pub_pool_new(const char *url, int size);
void pub_pool_free(pub_pool *p);

/*
 * Publishes msgs to bulkreg.tasks with confirms. BR_OK when every message
 * was confirmed; otherwise BR_MQ_CONN / BR_MQ_NACK / BR_TIMEOUT (also when
 * no publisher came free within the confirm timeout) /
 * BR_MQ_BLOCKED (at once, without trying, while the broker blocks the
 * pool's publishers), and the caller must assume none was.
 */
br_status pub_tasks(pub_pool *p, const struct mq_msg *msgs, size_t n) BR_MUST_USE;

/*
 * True while the broker blocks publishing on the pool's connections (a
 * resource alarm), as learnt from connection.blocked; reading any
 * connection.unblocked that arrived meanwhile costs a recv per blocked
 * connection. Thread-safe.
 */
bool pub_blocked(pub_pool *p);

#endif
