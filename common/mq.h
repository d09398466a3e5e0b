/*
 * mq.h - RabbitMQ access for bulkreg (docs/operations.md, broker topology) over rabbitmq-c 0.11.
 *
 * A connection is given the node URIs of one cluster (AMQP_URL: one URI,
 * or a comma-separated list). It starts at the process's random node and,
 * once a connection to a node is lost, reconnects starting at the next one:
 * a stopped, killed or frozen node costs a connection its timeouts (a few
 * seconds), not the node's outage. A connection never writes topology: it
 * checks passively that bulkreg-admin migrate declared it (mq_declare_topology).
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
#define MQ_MAX_NODES      16
/*
 * rabbitmq-c gives up on a connection that received nothing for two
 * heartbeat intervals, and so does the broker: a frozen node is left after
 * at most 8 s, a frozen process loses its deliveries after as long.
 */
#define MQ_HEARTBEAT_S 4

/* The node URIs of an AMQP_URL, each an owned copy. */
struct mq_nodes {
	int n;
	char *url[MQ_MAX_NODES];
};

/*
 * Splits list (one amqp:// URI or up to MQ_MAX_NODES of them separated by
 * commas; blanks around each are ignored) into out. BR_INVAL when an entry
 * is empty or not an AMQP URI, or there are too many; BR_NOMEM. Free with
 * mq_nodes_free (also after a failure).
 */
br_status mq_nodes_parse(const char *list, struct mq_nodes *out) BR_MUST_USE;
void mq_nodes_free(struct mq_nodes *nodes);

/* How mq_open connects. */
struct mq_opts {
	int heartbeat_s;    /* 0 = none */
	int rpc_timeout_ms; /* each RPC, and the connect and handshake of each node; 0 = default */
	bool lazy;          /* a failed first connect still returns a handle (for mq_ensure) */
	bool declares;      /* skip the topology check: the caller declares it (migrate) */
	const char *role;   /* names the connection on the broker ("consumer 2"); may be NULL */
};

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
 * Opens a connection to one node of urls (an AMQP_URL) and checks,
 * passively, that the topology exists (every reconnect does too; a missing
 * one fails the connect, naming bulkreg-admin migrate). With opts->lazy a
 * failed first attempt still returns a handle, to be connected by
 * mq_ensure. BR_MQ_CONN, BR_INVAL (bad URL) or BR_NOMEM. urls and opts are
 * copied.
 */
br_status mq_open(const char *urls, const struct mq_opts *opts, mq_conn **out) BR_MUST_USE;

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

/*
 * Declares the broker topology (docs/operations.md): exchanges, queues,
 * bindings. Cluster-wide writes: only bulkreg-admin migrate calls it, once
 * the cluster has formed, so that the queue gets a member on every node.
 */
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

/* "host:port" of the node the connection is on (or tries next), into out. */
void mq_node_name(mq_conn *c, char *out, size_t cap);

#endif
