/*
 * mq.h - RabbitMQ access for bulkreg (docs/operations.md, broker topology) over rabbitmq-c 0.11.
 *
 * One mq_conn is one AMQP connection with one channel (channel 1), used by
 * one thread at a time (its functions hold a per-connection mutex, so a
 * second caller waits). rabbitmq-c services heartbeats only inside library
 * calls, so a process-wide keeper thread sends them for connections with
 * heartbeats whose owner is busy elsewhere (waiting for PostgreSQL, say):
 * only a process that is frozen as a whole falls silent. Any transport or
 * channel error marks the connection broken; mq_ensure reconnects it.
 *
 * Under a resource alarm the broker blocks connections that publish and
 * says so (connection.blocked); a blocked connection's mq_publish answers
 * BR_MQ_BLOCKED at once until the broker unblocks it.
 */
#ifndef BULKREG_MQ_H
#define BULKREG_MQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define MQ_EXCHANGE       "bulkreg"
#define MQ_DLX            "bulkreg.dlx"
#define MQ_QUEUE_TASKS    "bulkreg.tasks"
#define MQ_QUEUE_DEAD     "bulkreg.tasks.dead"
#define MQ_ROUTE_TASKS    "bulkreg.tasks"
#define MQ_ROUTE_DEAD     "bulkreg.tasks.dead"
#define MQ_DELIVERY_LIMIT 5
#define MQ_HEARTBEAT_S    10

typedef struct mq_conn mq_conn;

/* One message to publish: persistent, application/json, message_id set. */
struct mq_msg {
	const char *message_id;
	const void *body;
	size_t len;
};

/* One delivery received; release with mq_delivery_free. */
struct mq_delivery {
	uint64_t tag;
	bool redelivered;
	bool dead;           /* came from bulkreg.tasks.dead */
	long delivery_count; /* x-delivery-count header; 0 on first delivery */
	char message_id[64];
	char *body; /* NUL-terminated copy, owned */
	size_t len;
};

/*
 * Opens a connection to url with heartbeat_s heartbeats (0 = none) and
 * declares the topology on it (every reconnect does too). When
 * lazy is true a failed first attempt still returns a handle, to be
 * connected by mq_ensure. BR_MQ_CONN, BR_INVAL (bad URL) or BR_NOMEM.
 */
br_status mq_open(const char *url, int heartbeat_s, bool lazy, mq_conn **out) BR_MUST_USE;

/* Closes and frees; accepts NULL. */
void mq_close(mq_conn *c);

/* Reconnects a broken or stale connection: BR_OK or BR_MQ_CONN. */
br_status mq_ensure(mq_conn *c) BR_MUST_USE;

/* True when the connection is believed usable. */
bool mq_is_open(mq_conn *c);

/* True when the broker blocked this connection's publishing (as last heard). */
bool mq_is_blocked(mq_conn *c);

/*
 * Reads, without waiting, what the broker sent (connection.blocked or
 * unblocked, a close). Only for connections that do not consume: it would
 * swallow deliveries. BR_OK, or BR_MQ_CONN when the connection is lost.
 */
br_status mq_poll(mq_conn *c) BR_MUST_USE;

/* Declares the broker topology (docs/operations.md): exchanges, queues, bindings. */
br_status mq_declare_topology(mq_conn *c) BR_MUST_USE;

/*
 * Publishes n messages to exchange with routing_key and waits up to
 * timeout_ms for the broker to confirm every one. BR_OK only when all were
 * confirmed and routed; BR_MQ_NACK when the broker refused or could not
 * route any; BR_MQ_CONN / BR_TIMEOUT / BR_MQ_BLOCKED (the broker blocked the
 * connection: nothing is sent while it stays so) leave the outcome of each
 * unknown.
 */
br_status mq_publish(mq_conn *c, const char *exchange, const char *routing_key,
                     const struct mq_msg *msgs, size_t n, int timeout_ms) BR_MUST_USE;

/* Sets basic.qos to prefetch and starts consuming queue (manual acks). */
br_status mq_consume(mq_conn *c, const char *queue, int prefetch) BR_MUST_USE;

/*
 * Waits up to timeout_ms for the next delivery. BR_TIMEOUT when none came
 * (heartbeats were serviced meanwhile); BR_MQ_CONN when the connection or
 * channel was lost (unacked deliveries return to the queue).
 */
br_status mq_next(mq_conn *c, int timeout_ms, struct mq_delivery *out) BR_MUST_USE;
void mq_delivery_free(struct mq_delivery *d);

/*
 * basic.ack / basic.nack; multiple covers every tag up to tag. A failure
 * marks the connection broken, and the broker returns every unacked
 * delivery to its queue: callers may ignore the result and reconnect.
 */
br_status mq_ack(mq_conn *c, uint64_t tag, bool multiple);
br_status mq_nack(mq_conn *c, uint64_t tag, bool multiple, bool requeue);

/* Ready message and consumer counts of queue, by passive declare. */
br_status mq_queue_stats(mq_conn *c, const char *queue, uint32_t *messages,
                         uint32_t *consumers) BR_MUST_USE;

/* The last error's description; borrowed. */
const char *mq_errmsg(const mq_conn *c);

#endif
