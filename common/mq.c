/*
 * mq.c - AMQP 0-9-1 connections, topology, confirmed publishing and
 * consuming over rabbitmq-c 0.11 (see mq.h). An mq_conn is not thread-safe.
 *
 * rabbitmq-c 0.11 has no amqp_publisher_confirm_wait, so confirms are read
 * here: after confirm.select the broker numbers our publishes 1, 2, ... and
 * answers basic.ack / basic.nack (possibly with multiple) and basic.return
 * for unroutable mandatory messages, which we read as frames.
 *
 * Every connection announces the "connection.blocked" capability: under a
 * resource alarm RabbitMQ stops reading a connection that publishes and
 * says so with connection.blocked (then connection.unblocked), which we
 * read wherever frames are read and keep in `blocked`.
 *
 * Thread-safety: each mq_conn has a mutex that every public function
 * holds while it uses the connection, so that the keeper thread (below)
 * may send heartbeats for a connection whose owner is busy elsewhere.
 * rabbitmq-c services heartbeats only inside its own calls; a consumer
 * thread waiting for PostgreSQL would otherwise fall silent and the broker
 * would close its connection, returning its deliveries mid-batch. A
 * process that is frozen as a whole (SIGSTOP) falls silent all the same,
 * which is what lets the broker hand its deliveries to another worker.
 */
#include "mq.h"

#include <netinet/in.h>
#include <pthread.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <amqp.h>
#include <amqp_tcp_socket.h>

#include "fault.h"
#include "log.h"
#include "proc.h"

#define MQ_CHANNEL           1
#define MQ_FRAME_MAX         131072
#define MQ_CONNECT_TIMEOUT_S 5
#define MQ_RPC_TIMEOUT_S     10
/* How often the keeper looks at the connections it keeps alive. */
#define MQ_KEEPER_TICK_MS 500

struct mq_conn {
	pthread_mutex_t mu;         /* held by whoever uses st */
	amqp_connection_state_t st; /* NULL when broken */
	char *url;
	int heartbeat_s;
	bool confirms;     /* confirm.select done on this connection */
	bool blocked;      /* the broker said connection.blocked, not yet unblocked */
	uint64_t next_tag; /* delivery tag of the next publish */
	long long last_io_ms;
	long long last_call_ms; /* last library call that could send: the keeper's clock */
	mq_conn *keep_next;     /* keeper list link, under keep_mu */
	char err[256];
};

static long long now_ms(void)
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

static br_status mq_fail(mq_conn *c, br_status st, const char *what, const char *detail)
{
	snprintf(c->err, sizeof(c->err), "%s: %s", what, detail ? detail : "");
	mq_drop(c);
	return st;
}

/* Describes a failed RPC reply; returns BR_OK for a normal one. */
static br_status mq_check_reply(mq_conn *c, amqp_rpc_reply_t r, const char *what)
{
	char detail[160];
	switch (r.reply_type) {
	case AMQP_RESPONSE_NORMAL:
		c->last_io_ms = now_ms();
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

static br_status mq_declare_locked(mq_conn *c);
static br_status mq_ensure_locked(mq_conn *c);
static void mq_keep(mq_conn *c);
static void mq_unkeep(mq_conn *c);

static br_status mq_connect(mq_conn *c)
{
	char *copy = strdup(c->url);
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
	 * (CONTRACT §3's default included) means the default vhost "/".
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
	struct timeval tv = {MQ_CONNECT_TIMEOUT_S, 0};
	struct timeval rpc = {MQ_RPC_TIMEOUT_S, 0};
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
	amqp_set_rpc_timeout(c->st, &rpc);
	amqp_table_entry_t cap[] = {entry_bool("connection.blocked", true)};
	amqp_table_entry_t props[] = {entry_table("capabilities", cap, 1)};
	amqp_table_t client_props = {1, props};
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
	/*
	 * Every connection makes sure the topology exists: publishers never
	 * publish into a missing queue, consumers never subscribe to one.
	 */
	st = mq_declare_locked(c);
out:
	free(copy);
	if (st != BR_OK && st != BR_NOMEM && st != BR_INVAL)
		st = BR_MQ_CONN;
	return st;
}

br_status mq_open(const char *url, int heartbeat_s, bool lazy, mq_conn **out)
{
	mq_conn *c = calloc(1, sizeof(*c));
	if (!c)
		return BR_NOMEM;
	c->url = strdup(url);
	if (!c->url) {
		free(c);
		return BR_NOMEM;
	}
	c->heartbeat_s = heartbeat_s;
	pthread_mutex_init(&c->mu, NULL);
	br_status st = mq_connect(c);
	c->last_call_ms = now_ms();
	if (st != BR_OK && !(lazy && st == BR_MQ_CONN)) {
		mq_close(c);
		return st;
	}
	if (heartbeat_s > 0)
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
	free(c->url);
	free(c);
}

bool mq_is_open(mq_conn *c)
{
	pthread_mutex_lock(&c->mu);
	bool open = c->st != NULL;
	pthread_mutex_unlock(&c->mu);
	return open;
}

static void mq_unlock(mq_conn *c)
{
	c->last_call_ms = now_ms();
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
	 * An idle connection has not serviced heartbeats, so the broker may
	 * have given up on it: start afresh rather than discover it mid-publish.
	 */
	if (c->st && c->heartbeat_s > 0 && now_ms() - c->last_io_ms > c->heartbeat_s * 1000LL)
		mq_drop(c);
	if (c->st)
		return BR_OK;
	return mq_connect(c);
}

const char *mq_errmsg(const mq_conn *c)
{
	return c->err;
}

static amqp_table_entry_t entry_str(const char *key, const char *val)
{
	amqp_table_entry_t e;
	e.key = amqp_cstring_bytes(key);
	e.value.kind = AMQP_FIELD_KIND_UTF8;
	e.value.value.bytes = amqp_cstring_bytes(val);
	return e;
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

/*
 * Notes connection.blocked / connection.unblocked (channel 0); returns true
 * when f was one of them.
 */
static bool mq_note_blocked(mq_conn *c, const amqp_frame_t *f)
{
	if (f->frame_type != AMQP_FRAME_METHOD || f->channel != 0)
		return false;
	if (f->payload.method.id == AMQP_CONNECTION_BLOCKED_METHOD) {
		const amqp_connection_blocked_t *m = f->payload.method.decoded;
		if (!c->blocked)
			LOG_WARN("broker blocks publishing on this connection: %.*s",
			         (int)m->reason.len, (const char *)m->reason.bytes);
		c->blocked = true;
		return true;
	}
	if (f->payload.method.id == AMQP_CONNECTION_UNBLOCKED_METHOD) {
		if (c->blocked)
			LOG_INFO("broker unblocked publishing on this connection");
		c->blocked = false;
		return true;
	}
	return false;
}

/*
 * Reads, without waiting, whatever the broker sent: blocked / unblocked
 * notifications, a close, confirms of a batch given up on (ignored).
 */
static br_status mq_poll_locked(mq_conn *c)
{
	if (!c->st)
		return BR_MQ_CONN;
	for (;;) {
		amqp_frame_t f;
		struct timeval tv = {0, 0};
		amqp_maybe_release_buffers(c->st);
		int rc = amqp_simple_wait_frame_noblock(c->st, &f, &tv);
		if (rc == AMQP_STATUS_TIMEOUT)
			return BR_OK;
		if (rc != AMQP_STATUS_OK)
			return mq_fail(c, BR_MQ_CONN, "poll", amqp_error_string2(rc));
		c->last_io_ms = now_ms();
		if (mq_note_blocked(c, &f) || f.frame_type != AMQP_FRAME_METHOD)
			continue;
		if (f.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD)
			return mq_fail(c, BR_MQ_CONN, "poll", "connection closed by broker");
		if (f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD)
			return mq_fail(c, BR_MQ_CONN, "poll", "channel closed by broker");
	}
}

/* Marks the outcome of tags up to tag (or just tag) in a batch's states. */
static void mq_mark(unsigned char *state, uint64_t first, size_t n, uint64_t tag, bool multiple,
                    unsigned char value)
{
	for (size_t i = 0; i < n; i++) {
		uint64_t t = first + i;
		if ((t == tag || (multiple && t < tag)) && state[i] == 0)
			state[i] = value;
	}
}

/* Reads a basic.return's content and marks its message as unroutable. */
static br_status mq_read_return(mq_conn *c, const struct mq_msg *msgs, size_t n,
                                unsigned char *state)
{
	amqp_message_t m;
	amqp_rpc_reply_t r = amqp_read_message(c->st, MQ_CHANNEL, &m, 0);
	if (r.reply_type != AMQP_RESPONSE_NORMAL)
		return mq_check_reply(c, r, "basic.return");
	if (m.properties._flags & AMQP_BASIC_MESSAGE_ID_FLAG) {
		amqp_bytes_t id = m.properties.message_id;
		for (size_t i = 0; i < n; i++) {
			if (strlen(msgs[i].message_id) == id.len &&
			    memcmp(msgs[i].message_id, id.bytes, id.len) == 0)
				state[i] = 2;
		}
	}
	amqp_destroy_message(&m);
	return BR_OK;
}

/* Waits for every confirm of a batch; see mq_publish. */
static br_status mq_await_confirms(mq_conn *c, const struct mq_msg *msgs, size_t n, uint64_t first,
                                   unsigned char *state, int timeout_ms)
{
	long long deadline = now_ms() + timeout_ms;
	size_t done = 0;
	while (done < n) {
		long long left = deadline - now_ms();
		if (left <= 0)
			return mq_fail(c, BR_TIMEOUT, "confirms", "timed out");
		struct timeval tv = {(time_t)(left / 1000), (suseconds_t)(left % 1000) * 1000};
		amqp_frame_t f;
		amqp_maybe_release_buffers(c->st);
		int rc = amqp_simple_wait_frame_noblock(c->st, &f, &tv);
		if (rc == AMQP_STATUS_TIMEOUT)
			return mq_fail(c, BR_TIMEOUT, "confirms", "timed out");
		if (rc != AMQP_STATUS_OK)
			return mq_fail(c, BR_MQ_CONN, "confirms", amqp_error_string2(rc));
		c->last_io_ms = now_ms();
		if (mq_note_blocked(c, &f)) {
			/*
			 * No confirm comes before connection.unblocked: give up
			 * now (the caller leaves the messages to the sweeper)
			 * rather than at the timeout. The connection stays: it
			 * is the one that will hear connection.unblocked, and
			 * the broker's late confirms for this batch are ignored.
			 */
			if (!c->blocked)
				continue;
			snprintf(c->err, sizeof(c->err),
			         "broker blocks publishing (resource alarm)");
			return BR_MQ_BLOCKED;
		}
		if (f.frame_type != AMQP_FRAME_METHOD)
			continue;
		switch (f.payload.method.id) {
		case AMQP_BASIC_ACK_METHOD: {
			const amqp_basic_ack_t *a = f.payload.method.decoded;
			mq_mark(state, first, n, a->delivery_tag, a->multiple, 1);
			break;
		}
		case AMQP_BASIC_NACK_METHOD: {
			const amqp_basic_nack_t *a = f.payload.method.decoded;
			mq_mark(state, first, n, a->delivery_tag, a->multiple, 2);
			break;
		}
		case AMQP_BASIC_RETURN_METHOD: {
			br_status st = mq_read_return(c, msgs, n, state);
			if (st != BR_OK)
				return st;
			continue;
		}
		case AMQP_CHANNEL_CLOSE_METHOD:
			return mq_fail(c, BR_MQ, "publish", "channel closed by broker");
		case AMQP_CONNECTION_CLOSE_METHOD:
			return mq_fail(c, BR_MQ_CONN, "publish", "connection closed by broker");
		default:
			continue;
		}
		done = 0;
		for (size_t i = 0; i < n; i++)
			done += state[i] != 0;
	}
	/* A returned message is also acked: its return marked it 2 first. */
	for (size_t i = 0; i < n; i++) {
		if (state[i] != 1) {
			snprintf(c->err, sizeof(c->err), "broker refused or could not route %s",
			         msgs[i].message_id);
			return BR_MQ_NACK;
		}
	}
	return BR_OK;
}

/* Sets TCP_CORK on fd; a failure only costs the coalescing. */
static void mq_cork(int fd, bool on)
{
	int v = on;
	if (fd >= 0)
		(void)setsockopt(fd, IPPROTO_TCP, TCP_CORK, &v, sizeof(v));
}

static br_status mq_publish_locked(mq_conn *c, const char *exchange, const char *routing_key,
                                   const struct mq_msg *msgs, size_t n, int timeout_ms)
{
	if (!c->st)
		return BR_MQ_CONN;
	if (n == 0)
		return BR_OK;
	br_status st;
	if (c->blocked && (st = mq_poll_locked(c)) != BR_OK)
		return st;
	if (c->blocked) {
		snprintf(c->err, sizeof(c->err), "broker blocks publishing (resource alarm)");
		return BR_MQ_BLOCKED;
	}
	if (!c->confirms) {
		amqp_confirm_select(c->st, MQ_CHANNEL);
		if ((st = mq_check_reply(c, amqp_get_rpc_reply(c->st), "confirm.select")))
			return st;
		c->confirms = true;
		c->next_tag = 1;
	}
	unsigned char *state = calloc(n, 1);
	if (!state)
		return BR_NOMEM;
	uint64_t first = c->next_tag;
	amqp_basic_properties_t props;
	memset(&props, 0, sizeof(props));
	props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
	               AMQP_BASIC_MESSAGE_ID_FLAG;
	props.content_type = amqp_cstring_bytes("application/json");
	props.delivery_mode = AMQP_DELIVERY_PERSISTENT;
	/*
	 * rabbitmq-c pushes every basic.publish out as its own TCP segment; the
	 * broker would read the batch one message at a time. Corked, the
	 * kernel holds the frames until the last is written and the broker
	 * reads them together. Uncorking sends what is held.
	 */
	int fd = amqp_get_sockfd(c->st);
	mq_cork(fd, true);
	for (size_t i = 0; i < n; i++) {
		props.message_id = amqp_cstring_bytes(msgs[i].message_id);
		amqp_bytes_t body = {msgs[i].len, (void *)(uintptr_t)msgs[i].body};
		int rc = amqp_basic_publish(c->st, MQ_CHANNEL, amqp_cstring_bytes(exchange),
		                            amqp_cstring_bytes(routing_key), 1, 0, &props, body);
		if (rc != AMQP_STATUS_OK) {
			mq_cork(fd, false);
			free(state);
			return mq_fail(c, BR_MQ_CONN, "publish", amqp_error_string2(rc));
		}
		c->next_tag++;
	}
	mq_cork(fd, false);
	FAULT_POINT("publish_before_confirm");
	st = mq_await_confirms(c, msgs, n, first, state, timeout_ms);
	free(state);
	return st;
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
			c->last_io_ms = now_ms();
			return BR_TIMEOUT;
		}
		if (r.library_error == AMQP_STATUS_UNEXPECTED_STATE)
			return mq_other_frame(c);
	}
	if (r.reply_type != AMQP_RESPONSE_NORMAL) {
		(void)mq_check_reply(c, r, "consume");
		return BR_MQ_CONN;
	}
	c->last_io_ms = now_ms();

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

br_status mq_publish(mq_conn *c, const char *exchange, const char *routing_key,
                     const struct mq_msg *msgs, size_t n, int timeout_ms)
{
	pthread_mutex_lock(&c->mu);
	br_status st = mq_publish_locked(c, exchange, routing_key, msgs, n, timeout_ms);
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

br_status mq_poll(mq_conn *c)
{
	pthread_mutex_lock(&c->mu);
	br_status st = mq_poll_locked(c);
	mq_unlock(c);
	return st;
}

bool mq_is_blocked(mq_conn *c)
{
	pthread_mutex_lock(&c->mu);
	bool blocked = c->st && c->blocked;
	pthread_mutex_unlock(&c->mu);
	return blocked;
}

/*
 * ---- the keeper ----
 *
 * One thread per process, running while any connection with heartbeats
 * is open: every MQ_KEEPER_TICK_MS it sends a heartbeat frame on each
 * connection that made no library call for half its heartbeat interval
 * and whose owner is not inside a call right now (trylock: an owner inside
 * a call is either waiting in rabbitmq-c, which sends heartbeats itself,
 * or about to return). RabbitMQ declares a connection dead after about
 * two intervals without a byte from it, so a busy owner never gets there.
 * keep_mu guards the list; a connection's own mutex is only ever tried
 * under it, so the two cannot deadlock.
 */
static pthread_mutex_t keep_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t keep_cv;
static pthread_once_t keep_once = PTHREAD_ONCE_INIT;
static mq_conn *keep_list;
static bool keep_running;

static void mq_keep_beat(mq_conn *c, long long now)
{
	if (pthread_mutex_trylock(&c->mu) != 0)
		return;
	if (c->st && now - c->last_call_ms >= c->heartbeat_s * 500LL) {
		amqp_frame_t hb;
		memset(&hb, 0, sizeof(hb));
		hb.frame_type = AMQP_FRAME_HEARTBEAT;
		hb.channel = 0;
		int rc = amqp_send_frame(c->st, &hb);
		if (rc != AMQP_STATUS_OK)
			(void)mq_fail(c, BR_MQ_CONN, "heartbeat", amqp_error_string2(rc));
		c->last_call_ms = now;
	}
	pthread_mutex_unlock(&c->mu);
}

static void *mq_keeper(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&keep_mu);
	while (keep_list) {
		long long now = now_ms();
		for (mq_conn *c = keep_list; c; c = c->keep_next)
			mq_keep_beat(c, now);
		struct timespec deadline = proc_deadline(MQ_KEEPER_TICK_MS);
		pthread_cond_timedwait(&keep_cv, &keep_mu, &deadline);
	}
	keep_running = false;
	pthread_mutex_unlock(&keep_mu);
	return NULL;
}

static void mq_keep_init(void)
{
	proc_cond_init(&keep_cv);
}

static void mq_keep(mq_conn *c)
{
	pthread_once(&keep_once, mq_keep_init);
	pthread_mutex_lock(&keep_mu);
	c->keep_next = keep_list;
	keep_list = c;
	if (!keep_running) {
		pthread_t t;
		pthread_attr_t attr;
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		keep_running = pthread_create(&t, &attr, mq_keeper, NULL) == 0;
		pthread_attr_destroy(&attr);
		if (!keep_running)
			LOG_WARN("no AMQP keeper thread: idle connections rely on their owners");
	}
	pthread_mutex_unlock(&keep_mu);
}

static void mq_unkeep(mq_conn *c)
{
	pthread_mutex_lock(&keep_mu);
	for (mq_conn **p = &keep_list; *p; p = &(*p)->keep_next) {
		if (*p == c) {
			*p = c->keep_next;
			break;
		}
	}
	pthread_cond_signal(&keep_cv);
	pthread_mutex_unlock(&keep_mu);
}
