/*
 * mq_internal.h - what the files of the mq module share (mq.c: connections
 * and consuming; mq_publish.c: confirmed publishing and blocked
 * notifications; mq_keeper.c: the heartbeat keeper). Private to them:
 * nothing else includes it, and mq_conn stays opaque to the rest (mq.h).
 */
#ifndef BULKREG_MQ_INTERNAL_H
#define BULKREG_MQ_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <amqp.h>

#include "mq.h"

#define MQ_CHANNEL   1
#define MQ_FRAME_MAX 131072
/*
 * A node that accepts TCP but never answers (frozen) costs each RPC this
 * much before the connection gives it up and moves to the next node.
 */
#define MQ_RPC_TIMEOUT_MS 4000

/* Thread-safety: see mq.c; `mu` is held by whoever uses st. */
struct mq_conn {
	pthread_mutex_t mu;         /* held by whoever uses st */
	amqp_connection_state_t st; /* NULL when broken */
	struct mq_nodes nodes;
	int cur;       /* index of the node in use, or to try first */
	bool lost;     /* the connection to nodes.url[cur] failed: start at the next one */
	bool declares; /* no topology check on connect (mq_opts) */
	int heartbeat_s;
	int rpc_timeout_ms;
	char name[96];     /* connection_name client property */
	bool confirms;     /* confirm.select done on this connection */
	bool blocked;      /* the broker said connection.blocked, not yet unblocked */
	uint64_t next_tag; /* delivery tag of the next publish */
	long long last_io_ms;
	long long last_call_ms; /* last library call that could send: the keeper's clock */
	mq_conn *keep_next;     /* keeper list link, under keep_mu */
	char err[256];
};

/* The monotonic clock in ms. */
long long mq_now_ms(void);

/* Notes the error in c->err, drops the connection, returns st. */
br_status mq_fail(mq_conn *c, br_status st, const char *what, const char *detail);

/* Describes a failed RPC reply (dropping the connection); BR_OK for a normal one. */
br_status mq_check_reply(mq_conn *c, amqp_rpc_reply_t r, const char *what);

/* Releases c->mu, noting the call for the keeper. */
void mq_unlock(mq_conn *c);

/*
 * Notes connection.blocked / connection.unblocked (channel 0); returns true
 * when f was one of them. Under c->mu.
 */
bool mq_note_blocked(mq_conn *c, const amqp_frame_t *f);

/* Adds c to / removes c from the keeper's connections (mq_keeper.c). */
void mq_keep(mq_conn *c);
void mq_unkeep(mq_conn *c);

#endif
