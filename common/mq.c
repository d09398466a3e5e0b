/*
 * mq.c - AMQP 0-9-1 connections to one node of a cluster at a time (moving
 * to the next node when one is lost: mq_connect), the passive topology
 * check and its declaration (bulkreg-admin migrate only), and consuming,
 * over rabbitmq-c 0.11 (see mq.h).
 *
 * rabbitmq-c 0.11 has no amqp_publisher_confirm_wait, so confirms are read
 * in mq_publish.c.
 *
 * Every connection announces the "connection.blocked" capability: under a
 * resource alarm RabbitMQ stops reading a connection that publishes and
 * says so with connection.blocked (then connection.unblocked), which we
 * read wherever frames are read and keep in `blocked`.
 *
 * Thread-safety: each mq_conn has a mutex that every public function
 * holds while it uses the connection, so that the keeper thread
 * (mq_keeper.c) may send heartbeats for a connection whose owner is busy
 * elsewhere. rabbitmq-c services heartbeats only inside its own calls; a consumer
 * thread waiting for PostgreSQL would otherwise fall silent and the broker
 * would close its connection, returning its deliveries mid-batch. A
 * process that is frozen as a whole (SIGSTOP) falls silent all the same,
 * which is what lets the broker hand its deliveries to another worker.
 */
#include "mq.h"
#include "mq_internal.h"

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <amqp.h>
#include <amqp_tcp_socket.h>

#include "fault.h"
#include "log.h"
#include "proc.h"

long long mq_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void mq_drop(mq_conn *c)
{
	if (!c->st)
		return;
	/* No polite close: the peer may be gone, and we never wait on it. */
	amqp_destroy_connection(c->st);
	c->st = NULL;
	c->confirms = false;
}

br_status mq_fail(mq_conn *c, br_status st, const char *what, const char *detail)
{
	snprintf(c->err, sizeof(c->err), "%s: %s", what, detail ? detail : "");
	/* A failure, unlike a voluntary drop, sends the next connect to the next node. */
	if (c->st)
		c->lost = true;
	mq_drop(c);
	return st;
}

/* Describes a failed RPC reply; returns BR_OK for a normal one. */
br_status mq_check_reply(mq_conn *c, amqp_rpc_reply_t r, const char *what)
{
	char detail[160];
	switch (r.reply_type) {
	case AMQP_RESPONSE_NORMAL:
		c->last_io_ms = mq_now_ms();
		return BR_OK;
	case AMQP_RESPONSE_LIBRARY_EXCEPTION:
		return mq_fail(c, BR_MQ_CONN, what, amqp_error_string2(r.library_error));
	case AMQP_RESPONSE_SERVER_EXCEPTION:
		if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
			const amqp_channel_close_t *m = r.reply.decoded;
			snprintf(detail, sizeof(detail), "channel closed %u %.*s", m->reply_code,
			         (int)m->reply_text.len, (const char *)m->reply_text.bytes);
			amqp_channel_close_ok_t ok = {0};
			amqp_send_method(c->st, MQ_CHANNEL, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
			return mq_fail(c, BR_MQ, what, detail);
		}
		if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
			const amqp_connection_close_t *m = r.reply.decoded;
			snprintf(detail, sizeof(detail), "connection closed %u %.*s", m->reply_code,
			         (int)m->reply_text.len, (const char *)m->reply_text.bytes);
			return mq_fail(c, BR_MQ_CONN, what, detail);
		}
		return mq_fail(c, BR_MQ, what, "unexpected server method");
	default:
		return mq_fail(c, BR_MQ_CONN, what, "no reply");
	}
}

static amqp_table_entry_t entry_bool(const char *key, bool val)
{
	amqp_table_entry_t e;
	e.key = amqp_cstring_bytes(key);
	e.value.kind = AMQP_FIELD_KIND_BOOLEAN;
	e.value.value.boolean = val;
	return e;
}

static amqp_table_entry_t entry_table(const char *key, amqp_table_entry_t *entries, int n)
{
	amqp_table_entry_t e;
	e.key = amqp_cstring_bytes(key);
	e.value.kind = AMQP_FIELD_KIND_TABLE;
	e.value.value.table.num_entries = n;
	e.value.value.table.entries = entries;
	return e;
}

static amqp_table_entry_t entry_str(const char *key, const char *val)
{
	amqp_table_entry_t e;
	e.key = amqp_cstring_bytes(key);
	e.value.kind = AMQP_FIELD_KIND_UTF8;
	e.value.value.bytes = amqp_cstring_bytes(val);
	return e;
}

static br_status mq_declare_locked(mq_conn *c);
static br_status mq_ensure_locked(mq_conn *c);

/*
 * The node every connection of this process starts at: one random pick per
 * process, so that a deployment's processes spread over the cluster and
 * each process's connections share a node until one is lost.
 */
static unsigned mq_first_node;
static pthread_once_t mq_first_once = PTHREAD_ONCE_INIT;

static void mq_pick_first(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	mq_first_node = (unsigned)ts.tv_nsec ^ (unsigned)getpid() * 2654435761u;
}

/* Checks, without declaring anything, that bulkreg-admin migrate declared the topology. */
static br_status mq_check_topology(mq_conn *c)
{
	static const char *const queues[] = {MQ_QUEUE_TASKS, MQ_QUEUE_DEAD};
	amqp_exchange_declare(c->st, MQ_CHANNEL, amqp_cstring_bytes(MQ_EXCHANGE),
	                      amqp_cstring_bytes("direct"), 1, 0, 0, 0, amqp_empty_table);
	br_status st = mq_check_reply(c, amqp_get_rpc_reply(c->st), "exchange " MQ_EXCHANGE);
	for (size_t i = 0; i < 2 && st == BR_OK; i++) {
		amqp_queue_declare(c->st, MQ_CHANNEL, amqp_cstring_bytes(queues[i]), 1, 0, 0, 0,
		                   amqp_empty_table);
		st = mq_check_reply(c, amqp_get_rpc_reply(c->st), queues[i]);
	}
	if (st == BR_MQ) {
		/* The channel closed with 404: the cluster has no topology yet. */
		char why[sizeof(c->err)];
		memcpy(why, c->err, sizeof(why));
		snprintf(c->err, sizeof(c->err),
		         "topology missing (run bulkreg-admin migrate): %.160s", why);
	}
	return st;
}

/* Connects to node k: TCP, login, channel, the passive topology check. */
static br_status mq_connect_node(mq_conn *c, int k)
{
	char *copy = strdup(c->nodes.url[k]);
	if (!copy)
		return BR_NOMEM;
	struct amqp_connection_info info;
	br_status st = BR_OK;
	if (amqp_parse_url(copy, &info) != AMQP_STATUS_OK) {
		free(copy);
		snprintf(c->err, sizeof(c->err), "invalid AMQP URL");
		return BR_INVAL;
	}
	/*
	 * "amqp://host:5672/" names the empty vhost to the letter, but everyone
	 * (the README's default included) means the default vhost "/".
	 */
	if (info.vhost[0] == '\0')
		info.vhost = (char *)"/";
	mq_drop(c);
	c->st = amqp_new_connection();
	if (!c->st) {
		free(copy);
		return BR_NOMEM;
	}
	amqp_socket_t *sock = amqp_tcp_socket_new(c->st);
	struct timeval tv = {c->rpc_timeout_ms / 1000, (c->rpc_timeout_ms % 1000) * 1000};
	int rc;
	if (!sock) {
		st = mq_fail(c, BR_NOMEM, "socket", "out of memory");
		goto out;
	}
	rc = amqp_socket_open_noblock(sock, info.host, info.port, &tv);
	if (rc != AMQP_STATUS_OK) {
		st = mq_fail(c, BR_MQ_CONN, "connect", amqp_error_string2(rc));
		goto out;
	}
	amqp_set_handshake_timeout(c->st, &tv);
	amqp_set_rpc_timeout(c->st, &tv);
	amqp_table_entry_t cap[] = {entry_bool("connection.blocked", true)};
	amqp_table_entry_t props[] = {entry_table("capabilities", cap, 1),
	                              entry_str("connection_name", c->name)};
	amqp_table_t client_props = {2, props};
	c->blocked = false;
	st = mq_check_reply(c,
	                    amqp_login_with_properties(
	                        c->st, info.vhost, 0, MQ_FRAME_MAX, c->heartbeat_s, &client_props,
	                        AMQP_SASL_METHOD_PLAIN, info.user, info.password),
	                    "login");
	if (st != BR_OK)
		goto out;
	amqp_channel_open(c->st, MQ_CHANNEL);
	st = mq_check_reply(c, amqp_get_rpc_reply(c->st), "channel.open");
	if (st != BR_OK)
		goto out;
	c->next_tag = 1;
	c->confirms = false;
	if (!c->declares)
		st = mq_check_topology(c);
out:
	if (st != BR_OK && st != BR_NOMEM && st != BR_INVAL)
		LOG_WARN("AMQP node %s:%d (%s): %s", info.host, info.port, c->name, c->err);
	free(copy);
	if (st != BR_OK && st != BR_NOMEM && st != BR_INVAL)
		st = BR_MQ_CONN;
	return st;
}

/*
 * Connects to the first node that answers, starting at the current one,
 * or at the next one when the current one was lost; each node is tried
 * once. BR_MQ_CONN when none answered (the next call starts where this one
 * did).
 */
static br_status mq_connect(mq_conn *c)
{
	int n = c->nodes.n;
	int first = (c->cur + (c->lost ? 1 : 0)) % n;
	br_status st = BR_MQ_CONN;
	for (int i = 0; i < n; i++) {
		int k = (first + i) % n;
		st = mq_connect_node(c, k);
		if (st == BR_OK) {
			if (c->lost || k != first)
				LOG_INFO("AMQP %s: moved to node %d of %d", c->name, k + 1, n);
			c->cur = k;
			c->lost = false;
			return BR_OK;
		}
		if (st == BR_NOMEM || st == BR_INVAL)
			break;
	}
	c->cur = first;
	c->lost = false;
	return st;
}

/* "bulkreg-worker[1234] consumer 2": how operators find the connection on the broker. */
static void mq_set_name(mq_conn *c, const char *role)
{
	snprintf(c->name, sizeof(c->name), "%s[%ld]%s%s", program_invocation_short_name,
	         (long)getpid(), role ? " " : "", role ? role : "");
}

br_status mq_open(const char *urls, const struct mq_opts *opts, mq_conn **out)
{
	mq_conn *c = calloc(1, sizeof(*c));
	if (!c)
		return BR_NOMEM;
	br_status st = mq_nodes_parse(urls, &c->nodes);
	if (st != BR_OK) {
		mq_nodes_free(&c->nodes);
		free(c);
		return st;
	}
	pthread_once(&mq_first_once, mq_pick_first);
	c->cur = (int)(mq_first_node % (unsigned)c->nodes.n);
	c->heartbeat_s = opts->heartbeat_s;
	c->declares = opts->declares;
	c->rpc_timeout_ms = opts->rpc_timeout_ms > 0 ? opts->rpc_timeout_ms : MQ_RPC_TIMEOUT_MS;
	mq_set_name(c, opts->role);
	pthread_mutex_init(&c->mu, NULL);
	st = mq_connect(c);
	c->last_call_ms = mq_now_ms();
	if (st != BR_OK && !(opts->lazy && st == BR_MQ_CONN)) {
		mq_close(c);
		return st;
	}
	if (c->heartbeat_s > 0)
		mq_keep(c);
	*out = c;
	return BR_OK;
}

void mq_close(mq_conn *c)
{
	if (!c)
		return;
	mq_unkeep(c);
	if (c->st) {
		amqp_channel_close(c->st, MQ_CHANNEL, AMQP_REPLY_SUCCESS);
		amqp_connection_close(c->st, AMQP_REPLY_SUCCESS);
	}
	mq_drop(c);
	pthread_mutex_destroy(&c->mu);
	mq_nodes_free(&c->nodes);
	free(c);
}

bool mq_is_open(mq_conn *c)
{
	pthread_mutex_lock(&c->mu);
	bool open = c->st != NULL;
	pthread_mutex_unlock(&c->mu);
	return open;
}

void mq_unlock(mq_conn *c)
{
	c->last_call_ms = mq_now_ms();
	pthread_mutex_unlock(&c->mu);
}

br_status mq_ensure(mq_conn *c)
{
	pthread_mutex_lock(&c->mu);
	br_status st = mq_ensure_locked(c);
	mq_unlock(c);
	return st;
}

static br_status mq_ensure_locked(mq_conn *c)
{
	/*
	 * An idle connection has not read the broker's heartbeats, so its node
	 * may be gone or frozen unnoticed: start afresh rather than discover it
	 * mid-publish. A voluntary drop: the same node is tried first.
	 */
	if (c->st && c->heartbeat_s > 0 && mq_now_ms() - c->last_io_ms > c->heartbeat_s * 1000LL)
		mq_drop(c);
	if (c->st)
		return BR_OK;
	return mq_connect(c);
}

const char *mq_errmsg(const mq_conn *c)
{
	return c->err;
}

void mq_node_name(mq_conn *c, char *out, size_t cap)
{
	pthread_mutex_lock(&c->mu);
	char *copy = strdup(c->nodes.url[c->cur]);
	struct amqp_connection_info info;
	if (copy && amqp_parse_url(copy, &info) == AMQP_STATUS_OK)
		snprintf(out, cap, "%s:%d", info.host, info.port);
	else
		snprintf(out, cap, "node %d", c->cur + 1);
	free(copy);
	pthread_mutex_unlock(&c->mu);
}

static amqp_table_entry_t entry_int(const char *key, int val)
{
	amqp_table_entry_t e;
	e.key = amqp_cstring_bytes(key);
	e.value.kind = AMQP_FIELD_KIND_I32;
	e.value.value.i32 = val;
	return e;
}

static br_status mq_declare_locked(mq_conn *c)
{
	if (!c->st)
		return BR_MQ_CONN;
	amqp_connection_state_t s = c->st;
	br_status st;
	amqp_exchange_declare(s, MQ_CHANNEL, amqp_cstring_bytes(MQ_EXCHANGE),
	                      amqp_cstring_bytes("direct"), 0, 1, 0, 0, amqp_empty_table);
	if ((st = mq_check_reply(c, amqp_get_rpc_reply(s), "exchange.declare bulkreg")))
		return st;
	amqp_exchange_declare(s, MQ_CHANNEL, amqp_cstring_bytes(MQ_DLX),
	                      amqp_cstring_bytes("direct"), 0, 1, 0, 0, amqp_empty_table);
	if ((st = mq_check_reply(c, amqp_get_rpc_reply(s), "exchange.declare bulkreg.dlx")))
		return st;

	amqp_table_entry_t dead_args[] = {entry_str("x-queue-type", "quorum")};
	amqp_table_t dead_tab = {1, dead_args};
	amqp_queue_declare(s, MQ_CHANNEL, amqp_cstring_bytes(MQ_QUEUE_DEAD), 0, 1, 0, 0, dead_tab);
	if ((st = mq_check_reply(c, amqp_get_rpc_reply(s), "queue.declare bulkreg.tasks.dead")))
		return st;
	amqp_queue_bind(s, MQ_CHANNEL, amqp_cstring_bytes(MQ_QUEUE_DEAD),
	                amqp_cstring_bytes(MQ_DLX), amqp_cstring_bytes(MQ_ROUTE_DEAD),
	                amqp_empty_table);
	if ((st = mq_check_reply(c, amqp_get_rpc_reply(s), "queue.bind bulkreg.tasks.dead")))
		return st;

	/*
	 * At-least-once dead-lettering (RabbitMQ 3.10+) keeps a message in
	 * bulkreg.tasks until bulkreg.tasks.dead has confirmed it; it needs
	 * reject-publish overflow.
	 */
	amqp_table_entry_t args[] = {
	    entry_str("x-queue-type", "quorum"),
	    entry_int("x-delivery-limit", MQ_DELIVERY_LIMIT),
	    entry_str("x-dead-letter-exchange", MQ_DLX),
	    entry_str("x-dead-letter-routing-key", MQ_ROUTE_DEAD),
	    entry_str("x-dead-letter-strategy", "at-least-once"),
	    entry_str("x-overflow", "reject-publish"),
	};
	amqp_table_t tab = {(int)(sizeof(args) / sizeof(args[0])), args};
	amqp_queue_declare(s, MQ_CHANNEL, amqp_cstring_bytes(MQ_QUEUE_TASKS), 0, 1, 0, 0, tab);
	if ((st = mq_check_reply(c, amqp_get_rpc_reply(s), "queue.declare bulkreg.tasks")))
		return st;
	amqp_queue_bind(s, MQ_CHANNEL, amqp_cstring_bytes(MQ_QUEUE_TASKS),
	                amqp_cstring_bytes(MQ_EXCHANGE), amqp_cstring_bytes(MQ_ROUTE_TASKS),
	                amqp_empty_table);
	return mq_check_reply(c, amqp_get_rpc_reply(s), "queue.bind bulkreg.tasks");
}

static br_status mq_consume_locked(mq_conn *c, const char *queue, int prefetch)
{
	if (!c->st)
		return BR_MQ_CONN;
	br_status st;
	amqp_basic_qos(c->st, MQ_CHANNEL, 0, (uint16_t)prefetch, 0);
	if ((st = mq_check_reply(c, amqp_get_rpc_reply(c->st), "basic.qos")))
		return st;
	amqp_basic_consume(c->st, MQ_CHANNEL, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, 0, 0,
	                   amqp_empty_table);
	return mq_check_reply(c, amqp_get_rpc_reply(c->st), "basic.consume");
}

static long header_long(const amqp_table_t *h, const char *key)
{
	for (int i = 0; i < h->num_entries; i++) {
		const amqp_table_entry_t *e = &h->entries[i];
		if (e->key.len != strlen(key) || memcmp(e->key.bytes, key, e->key.len) != 0)
			continue;
		switch (e->value.kind) {
		case AMQP_FIELD_KIND_I8:
			return e->value.value.i8;
		case AMQP_FIELD_KIND_U8:
			return e->value.value.u8;
		case AMQP_FIELD_KIND_I16:
			return e->value.value.i16;
		case AMQP_FIELD_KIND_U16:
			return e->value.value.u16;
		case AMQP_FIELD_KIND_I32:
			return e->value.value.i32;
		case AMQP_FIELD_KIND_U32:
			return (long)e->value.value.u32;
		case AMQP_FIELD_KIND_I64:
			return (long)e->value.value.i64;
		case AMQP_FIELD_KIND_U64:
			return (long)e->value.value.u64;
		default:
			return 0;
		}
	}
	return 0;
}

/* Handles a frame that arrived where a delivery was expected. */
static br_status mq_other_frame(mq_conn *c)
{
	amqp_frame_t f;
	struct timeval tv = {0, 0};
	int rc = amqp_simple_wait_frame_noblock(c->st, &f, &tv);
	if (rc == AMQP_STATUS_TIMEOUT)
		return BR_TIMEOUT;
	if (rc != AMQP_STATUS_OK)
		return mq_fail(c, BR_MQ_CONN, "consume", amqp_error_string2(rc));
	if (mq_note_blocked(c, &f) || f.frame_type != AMQP_FRAME_METHOD)
		return BR_TIMEOUT;
	switch (f.payload.method.id) {
	case AMQP_CHANNEL_CLOSE_METHOD:
		return mq_fail(c, BR_MQ_CONN, "consume", "channel closed by broker");
	case AMQP_CONNECTION_CLOSE_METHOD:
		return mq_fail(c, BR_MQ_CONN, "consume", "connection closed by broker");
	case AMQP_BASIC_CANCEL_METHOD:
		/* The queue went away (deleted, or a node failed): resubscribe. */
		return mq_fail(c, BR_MQ_CONN, "consume", "consumer cancelled by broker");
	default:
		return BR_TIMEOUT;
	}
}

static br_status mq_next_locked(mq_conn *c, int timeout_ms, struct mq_delivery *out)
{
	if (!c->st)
		return BR_MQ_CONN;
	amqp_envelope_t env;
	struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
	amqp_maybe_release_buffers(c->st);
	amqp_rpc_reply_t r = amqp_consume_message(c->st, &env, &tv, 0);
	if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) {
		if (r.library_error == AMQP_STATUS_TIMEOUT) {
			c->last_io_ms = mq_now_ms();
			return BR_TIMEOUT;
		}
		if (r.library_error == AMQP_STATUS_UNEXPECTED_STATE)
			return mq_other_frame(c);
	}
	if (r.reply_type != AMQP_RESPONSE_NORMAL) {
		(void)mq_check_reply(c, r, "consume");
		return BR_MQ_CONN;
	}
	c->last_io_ms = mq_now_ms();

	memset(out, 0, sizeof(*out));
	out->tag = env.delivery_tag;
	out->redelivered = env.redelivered != 0;
	out->dead = env.routing_key.len == strlen(MQ_ROUTE_DEAD) &&
	            memcmp(env.routing_key.bytes, MQ_ROUTE_DEAD, env.routing_key.len) == 0;
	const amqp_basic_properties_t *p = &env.message.properties;
	if (p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG) {
		size_t n = p->message_id.len < sizeof(out->message_id) - 1
		               ? p->message_id.len
		               : sizeof(out->message_id) - 1;
		memcpy(out->message_id, p->message_id.bytes, n);
		out->message_id[n] = '\0';
	}
	if (p->_flags & AMQP_BASIC_HEADERS_FLAG)
		out->delivery_count = header_long(&p->headers, "x-delivery-count");
	out->len = env.message.body.len;
	out->body = malloc(out->len + 1);
	if (!out->body) {
		amqp_destroy_envelope(&env);
		/* Unacked, it returns to the queue when the connection goes. */
		return mq_fail(c, BR_NOMEM, "consume", "out of memory");
	}
	if (out->len)
		memcpy(out->body, env.message.body.bytes, out->len);
	out->body[out->len] = '\0';
	amqp_destroy_envelope(&env);
	return BR_OK;
}

void mq_delivery_free(struct mq_delivery *d)
{
	free(d->body);
	d->body = NULL;
}

static br_status mq_ack_locked(mq_conn *c, uint64_t tag, bool multiple)
{
	if (!c->st)
		return BR_MQ_CONN;
	int rc = amqp_basic_ack(c->st, MQ_CHANNEL, tag, multiple);
	if (rc != AMQP_STATUS_OK)
		return mq_fail(c, BR_MQ_CONN, "basic.ack", amqp_error_string2(rc));
	return BR_OK;
}

static br_status mq_nack_locked(mq_conn *c, uint64_t tag, bool multiple, bool requeue)
{
	if (!c->st)
		return BR_MQ_CONN;
	int rc = amqp_basic_nack(c->st, MQ_CHANNEL, tag, multiple, requeue);
	if (rc != AMQP_STATUS_OK)
		return mq_fail(c, BR_MQ_CONN, "basic.nack", amqp_error_string2(rc));
	return BR_OK;
}

static br_status mq_queue_stats_locked(mq_conn *c, const char *queue, uint32_t *messages,
                                       uint32_t *consumers)
{
	if (!c->st)
		return BR_MQ_CONN;
	amqp_queue_declare_ok_t *ok = amqp_queue_declare(
	    c->st, MQ_CHANNEL, amqp_cstring_bytes(queue), 1, 0, 0, 0, amqp_empty_table);
	br_status st = mq_check_reply(c, amqp_get_rpc_reply(c->st), "queue.declare passive");
	if (st != BR_OK)
		return st == BR_MQ ? BR_NOTFOUND : st;
	*messages = ok->message_count;
	*consumers = ok->consumer_count;
	return BR_OK;
}

/* ---- public entry points: each holds the connection's mutex ---- */

br_status mq_declare_topology(mq_conn *c)
{
	pthread_mutex_lock(&c->mu);
	br_status st = mq_declare_locked(c);
	mq_unlock(c);
	return st;
}

br_status mq_consume(mq_conn *c, const char *queue, int prefetch)
{
	pthread_mutex_lock(&c->mu);
	br_status st = mq_consume_locked(c, queue, prefetch);
	mq_unlock(c);
	return st;
}

br_status mq_next(mq_conn *c, int timeout_ms, struct mq_delivery *out)
{
	pthread_mutex_lock(&c->mu);
	br_status st = mq_next_locked(c, timeout_ms, out);
	mq_unlock(c);
	return st;
}

br_status mq_ack(mq_conn *c, uint64_t tag, bool multiple)
{
	pthread_mutex_lock(&c->mu);
	br_status st = mq_ack_locked(c, tag, multiple);
	mq_unlock(c);
	return st;
}

br_status mq_nack(mq_conn *c, uint64_t tag, bool multiple, bool requeue)
{
	pthread_mutex_lock(&c->mu);
	br_status st = mq_nack_locked(c, tag, multiple, requeue);
	mq_unlock(c);
	return st;
}

br_status mq_queue_stats(mq_conn *c, const char *queue, uint32_t *messages, uint32_t *consumers)
{
	pthread_mutex_lock(&c->mu);
	br_status st = mq_queue_stats_locked(c, queue, messages, consumers);
	mq_unlock(c);
	return st;
}
