/*
 * mq_publish.c - confirmed publishing and the broker's blocked
 * notifications (see mq.h, mq_publish).
 *
 * rabbitmq-c 0.11 has no amqp_publisher_confirm_wait, so confirms are read
 * here: after confirm.select the broker numbers our publishes 1, 2, ... and
 * answers basic.ack / basic.nack (possibly with multiple) and basic.return
 * for unroutable mandatory messages, which we read as frames.
 *
 * Thread-safety: as mq.c; every function here runs under the connection's
 * mutex.
 */
#include "mq.h"
#include "mq_internal.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "fault.h"
#include "log.h"

/*
 * Notes connection.blocked / connection.unblocked (channel 0); returns true
 * when f was one of them.
 */
bool mq_note_blocked(mq_conn *c, const amqp_frame_t *f)
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
		c->last_io_ms = mq_now_ms();
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
	long long deadline = mq_now_ms() + timeout_ms;
	size_t done = 0;
	while (done < n) {
		long long left = deadline - mq_now_ms();
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
		c->last_io_ms = mq_now_ms();
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

/* ---- public entry points: each holds the connection's mutex ---- */

br_status mq_publish(mq_conn *c, const char *exchange, const char *routing_key,
                     const struct mq_msg *msgs, size_t n, int timeout_ms)
{
	pthread_mutex_lock(&c->mu);
	br_status st = mq_publish_locked(c, exchange, routing_key, msgs, n, timeout_ms);
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
